#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A lost answer makes the client retransmit its confirmable POST, and libcoap
# 4.3.1 hands it to the server again: the same request must get the same
# certificate (one index line), and in delay mode the same 5.03 (not counted).
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }
RELAY=$HERE/lossy-relay.py

# relay_post DROP PATH CSR [coap-client args...]: POST through the lossy relay;
# RELAY_DELAY=S holds the answers back S seconds instead of losing them.
relay_post() {
  local drop=$1 path=$2 csr=$3; shift 3
  local rport rpid
  rport=$(estc__server_free_port 127.0.0.1)
  python3 "$RELAY" "$rport" "$ESTC_SERVER_PORT" "$drop" 60 "${RELAY_DELAY:-0}" >"$T/relay.out" 2>&1 &
  rpid=$!
  for _ in $(seq 1 50); do grep -q ready "$T/relay.out" && break; sleep 0.1; done
  rm -f "$T/out"
  coap-client-openssl -v 7 -B 30 -C "$ESTC_SERVER_CA" -c "$T/dev.crt" -j "$T/dev.key" \
    -m post -t 286 -f "$csr" -o "$T/out" "$@" "coaps://127.0.0.1:$rport$path" >"$T/trace" 2>&1
  kill "$rpid" 2>/dev/null
  wait "$rpid" 2>/dev/null
  TRACE=$T/trace
  CODE=$(grep -oE '^v:1 t:(ACK|CON|NON) c:[2-5]\.[0-9]{2}' "$TRACE" | tail -1 | sed 's/.*c://')
}

estc_server_start --client-ca "$T/mca.crt" || exit 1
new_csr a "/CN=device-1"
before=$(index_lines)
relay_post 1 /est/sen "$T/a.csr" -A 287
expect_code 2.04 "sen whose first answer was lost"
check "the relay dropped an answer" grep -q dropped "$T/relay.out"
check "the client retransmitted" grep -q 'retransmission #1' "$TRACE"
check "the server saw the request twice" grep -q "repeated request" "$ESTC_SERVER_LOG"
check "one certificate issued for the retransmitted request" test "$(index_lines)" -eq $((before + 1))
openssl x509 -inform DER -in "$T/out" -out "$T/a.pem" 2>/dev/null
check "the answer verifies" verifies "$T/a.pem"
check "the answer is the indexed certificate" grep -q \
  "$(openssl x509 -in "$T/a.pem" -noout -serial | cut -d= -f2)" "$ESTC_SERVER_STATE/state/index.txt"
new_csr g "/CN=device-g"
before=$(index_lines)
relay_post 1 /est/skg "$T/g.csr"
expect_code 2.04 "skg whose first answer was lost"
check "one key and certificate for the retransmitted skg" test "$(index_lines)" -eq $((before + 1))
estc_server_stop
check "server stopped cleanly" test "${ESTC_SERVER_STATUS:-1}" -eq 0

# A late first answer arrives after the answer to the retransmission, both in
# 64-byte blocks: they must carry the same ETag, or the client starts over.
estc_server_start --client-ca "$T/mca.crt" --block-size 64 || exit 1
new_csr l "/CN=device-late"
before=$(index_lines)
RELAY_DELAY=3.2 relay_post 2 /est/sen "$T/l.csr" -A 287
expect_code 2.04 "sen whose first answer came late, block-wise"
check "the relay held an answer back and released it" grep -q released "$T/relay.out"
check "the client did not start over" bash -c "! grep -q 'Data body updated' '$TRACE'"
openssl x509 -inform DER -in "$T/out" -out "$T/l.pem" 2>/dev/null
check "the block-wise answer verifies" verifies "$T/l.pem"
check "one certificate for the late and the repeated answer" test "$(index_lines)" -eq $((before + 1))
stop_server "block-wise server"

estc_server_start --client-ca "$T/mca.crt" --delay-first 1 --max-age 1 || exit 1
new_csr d "/CN=device-d"
relay_post 1 /est/sen "$T/d.csr"
expect_code 5.03 "a retransmitted delayed request is delayed again"
check "the 5.03 was lost once" grep -q dropped "$T/relay.out"
check "and the client retransmitted" grep -q 'retransmission #1' "$TRACE"
coap -m post -t 286 -f "$T/d.csr" /est/sen
expect_code 2.04 "the retransmission did not count: the next request succeeds"
estc_server_stop
check "delay server stopped cleanly" test "${ESTC_SERVER_STATUS:-1}" -eq 0

finish
