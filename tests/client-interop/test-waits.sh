#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Waits longer than a second show one line each at the default verbosity:
# a CoAP request lost on the way (tests/relay/udp-relay.py --drop-app-data
# drops the first ones) is retransmitted by libcoap after 2 to 3 s, and
# every retransmission names the request, the server and the wait; -q
# silences them and -v shows them too. (The 5.03 + Max-Age wait and the
# daemon's back-off: tests/daemon/test-control.sh and test-errors.sh.)
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/fixtures/relay.sh"
CLEANUPS+=(relay_stop)

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server
RETX='^estc: warning: coap: GET /[^ ]*: no answer from 127\.0\.0\.1 port [0-9]+ after [0-9]+\.[0-9] s, retrying \(CoAP retransmission [0-9]+\)$'

# relayed N [ARGS]: a fresh relay that drops the first N CoAP requests (and
# what ARGS say); RNET addresses the server through it.
relayed() {
  local n=$1
  shift
  relay_stop
  relay_start "$T/relay.out" --server "127.0.0.1:$ESTC_SERVER_PORT" --loss 0 \
    --drop-app-data "$n" --max-seconds 120 "$@" || { fail "relay starts"; return 1; }
  RNET=(--server "coaps://127.0.0.1:$RELAY_PORT" --trust "$ESTC_SERVER_CA")
}

# Two lost requests: two retransmissions, one line each, with waits of
# 2 to 3 s and then 4 to 6 s (RFC 7252 §4.2).
relayed 2
run_estc cacerts "${RNET[@]}"
expect_ok "cacerts through two lost requests"
cp "$T/stdout" "$T/ca.pem"
check "stdout holds the PEM certificates only (no CoAP dump)" \
  bash -c "! grep -vqE '^(-----(BEGIN|END) CERTIFICATE-----|[A-Za-z0-9+/=]+)\$' '$T/stdout'"
check "two lines, one per retransmission" test "$(grep -cE "$RETX" "$T/stderr")" -eq 2
check "the first names retransmission 1" grep -qE 'retrying \(CoAP retransmission 1\)$' "$T/stderr"
check "the second names retransmission 2" grep -qE 'retrying \(CoAP retransmission 2\)$' "$T/stderr"
check "each names a wait over a second" bash -c \
  "grep -oE 'after [0-9]+\.[0-9] s' '$T/stderr' | awk '{ if (\$2 <= 1.0) bad = 1 } END { exit bad }'"
check "no other line but the stored CA" test "$(grep -cvE "$RETX|^estc: cacerts: CA certificate stored at " "$T/stderr")" -eq 0
check "the CA certificates arrived" grep -q 'BEGIN CERTIFICATE' "$T/ca.pem"

relayed 1
run_estc cacerts "${RNET[@]}" --out "$T/ca.pem" -q
expect_ok "cacerts -q through a lost request"
check "-q: nothing on stderr" test ! -s "$T/stderr"

relayed 1
run_estc cacerts "${RNET[@]}" --out "$T/ca.pem" -v
expect_ok "cacerts -v through a lost request"
check "-v: the retransmission line too" grep -qE 'no answer from .* retrying \(CoAP retransmission 1\)$' "$T/stderr"

# Two lost ClientHellos: OpenSSL sends the flight again after 1 s and then
# 2 s; each retransmission gets its line, naming the wait that ran out.
HSRETX='^estc: warning: coap: DTLS handshake: no answer from 127\.0\.0\.1 port [0-9]+ after [0-9]+\.[0-9] s, retrying \(DTLS retransmission [0-9]+\)$'
relayed 0 --drop-handshake 2
run_estc cacerts "${RNET[@]}" --out "$T/ca.pem"
expect_ok "cacerts through two lost ClientHellos"
check "two lines, one per DTLS retransmission" test "$(grep -cE "$HSRETX" "$T/stderr")" -eq 2
check "the first after 1 s, DTLS retransmission 1" \
  grep -qE 'after 1\.0 s, retrying \(DTLS retransmission 1\)$' "$T/stderr"
check "the second after 2 s, DTLS retransmission 2" \
  grep -qE 'after 2\.0 s, retrying \(DTLS retransmission 2\)$' "$T/stderr"
check "no CoAP retransmission line" bash -c "! grep -q 'CoAP retransmission' '$T/stderr'"

# No loss: no such line.
relayed 0
run_estc cacerts "${RNET[@]}" --out "$T/ca.pem"
expect_ok "cacerts without loss"
check "no loss: no retransmission line" bash -c "! grep -q retransmission '$T/stderr'"
finish
