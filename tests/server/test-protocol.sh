#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server against libcoap's coap-client-openssl: discovery, crts, sen,
# sren, skg, skc, att, Block1/Block2 with 64-byte blocks, retransmission
# safety, every error answer, and a clean SIGTERM shutdown.
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }
estc_server_start --client-ca "$T/mca.crt" --validity 600 || exit 1

# --- start-up ---------------------------------------------------------------
check "CA certificate path printed at start" grep -q "CA certificate: $ESTC_SERVER_CA" \
  "$ESTC_SERVER_STATE/server.out"
check "CA key is 0600" test "$(stat -c %a "$ESTC_SERVER_STATE/state/ca.key")" = 600
check "server key is 0600" test "$(stat -c %a "$ESTC_SERVER_STATE/state/server.key")" = 600
check "server certificate names localhost" grep -q "DNS:localhost, IP Address:127.0.0.1" \
  <(openssl x509 -in "$ESTC_SERVER_STATE/state/server.crt" -noout -ext subjectAltName)
check "server certificate chains to the CA" verifies "$ESTC_SERVER_STATE/state/server.crt"

# --- discovery (dtls_1) -------------------------------------------------------
coap '/.well-known/core?rt=ace.est*'
expect_code 2.05 "discovery rt=ace.est*"
check "discovery is link-format (CF 40)" test "$RCF" = application/link-format
check "discovery equals RFC 9148 4.1" cmp -s "$T/out" "$VECTORS/discovery.txt"
coap '/.well-known/core?rt=ace.est.sen'
check "discovery filter rt=ace.est.sen" test "$(cat "$T/out")" = \
  '</est/sen>;rt="ace.est.sen";ct="281 287"'
coap '/.well-known/core?rt=nothing'
expect_code 4.04 "discovery with no match"

# --- crts (01/02) ---------------------------------------------------------------
coap -A 281 /est/crts
expect_code 2.05 "crts Accept 281"
check "crts CF 281" test "$RCF" = 281
cp "$T/out" "$T/crts.p7"
openssl pkcs7 -inform DER -in "$T/crts.p7" -print_certs -out "$T/crts.pem" 2>/dev/null
check "crts 281 holds the CA certificate" test "$(fingerprint "$T/crts.pem" PEM)" = \
  "$(fingerprint "$ESTC_SERVER_CA" PEM)"
coap /est/crts
check "crts without Accept is 281" test "$RCF" = 281
coap -A 287 /est/crts
expect_code 2.05 "crts Accept 287"
check "crts CF 287" test "$RCF" = 287
check "crts 287 is the CA certificate (DER)" test "$(fingerprint "$T/out" DER)" = \
  "$(fingerprint "$ESTC_SERVER_CA" PEM)"
coap -b 64 -A 281 /est/crts
expect_code 2.05 "crts with Block2 SZX=2"
check "crts came in 64-byte blocks" grep -q 'Block2:1/M/64' "$TRACE"
check "crts by blocks equals the whole" cmp -s "$T/out" "$T/crts.p7"

# --- sen (03) -------------------------------------------------------------------
new_csr a "/CN=device-1/O=estc test" -addext subjectAltName=DNS:dev1.example,IP:192.0.2.1
before=$(index_lines)
coap -m post -t 286 -f "$T/a.csr" /est/sen
expect_code 2.04 "sen with an openssl req CSR"
check "sen CF 281" test "$RCF" = 281
openssl pkcs7 -inform DER -in "$T/out" -print_certs -out "$T/a.pem" 2>/dev/null
check "issued certificate verifies (openssl verify)" \
  verifies -purpose sslclient "$T/a.pem"
check "issued certificate keeps the subject" \
  grep -q "subject=CN = device-1, O = estc test" <(openssl x509 -in "$T/a.pem" -noout -subject)
check "issued certificate keeps the SAN" \
  grep -q "DNS:dev1.example, IP Address:192.0.2.1" <(openssl x509 -in "$T/a.pem" -noout -ext subjectAltName)
check "issued certificate holds the CSR key" test "$(openssl x509 -in "$T/a.pem" -noout -pubkey)" = \
  "$(openssl pkey -in "$T/a.key" -pubout)"
check "index grew by one" test "$(index_lines)" -eq $((before + 1))
check "index names the certificate" grep -q "$(openssl x509 -in "$T/a.pem" -noout -serial | cut -d= -f2)" \
  "$ESTC_SERVER_STATE/state/index.txt"
# The client certificate profile, extension by extension, in this order.
check "issued certificate's extensions: CA:FALSE, clientAuth, EC key usage, key identifiers, SAN" \
  test "$(openssl x509 -in "$T/a.pem" -noout -text | sed -n 's/^ *\(X509v3 .*\)/\1/p' | tr -d '\n')" = \
  "X509v3 extensions:X509v3 Basic Constraints: criticalX509v3 Extended Key Usage: X509v3 Key Usage: criticalX509v3 Subject Key Identifier: X509v3 Authority Key Identifier: X509v3 Subject Alternative Name: "
check "issued certificate: CA:FALSE, clientAuth only, digitalSignature + keyAgreement" \
  test "$(openssl x509 -in "$T/a.pem" -noout -ext basicConstraints,extendedKeyUsage,keyUsage | tr -d '\n')" = \
  "X509v3 Basic Constraints: critical    CA:FALSEX509v3 Extended Key Usage:     TLS Web Client AuthenticationX509v3 Key Usage: critical    Digital Signature, Key Agreement"
# subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits (a P-256 point is the last 65 bytes).
ski_want=$(openssl x509 -in "$T/a.pem" -noout -pubkey | openssl pkey -pubin -outform DER | tail -c 65 |
  openssl dgst -sha1 -r | cut -c1-40)
check "subjectKeyIdentifier is SHA-1 of the key bits" test \
  "$(openssl x509 -in "$T/a.pem" -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' :' | tr 'A-F' 'a-f')" = "$ski_want"
check "authorityKeyIdentifier is the CA's subjectKeyIdentifier" test \
  "$(openssl x509 -in "$T/a.pem" -noout -ext authorityKeyIdentifier | tail -1 | tr -d ' :')" = \
  "$(openssl x509 -in "$ESTC_SERVER_CA" -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' :')"

coap -m post -t 286 -A 287 -f "$T/a.csr" /est/sen
expect_code 2.04 "sen repeated (retransmission), Accept 287"
check "sen Accept 287 gives CF 287" test "$RCF" = 287
coap -m post -t 286 -f "$T/a.csr" /est/sen
check "same CSR from the same client gets the same certificate" test \
  "$(openssl pkcs7 -inform DER -in "$T/out" -print_certs 2>/dev/null | openssl x509 -noout -serial)" = \
  "$(openssl x509 -in "$T/a.pem" -noout -serial)"
check "a repeated CSR adds nothing to the index" test "$(index_lines)" -eq $((before + 1))

coap -m post -t 286 -A 287 -f "$VECTORS/sen-request-286.der" /est/sen
expect_code 2.04 "sen with the RFC 9148 A.2 CSR"
check "A.2 subject honoured" grep -q "serialNumber = Wt1234" \
  <(openssl x509 -inform DER -in "$T/out" -noout -subject)
check "A.2 SAN (hardwareModuleName) kept" grep -q "1.3.6.1.5.5.7.8.4" \
  <(openssl x509 -inform DER -in "$T/out" -noout -ext subjectAltName)

new_csr b "/CN=device-b"
coap -b 64 -m post -t 286 -f "$T/b.csr" /est/sen
expect_code 2.04 "sen with Block1 SZX=2"
check "sen request went in 64-byte blocks" grep -q 'Block1:0/M/64' "$TRACE"

# --- sren (05) ------------------------------------------------------------------
openssl x509 -in "$T/a.pem" -out "$T/a.crt"
new_csr r "/CN=device-1/O=estc test" -addext subjectAltName=DNS:dev1.example,IP:192.0.2.1
CERT=$T/a.crt KEY=$T/a.key coap -m post -t 286 -A 287 -f "$T/r.csr" /est/sren
expect_code 2.04 "sren with the issued certificate"
openssl x509 -inform DER -in "$T/out" -out "$T/r.pem" 2>/dev/null
check "sren certificate verifies" verifies "$T/r.pem"
check "sren certificate has a new serial" test "$(openssl x509 -in "$T/r.pem" -noout -serial)" != \
  "$(openssl x509 -in "$T/a.pem" -noout -serial)"
new_csr other "/CN=someone else"
CERT=$T/a.crt KEY=$T/a.key coap -m post -t 286 -f "$T/other.csr" /est/sren
expect_code 4.03 "sren changing the subject"
new_csr nosan "/CN=device-1/O=estc test"
CERT=$T/a.crt KEY=$T/a.key coap -m post -t 286 -f "$T/nosan.csr" /est/sren
expect_code 4.03 "sren dropping the SAN"
coap -m post -t 286 -f "$T/r.csr" /est/sren
expect_code 4.03 "sren with a manufacturer (IDevID) certificate"

# --- skg / skc (07) ---------------------------------------------------------------
# split_multipart FILE: writes FILE.cf1 FILE.p1 FILE.cf2 FILE.p2, fails on bad CBOR
split_multipart() {
  python3 - "$1" <<'PY'
import sys
d = open(sys.argv[1], 'rb').read()
pos = 0
def head():
    global pos
    b = d[pos]; pos += 1
    mt, ai = b >> 5, b & 31
    if ai < 24: return mt, ai
    n = {24: 1, 25: 2, 26: 4, 27: 8}[ai]
    v = int.from_bytes(d[pos:pos + n], 'big'); pos += n
    return mt, v
mt, n = head()
assert mt == 4 and n == 4, "not a 4-element array"
for i in (1, 2):
    mt, cf = head(); assert mt == 0
    mt, ln = head(); assert mt == 2
    open(f"{sys.argv[1]}.cf{i}", "w").write(str(cf))
    open(f"{sys.argv[1]}.p{i}", "wb").write(d[pos:pos + ln]); pos += ln
assert pos == len(d), "trailing bytes"
PY
}
new_csr g "/CN=device-g"
coap -m post -t 286 -f "$T/g.csr" /est/skg
expect_code 2.04 "skg"
check "skg CF 62" test "$RCF" = 62
cp "$T/out" "$T/skg.cbor"
if split_multipart "$T/skg.cbor"; then
  check "skg parts are 284 and 281" test "$(cat "$T/skg.cbor.cf1") $(cat "$T/skg.cbor.cf2")" = "284 281"
  openssl pkcs7 -inform DER -in "$T/skg.cbor.p2" -print_certs -out "$T/skg.pem" 2>/dev/null
  check "skg certificate verifies" verifies "$T/skg.pem"
  check "skg key matches the certificate" test \
    "$(openssl pkey -inform DER -in "$T/skg.cbor.p1" -pubout 2>/dev/null)" = \
    "$(openssl x509 -in "$T/skg.pem" -noout -pubkey)"
  check "skg key is not the CSR key" test \
    "$(openssl pkey -inform DER -in "$T/skg.cbor.p1" -pubout 2>/dev/null)" != \
    "$(openssl pkey -in "$T/g.key" -pubout)"
else
  fail "skg answer is multipart-core CBOR"
fi
coap -m post -t 286 -f "$VECTORS/skg-request-286.der" /est/skc
expect_code 2.04 "skc with the RFC 9148 A.3 CSR"
if split_multipart "$T/out"; then
  check "skc parts are 284 and 287" test "$(cat "$T/out.cf1") $(cat "$T/out.cf2")" = "284 287"
  check "skc key matches the certificate" test \
    "$(openssl pkey -inform DER -in "$T/out.p1" -pubout 2>/dev/null)" = \
    "$(openssl x509 -inform DER -in "$T/out.p2" -noout -pubkey)"
else
  fail "skc answer is multipart-core CBOR"
fi
openssl req -newkey rsa:2048 -nodes -keyout "$T/rsa.key" -outform DER -out "$T/rsa.csr" \
  -subj "/CN=device-rsa" 2>/dev/null
# RSA key generation is slow under valgrind: wait longer (retransmissions are safe).
coap -B 120 -m post -t 286 -f "$T/rsa.csr" /est/skg
expect_code 2.04 "skg with an RSA CSR"
if split_multipart "$T/out"; then
  check "skg generated an RSA 2048 key" grep -q "Private-Key: (2048 bit" \
    <(openssl pkey -inform DER -in "$T/out.p1" -noout -text 2>/dev/null)
  openssl pkcs7 -inform DER -in "$T/out.p2" -print_certs -out "$T/rsa.pem" 2>/dev/null
  check "an RSA key's certificate: digitalSignature + keyEncipherment" grep -q \
    "Digital Signature, Key Encipherment" <(openssl x509 -in "$T/rsa.pem" -noout -ext keyUsage)
else
  fail "RSA skg answer is multipart-core CBOR"
fi
coap -m post -t 286 -A 281 -f "$T/g.csr" /est/skg
expect_code 4.06 "skg with Accept 281"

# --- att (08) -------------------------------------------------------------------
coap /est/att
expect_code 2.05 "att"
check "att CF 285" test "$RCF" = 285
check "att is DER" openssl asn1parse -inform DER -in "$T/out" -noout

# --- errors: the server keeps serving -------------------------------------------------
before=$(index_lines)
coap -m post -t 0 -f "$T/a.csr" /est/sen
expect_code 4.15 "sen with Content-Format 0"
coap -m post -f "$T/a.csr" /est/sen
expect_code 4.15 "sen without Content-Format"
printf 'not a CSR' >"$T/garbage"
coap -m post -t 286 -f "$T/garbage" /est/sen
expect_code 4.00 "sen with a garbage CSR"
check "4.00 carries a short diagnostic" test -n "$(diag)"
# A CSR whose signature is broken: flip a byte near the end.
python3 -c "import sys; d=bytearray(open(sys.argv[1],'rb').read()); d[-5]^=1; open(sys.argv[2],'wb').write(d)" \
  "$T/a.csr" "$T/badsig.csr"
coap -m post -t 286 -f "$T/badsig.csr" /est/sen
expect_code 4.00 "sen with a bad CSR signature"
check "bad signature diagnostic" test "$(diag)" = "CSR signature does not verify"
coap -m post -t 286 -A 62 -f "$T/a.csr" /est/sen
expect_code 4.06 "sen with Accept 62"
coap -A 40 /est/crts
expect_code 4.06 "crts with Accept 40"
coap -A 281 /est/att
expect_code 4.06 "att with Accept 281"
coap -b 50,64 /est/crts
expect_code 4.00 "crts block 50, past the end"
coap /est/nothing
expect_code 4.04 "unknown path"
coap /.well-known/est/crts
expect_code 4.04 "other root"
CERT=none coap -m post -t 286 -f "$T/b.csr" /est/sen
expect_code 4.01 "sen without a client certificate"
CERT=$T/rogue.crt KEY=$T/rogue.key coap -m post -t 286 -f "$T/b.csr" /est/sen
expect_code 4.01 "sen with an untrusted client certificate"
CERT=$T/rogue.crt KEY=$T/rogue.key coap -m post -t 286 -f "$T/b.csr" /est/skg
expect_code 4.01 "skg with an untrusted client certificate"
CERT=none coap /est/crts
expect_code 2.05 "crts needs no client certificate"
check "errors issued nothing" test "$(index_lines)" -eq "$before"
# Datagrams that are not DTLS, and DTLS-looking records with garbage inside.
python3 - "$ESTC_SERVER_PORT" <<'PY'
import os, random, socket, sys
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    head = random.choice([b"", b"\x16\xfe\xfd", b"\x17\xfe\xfd", b"\x15\xfe\xff", b"\x40\x01"])
    s.sendto(head + os.urandom(random.randint(0, 1400)), ("127.0.0.1", int(sys.argv[1])))
PY
coap '/.well-known/core'
expect_code 2.05 "still serving after the bad requests and garbage datagrams"

# --- clean shutdown ------------------------------------------------------------------
estc_server_stop_keep_state
check "SIGTERM: exit status 0" test "${ESTC_SERVER_STATUS:-1}" -eq 0
check "no sanitizer or leak report" bash -c "! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' '$ESTC_SERVER_LOG'"
check "no key material in the log" bash -c "! grep -q 'PRIVATE' '$ESTC_SERVER_LOG'"

finish
