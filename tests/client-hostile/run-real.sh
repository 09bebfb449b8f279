#!/bin/bash
# Runs test-real against estc-server on loopback (real DTLS, libcoap).
# usage: run-real.sh TEST_REAL identity|bomb|lossy
#   identity  the server's certificate does not name the host; an untrusted
#             server chain; positive controls
#   bomb      the server sends a /crts answer bigger than the client's
#             256 KiB response cap (block-wise), via --extra-ca
#   lossy     cacerts + enroll through tests/relay/udp-relay.py dropping
#             20 % of the datagrams each way (seed: HOSTILE_SEED, default 1)
set -u
prog=$1
mode=$2
: "${ESTC_SOURCE_ROOT:?}"
. "$ESTC_SOURCE_ROOT/tests/fixtures/estc-server.sh"

tmp=$(mktemp -d) || exit 1
relay_pid=
cleanup() {
  if [ -n "$relay_pid" ]; then
    kill -TERM "$relay_pid" 2>/dev/null
    wait "$relay_pid" 2>/dev/null
  fi
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

# Device (IDevID) credentials from a CA of their own, which the server
# accepts with --client-ca; a second CA that signed nothing the server has.
ossl() { openssl "$@" 2>>"$tmp/openssl.log" >/dev/null || { cat "$tmp/openssl.log" >&2; exit 1; }; }
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
# shellcheck disable=SC2086
ossl req -x509 $ec -keyout "$tmp/idevid-ca.key" -out "$tmp/idevid-ca.pem" -days 2 \
  -subj "/CN=Hostile IDevID CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign"
# shellcheck disable=SC2086
ossl req $ec -keyout "$tmp/device.key" -out "$tmp/device.csr" -subj "/CN=hostile-idevid"
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$tmp/device.ext"
ossl x509 -req -in "$tmp/device.csr" -CA "$tmp/idevid-ca.pem" -CAkey "$tmp/idevid-ca.key" \
  -CAcreateserial -days 2 -extfile "$tmp/device.ext" -out "$tmp/device.pem"
chmod 600 "$tmp"/*.key
export HOSTILE_CERT=$tmp/device.pem HOSTILE_KEY=$tmp/device.key
export HOSTILE_OTHER_CA=$tmp/idevid-ca.pem
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-280}

case $mode in
  identity)
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
    python3 "$ESTC_SOURCE_ROOT/tests/relay/udp-relay.py" --server "127.0.0.1:$ESTC_SERVER_PORT" \
      --loss 0.2 --seed "${HOSTILE_SEED:-1}" --max-seconds 270 --stats "$tmp/relay.json" \
      >"$tmp/relay.out" &
    relay_pid=$!
    for _ in $(seq 100); do
      grep -q '^listening' "$tmp/relay.out" 2>/dev/null && break
      sleep 0.05
    done
    port=$(sed -n 's/^listening //p' "$tmp/relay.out")
    [ -n "$port" ] || { echo "relay did not start" >&2; exit 1; }
    export HOSTILE_RELAY_URI=coaps://127.0.0.1:$port
    ;;
  *)
    echo "usage: $0 TEST_REAL identity|bomb|lossy" >&2
    exit 2
    ;;
esac

"$prog" "$mode"
rc=$?
if [ "$mode" = lossy ]; then
  kill -USR1 "$relay_pid" 2>/dev/null
  sleep 0.3
  echo "relay: $(cat "$tmp/relay.json")"
fi
if ! kill -0 "$ESTC_SERVER_PID" 2>/dev/null; then
  echo "estc-server died; log:" >&2
  cat "$ESTC_SERVER_LOG" >&2
  rc=1
fi
[ "$rc" = 0 ] || { echo "--- server log (tail)"; tail -20 "$ESTC_SERVER_LOG"; } >&2
exit "$rc"
