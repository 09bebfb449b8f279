#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server options that change answers: delay mode (5.03 + Max-Age), the
# server's own block size, configured CSR attributes, another path root and
# the tls-unique proof-of-possession check.
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }

# --- delay mode (04 / 06) -----------------------------------------------------------
estc_server_start --client-ca "$T/mca.crt" --delay-first 1 --max-age 7 || exit 1
new_csr a "/CN=device-1"
before=$(index_lines)
coap -b 64 -m post -t 286 -f "$T/a.csr" /est/sen
expect_code 5.03 "first sen in delay mode"
check "5.03 carries Max-Age 7" grep -qE 'c:5\.03.*Max-Age:7' "$TRACE"
check "a delayed request issues nothing" test "$(index_lines)" -eq "$before"
coap -b 64 -m post -t 286 -f "$T/a.csr" /est/sen
expect_code 2.04 "the same sen again after the delay"
openssl pkcs7 -inform DER -in "$T/out" -print_certs -out "$T/a.pem" 2>/dev/null
check "delayed enrollment verifies" verifies "$T/a.pem"
coap /est/crts
expect_code 2.05 "crts is never delayed"
openssl x509 -in "$T/a.pem" -out "$T/a.crt"
new_csr r "/CN=device-1"
CERT=$T/a.crt KEY=$T/a.key coap -m post -t 286 -f "$T/r.csr" /est/sren
expect_code 5.03 "first sren of the new identity is delayed"
CERT=$T/a.crt KEY=$T/a.key coap -m post -t 286 -f "$T/r.csr" /est/sren
expect_code 2.04 "sren after the delay"
estc_server_stop
check "delay-mode server stopped cleanly" test "${ESTC_SERVER_STATUS:-1}" -eq 0

# --- server block size 64, CSR attributes from a file, another root -------------------
estc_server_start --client-ca "$T/mca.crt" --block-size 64 --root /.well-known/est \
  --csr-attrs "$VECTORS/att-response-285.der" || exit 1
coap /.well-known/est/crts
expect_code 2.05 "crts under /.well-known/est"
check "server chose 64-byte blocks" grep -q 'Block2:0/M/64' "$TRACE"
check "crts assembled from blocks parses" openssl pkcs7 -inform DER -in "$T/out" -noout
coap -b 256 /.well-known/est/crts
check "client asking for 256 still gets 64" grep -q 'Block2:1/M/64' "$TRACE"
coap -b 32 /.well-known/est/crts
check "client asking for 32 gets 32" grep -q 'Block2:1/M/32' "$TRACE"
coap /est/crts
expect_code 4.04 "the default root is gone"
coap '/.well-known/core?rt=ace.est.crts'
check "discovery names the new root" test "$(cat "$T/out")" = \
  '</.well-known/est/crts>;rt="ace.est.crts";ct="281 287"'
coap /.well-known/est/att
expect_code 2.05 "att with configured attributes"
check "att is the RFC 9148 A.4 payload" cmp -s "$T/out" "$VECTORS/att-response-285.der"
new_csr b "/CN=device-b"
coap -m post -t 286 -f "$T/b.csr" /.well-known/est/sen
expect_code 2.04 "sen with a 64-byte block answer"
check "sen answer came in blocks" grep -q 'Block2:1/M/64' "$TRACE"
openssl pkcs7 -inform DER -in "$T/out" -print_certs -out "$T/b.pem" 2>/dev/null
check "block-wise sen answer verifies" verifies "$T/b.pem"
new_csr g "/CN=device-g"
coap -m post -t 286 -f "$T/g.csr" /.well-known/est/skg
expect_code 2.04 "skg with a 64-byte block answer"
check "skg answer is complete CBOR" python3 -c "
import sys; d=open(sys.argv[1],'rb').read(); assert d[0]==0x84 and len(d)>300" "$T/out"
stop_server "block-size server"

# --- proof of possession ---------------------------------------------------------------
estc_server_start --client-ca "$T/mca.crt" --pop || exit 1
coap -m post -t 286 -f "$VECTORS/sen-request-286.der" /est/sen
expect_code 4.00 "pop: a challengePassword that is not tls-unique"
check "pop diagnostic" test "$(diag)" = "challengePassword is not the tls-unique value"
coap -m post -t 286 -f "$T/b.csr" /est/sen
expect_code 4.00 "pop: no challengePassword"
coap /.well-known/core
expect_code 2.05 "still serving"
if [ -n "${ESTC_POP_CLIENT:-}" ]; then
  if "$ESTC_POP_CLIENT" 127.0.0.1 "$ESTC_SERVER_PORT" "$ESTC_SERVER_CA" "$T/dev.crt" \
    "$T/dev.key" >"$T/pop.out" 2>&1; then
    pass "pop: a CSR bound to its own session is accepted, elsewhere refused"
  else
    fail "pop client"
  fi
  sed 's/^/     | /' "$T/pop.out"
else
  fail "ESTC_POP_CLIENT is not set"
fi
stop_server "pop server"

# --- an arbitrary label below the root (RFC 7030 §3.2.2) -------------------------------
estc_server_start --client-ca "$T/mca.crt" --root /est/factory-7/ || exit 1
coap '/.well-known/core?rt=ace.est.sen'
check "discovery names the labelled path" test "$(cat "$T/out")" = \
  '</est/factory-7/sen>;rt="ace.est.sen";ct="281 287"'
coap -m post -t 286 -f "$T/b.csr" /est/factory-7/sen
expect_code 2.04 "sen below the label"
stop_server "labelled server"

finish
