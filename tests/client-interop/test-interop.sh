#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The EST-coaps interop cases (dtls_1, 01-08) through the estc command,
# against estc-server on loopback, with results in the file: engine.
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server
mkdir -m 700 "$T/f" "$T/ca"

# dtls_1: DTLS 1.2 with client and server certificates, then discovery.
run_estc discover "${NET[@]}" "${BOOT[@]}"
expect_ok "dtls_1: discover"
check "dtls_1: stdout holds the EST links, one a line" \
  bash -c "grep -qx '<[^>]*/sen>;rt=\"ace.est.sen\"' '$T/stdout' && ! grep -qv '^<' '$T/stdout'"

# 01: GET /crts whole, CF 281; the CA certificates land under --ca-out.
run_estc cacerts "${NET[@]}" "${BOOT[@]}" --accept 281 --ca-out "file:$T/ca/"
expect_ok "01: cacerts (281)"
cp "$T/stdout" "$T/crts.pem"
fp_server=$(openssl x509 -in "$ESTC_SERVER_CA" -noout -fingerprint -sha256)
check "01: stdout holds the server's CA" test "$(openssl x509 -in "$T/crts.pem" -noout -fingerprint -sha256 2>/dev/null)" = "$fp_server"
stored=$(ls "$T/ca"/*.ca.pem 2>/dev/null | head -1)
check "01: CA certificate stored in file:" test -n "$stored"
[ -n "$stored" ] && check "01: stored copy is the server's CA" test "$(openssl x509 -in "$stored" -noout -fingerprint -sha256)" = "$fp_server"
check "01: stderr names the stored address" grep -q "CA certificate stored at file:$T/ca/" "$T/stderr"

# 02: the same with Block2 SZX=2 (64-byte blocks), and as CF 287; again into
# the same prefix: same address, nothing duplicated.
run_estc cacerts "${NET[@]}" "${BOOT[@]}" --block-size 64 --ca-out "file:$T/ca/" --out "$T/crts64.pem"
expect_ok "02: cacerts with 64-byte blocks"
check "02: --out holds the same PEM" cmp -s "$T/crts.pem" "$T/crts64.pem"
check "02: nothing on stdout with --out" test ! -s "$T/stdout"
check "02: one CA file, not two" test "$(ls "$T/ca" | wc -l)" -eq 1
run_estc cacerts "${NET[@]}" "${BOOT[@]}" --accept 287 -q
expect_ok "02: cacerts Accept 287"
check "02: 287 gives the CA too" test "$(openssl x509 -in "$T/stdout" -noout -fingerprint -sha256 2>/dev/null)" = "$fp_server"
check "02: -q keeps stderr empty" test ! -s "$T/stderr"

# 03: POST /sen direct.
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=device-1/O=Example --san DNS:device-1.example \
  --san IP:192.0.2.1 --new-key "file:$T/f/key.pem" --new-cert "file:$T/f/cert.pem"
expect_ok "03: enroll (sen)"
cp "$T/stdout" "$T/issued.pem"
verify_issued "03" "$T/issued.pem"
same_key "03" "$T/issued.pem" "$(openssl pkey -in "$T/f/key.pem" -pubout 2>/dev/null)"
check "03: the stored certificate is the printed one" cmp -s <(openssl x509 -in "$T/f/cert.pem" -outform DER) <(openssl x509 -in "$T/issued.pem" -outform DER)
check "03: key file is 0600" test "$(stat -c %a "$T/f/key.pem")" = 600
check "03: subject as asked" test "$(subject_of "$T/issued.pem")" = "O=Example,CN=device-1"
check "03: subjectAltName as asked" bash -c "openssl x509 -in '$T/issued.pem' -noout -ext subjectAltName | grep -q 'DNS:device-1.example, IP Address:192.0.2.1'"
run_estc status --new-cert "file:$T/f/cert.pem" --new-key "file:$T/f/key.pem"
expect_ok "03: status"
check "03: status shows the subject and a matching key" bash -c "grep -q 'CN = device-1' '$T/stdout' && grep -q 'matches the certificate' '$T/stdout'"
run_estc status --cert "$T/issued.pem" --key "$T/dev.key"
ALLOW_STDOUT=1 expect_fail "03: status with another key" 1 "not the certificate's key"

# 05: POST /sren direct: same key, same names, a new certificate.
serial1=$(serial_of "$T/issued.pem")
run_estc reenroll "${NET[@]}" --cert "file:$T/f/cert.pem" --key "file:$T/f/key.pem"
expect_ok "05: reenroll (sren)"
cp "$T/stdout" "$T/renewed.pem"
verify_issued "05" "$T/renewed.pem"
same_key "05" "$T/renewed.pem" "$(openssl pkey -in "$T/f/key.pem" -pubout 2>/dev/null)"
check "05: a new serial" test "$(serial_of "$T/renewed.pem")" != "$serial1"
check "05: subject kept" test "$(subject_of "$T/renewed.pem")" = "O=Example,CN=device-1"
check "05: the renewed certificate replaced the old one in place" cmp -s <(openssl x509 -in "$T/f/cert.pem" -outform DER 2>/dev/null) <(openssl x509 -in "$T/renewed.pem" -outform DER)
check "05: stderr names the same address" grep -q "certificate stored at file:$T/f/cert.pem," "$T/stderr"
check "05: no second certificate or key left behind" test "$(ls "$T/f" | wc -l)" -eq 2

# reenroll with --rekey: a new key, the same names; the old key is removed.
run_estc reenroll "${NET[@]}" --cert "$T/f/cert.pem" --key "$T/f/key.pem" --rekey
expect_ok "05: reenroll --rekey (current credentials as plain files)"
cp "$T/stdout" "$T/rekeyed.pem"
verify_issued "05 rekey" "$T/rekeyed.pem"
check "05 rekey: a different key" test "$(cert_pub "$T/rekeyed.pem")" != "$(cert_pub "$T/renewed.pem")"
newkey=$(sed -n 's/.*, key at file:\(.*\)$/\1/p' "$T/stderr")
check "05 rekey: the new key is a 0600 file" test "$(stat -c %a "$newkey" 2>/dev/null)" = 600
[ -n "$newkey" ] && same_key "05 rekey" "$T/rekeyed.pem" "$(openssl pkey -in "$newkey" -pubout 2>/dev/null)"
check "05 rekey: the old key is gone" test ! -e "$T/f/key.pem"
check "05 rekey: the certificate stays where it was" cmp -s <(openssl x509 -in "$T/f/cert.pem" -outform DER 2>/dev/null) <(openssl x509 -in "$T/rekeyed.pem" -outform DER)
check "05 rekey: one key and one certificate" test "$(ls "$T/f" | wc -l)" -eq 2

# 07: POST /skg: the server makes the key, imported into file:.
run_estc serverkeygen "${NET[@]}" "${BOOT[@]}" --subject /CN=device-skg --new-key "file:$T/f/skg.key" \
  --new-cert "file:$T/f/skg.crt" --out "$T/skg.pem"
expect_ok "07: serverkeygen (skg)"
verify_issued "07" "$T/skg.pem"
check "07: imported key is 0600" test "$(stat -c %a "$T/f/skg.key" 2>/dev/null)" = 600
same_key "07" "$T/skg.pem" "$(openssl pkey -in "$T/f/skg.key" -pubout 2>/dev/null)"

# 08: GET /att, and an enrollment that applies it.
run_estc csrattrs "${NET[@]}" "${BOOT[@]}"
expect_ok "08: csrattrs (att)"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --with-csrattrs --subject /CN=device-att --accept 287 \
  --new-key "file:$T/f/att.key" --new-cert "file:$T/f/att.crt"
expect_ok "08: enroll --with-csrattrs, Accept 287"
verify_issued "08" "$T/stdout"

# Bootstrap with an implicit trust anchor: /crts first, then /sen.
run_estc enroll --server "$ESTC_SERVER_URI/est" --implicit-trust "$ESTC_SERVER_CA" "${BOOT[@]}" \
  --with-cacerts --ca-out "file:$T/ca/boot-" --subject /CN=device-boot \
  --new-key "file:$T/f/boot.key" --new-cert "file:$T/f/boot.crt"
expect_ok "implicit trust, --with-cacerts, then enroll"
verify_issued "implicit trust" "$T/stdout"
check "implicit trust: CA stored under the prefix" bash -c "ls '$T/ca'/boot-*.ca.pem >/dev/null 2>&1"

# mem: results vanish, so the command prints them and says so.
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=device-mem
expect_ok "enroll into mem:"
verify_issued "mem:" "$T/stdout"
check "mem: a note says the objects vanish" grep -q "note: mem: objects vanish" "$T/stderr"

# 04 and 06: a server that answers the first enrollment request of each
# Other key types: the CSR is signed by the engine with the matching
# algorithm and the server issues for the key.
for kt in p384 rsa2048; do
  mkdir -m 700 "$T/$kt"
  run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject "/CN=device-$kt" --key-type "$kt" \
    --new-key "file:$T/$kt/key.pem" --new-cert "file:$T/$kt/cert.pem"
  expect_ok "07 $kt: enroll"
  cp "$T/stdout" "$T/$kt.pem"
  verify_issued "07 $kt" "$T/$kt.pem"
  same_key "07 $kt" "$T/$kt.pem" "$(openssl pkey -in "$T/$kt/key.pem" -pubout 2>/dev/null)"
done
check "07 p384: a P-384 key" bash -c "openssl x509 -in '$T/p384.pem' -noout -text | grep -q 'NIST CURVE: P-384'"
check "07 rsa2048: an RSA 2048 key" bash -c "openssl x509 -in '$T/rsa2048.pem' -noout -text | grep -q 'Public-Key: (2048 bit)'"

# client with 5.03 + Max-Age; with 64-byte blocks (Block1 and Block2).
estc_server_stop
start_server --delay-first 1 --max-age 1
mkdir -m 700 "$T/d"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --block-size 64 --subject /CN=device-delay -v \
  --new-key "file:$T/d/key.pem" --new-cert "file:$T/d/cert.pem"
expect_ok "04: enroll, 64-byte blocks, first answer 5.03"
cp "$T/stdout" "$T/delayed.pem"
verify_issued "04" "$T/delayed.pem"
same_key "04" "$T/delayed.pem" "$(openssl pkey -in "$T/d/key.pem" -pubout 2>/dev/null)"
check "04: the server sent a 5.03" test "$(count_delays)" -ge 1
check "04: estc waited it out (-v)" grep -q "5.03, retrying" "$T/stderr"
before=$(count_delays)
run_estc reenroll "${NET[@]}" --block-size 64 --new-cert "file:$T/d/cert.pem" --new-key "file:$T/d/key.pem" -v
expect_ok "06: reenroll, 64-byte blocks, first answer 5.03"
verify_issued "06" "$T/stdout"
same_key "06" "$T/stdout" "$(openssl pkey -in "$T/d/key.pem" -pubout 2>/dev/null)"
check "06: the server sent another 5.03" test "$(count_delays)" -gt "$before"

finish
