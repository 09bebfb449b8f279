#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs test-real against estc-server on loopback (real DTLS, libcoap).
# usage: run-real.sh TEST_REAL identity|bomb|lossy|recheck|sessions|credentials
#   identity  the server's certificate does not name the host; an untrusted
#             server chain; positive controls
#   bomb      the server sends a /crts answer bigger than the client's
#             256 KiB response cap (block-wise), via --extra-ca
#   lossy     cacerts + enroll through tests/relay/udp-relay.py dropping
#             20 % of the datagrams each way (seed: HOSTILE_SEED, default 1)
#   recheck   a server whose DTLS chain leads to one CA (the client's
#             implicit anchor) while its /crts answer is another CA
#   sessions  cacerts + enroll, then reenroll, through the relay at 0 % loss,
#             which counts the round trips and sessions
set -u
prog=$1
mode=$2
: "${ESTC_SOURCE_ROOT:?}"
. "$ESTC_SOURCE_ROOT/tests/fixtures/estc-server.sh"
. "$ESTC_SOURCE_ROOT/tests/fixtures/pki.sh"
. "$ESTC_SOURCE_ROOT/tests/fixtures/relay.sh"

tmp=$(mktemp -d) || exit 1
cleanup() {
  relay_stop
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

# Device (IDevID) credentials from a CA of their own, which the server
# accepts with --client-ca; a second CA that signed nothing the server has.
pki_idevid "$tmp" "/CN=Hostile IDevID CA" "/CN=hostile-idevid" || exit 1
export HOSTILE_CERT=$tmp/device.pem HOSTILE_KEY=$tmp/device.key
export HOSTILE_OTHER_CA=$tmp/idevid-ca.pem
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-280}

case $mode in
  identity | credentials)
    estc_server_start --client-ca "$tmp/idevid-ca.pem" || exit 1
    ;;
  bomb)
    # 700 copies of a CA certificate: a 2.05 body of about 350 KB in
    # 1024-byte blocks, over the client's 256 KiB cap.
    for _ in $(seq 700); do cat "$tmp/idevid-ca.pem"; done >"$tmp/bomb.pem"
    estc_server_start --client-ca "$tmp/idevid-ca.pem" --extra-ca "$tmp/bomb.pem" \
      --block-size 1024 || exit 1
    export HOSTILE_BOMB_URI=$ESTC_SERVER_URI
    ;;
  lossy)
    estc_server_start --client-ca "$tmp/idevid-ca.pem" || exit 1
    relay_start "$tmp/relay.out" --server "127.0.0.1:$ESTC_SERVER_PORT" \
      --loss 0.2 --seed "${HOSTILE_SEED:-1}" --max-seconds 270 --stats "$tmp/relay.json" || exit 1
    export HOSTILE_RELAY_URI=coaps://127.0.0.1:$RELAY_PORT
    ;;
  recheck)
    # The server's own certificate from CA X; /crts and issuing by CA Y.
    pki_ca "$tmp/x.key" "$tmp/x.pem" "/CN=Hostile Server CA X" || exit 1
    pki_issue "$tmp/x.key" "$tmp/x.pem" "$tmp/srv.key" "$tmp/srv.pem" "/CN=localhost" 2 \
      $'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost' || exit 1
    pki_ca "$tmp/y.key" "$tmp/y.pem" "/CN=Hostile Issuing CA Y" || exit 1
    chmod 600 "$tmp/x.key" "$tmp/srv.key" "$tmp/y.key"
    ESTC_SERVER_PROBE_CA=$tmp/x.pem estc_server_start --client-ca "$tmp/idevid-ca.pem" \
      --cert "$tmp/srv.pem" --key "$tmp/srv.key" \
      --ca-cert "$tmp/y.pem" --ca-key "$tmp/y.key" || exit 1
    export HOSTILE_SPLIT_URI=$ESTC_SERVER_URI HOSTILE_SPLIT_ANCHOR=$tmp/x.pem
    ;;
  sessions)
    estc_server_start --client-ca "$tmp/idevid-ca.pem" || exit 1
    relay_start "$tmp/relay.out" --server "127.0.0.1:$ESTC_SERVER_PORT" \
      --loss 0 --max-seconds 270 --stats "$tmp/relay.json" || exit 1
    export HOSTILE_RELAY_URI=coaps://127.0.0.1:$RELAY_PORT
    export HOSTILE_RELAY_PID=$RELAY_PID HOSTILE_RELAY_STATS=$tmp/relay.json
    ;;
  *)
    echo "usage: $0 TEST_REAL identity|bomb|lossy|recheck|sessions" >&2
    exit 2
    ;;
esac

"$prog" "$mode"
rc=$?
if [ "$mode" = lossy ]; then
  kill -USR1 "$RELAY_PID" 2>/dev/null
  sleep 0.3
  echo "relay: $(cat "$tmp/relay.json")"
fi
if ! kill -0 "$ESTC_SERVER_PID" 2>/dev/null; then
  echo "estc-server died; log:" >&2
  cat "$ESTC_SERVER_LOG" >&2
  rc=1
fi
[ "$rc" = 0 ] || estc_server_show_log
exit "$rc"
