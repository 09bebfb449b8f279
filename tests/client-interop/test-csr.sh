#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Keys no engine reaches, against a real estc-server over DTLS on loopback:
# `estc csr` makes the request enroll would send for an engine key (a file
# and a SoftHSM2 key), checked with `openssl req -verify`; a CSR that
# `openssl req` made with a key estc never saw is enrolled with
# `enroll --csr` and `reenroll --csr`, and the certificate is for that key;
# bad CSR files are named with the reason (exit 1), usage errors exit 2, and
# nothing is issued or stored for them. (A server that issues a certificate
# for another key than the CSR's is in the client-hostile suite: a real
# server cannot be made to.)
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server
mkdir -m 700 "$T/f"
issued() { wc -l <"$ESTC_SERVER_STATE/state/index.txt" 2>/dev/null || echo 0; }
# pub_of_key PEM-KEY: its public key, PEM.
pub_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
# req_verifies CSR-PEM: openssl req -verify says OK (its exit status does
# not tell).
req_verifies() { openssl req -in "$1" -verify -noout 2>&1 | grep -q 'self-signature verify OK'; }
# sans_of CSR-PEM: its subjectAltName line.
sans_of() { openssl req -in "$1" -noout -text 2>/dev/null | grep -A1 'Subject Alternative Name' | tail -1 | tr -d ' '; }

# ---- estc csr for a file: key ---------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/f/key.pem" 2>/dev/null &&
  chmod 600 "$T/f/key.pem" || { echo "FAIL: cannot make a key"; exit 1; }
run_estc csr --key "file:$T/f/key.pem" --subject /CN=element-1/O=Example \
  --san DNS:element-1.example --san IP:192.0.2.7 --out "$T/file.csr"
expect_ok "csr for a file: key"
check "csr: openssl req -verify" req_verifies "$T/file.csr"
check "csr: the Subject asked for" \
  test "$(openssl req -in "$T/file.csr" -noout -subject -nameopt RFC2253)" = "subject=O=Example,CN=element-1"
check "csr: the subjectAltNames asked for" \
  test "$(sans_of "$T/file.csr")" = "DNS:element-1.example,IPAddress:192.0.2.7"
check "csr: the key's public key" \
  test "$(openssl req -in "$T/file.csr" -noout -pubkey)" = "$(pub_of_key "$T/f/key.pem")"
check "csr: the summary names the key" grep -q "request for the key at file:$T/f/key.pem" "$T/stderr"
# To stdout, and a plain path is the file's key too.
run_estc csr --key "$T/f/key.pem" --subject /CN=element-1 -q
check "csr: exit 0" test "$RC" -eq 0
check "csr: PEM on stdout that verifies" req_verifies "$T/stdout"
check "csr -q: nothing on stderr" test ! -s "$T/stderr"

# The signature the engine makes for each key type, with the hash that
# goes with it: P-384 with SHA-384, P-256 and RSA with SHA-256.
sigalg_of() { openssl req -in "$1" -noout -text 2>/dev/null | awk '/Signature Algorithm:/ {print $3; exit}'; }
for kt in "P-384 ecdsa-with-SHA384" "RSA sha256WithRSAEncryption"; do
  set -- $kt
  if [ "$1" = RSA ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/f/k-$1.pem" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:"$1" -out "$T/f/k-$1.pem" 2>/dev/null
  fi
  chmod 600 "$T/f/k-$1.pem"
  run_estc csr --key "file:$T/f/k-$1.pem" --subject "/CN=element-$1" --out "$T/k-$1.csr"
  expect_ok "csr for a $1 key"
  check "csr $1: openssl req -verify" req_verifies "$T/k-$1.csr"
  check "csr $1: signed with $2" test "$(sigalg_of "$T/k-$1.csr")" = "$2"
  check "csr $1: the key's public key" \
    test "$(openssl req -in "$T/k-$1.csr" -noout -pubkey)" = "$(pub_of_key "$T/f/k-$1.pem")"
done
set --

# With the server's CSR attributes (/att over DTLS).
run_estc csr --key "file:$T/f/key.pem" --subject /CN=element-1 --with-csrattrs "${NET[@]}"
expect_ok "csr --with-csrattrs"
check "csr --with-csrattrs: a request that verifies" req_verifies "$T/stdout"
check "csr --with-csrattrs: the summary says so" grep -q 'CSR attributes' "$T/stderr"

# The request enroll would send is one the server enrolls.
n0=$(issued)
run_estc enroll "${NET[@]}" "${BOOT[@]}" --csr "$T/file.csr" --new-cert "file:$T/f/file.crt"
expect_ok "enroll --csr with the request of estc csr"
check "enroll --csr: the certificate is the file key's" \
  test "$(cert_pub "$T/f/file.crt")" = "$(pub_of_key "$T/f/key.pem")"
check "enroll --csr: one certificate issued" test "$(issued)" -eq $((n0 + 1))

# ---- estc csr for a SoftHSM2 key ------------------------------------------
start_token csr 1234
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=p11-1 --new-key "$(addr k1)" --new-cert "$(addr c1)"
expect_ok "enroll into the token (the key for csr)"
cp "$T/stdout" "$T/k1.crt" # its certificate: the token key's public key
n0=$(count)
run_estc csr --key "$(addr k1)" --subject /CN=p11-1 --san DNS:p11-1.example
expect_ok "csr for a pkcs11: key"
check "csr pkcs11: openssl req -verify" req_verifies "$T/stdout"
check "csr pkcs11: the token key's public key" \
  test "$(openssl req -in "$T/stdout" -noout -pubkey)" = "$(cert_pub "$T/k1.crt")"
check "csr pkcs11: no object made or removed ($n0)" test "$(count)" -eq "$n0"
check "csr pkcs11: no PIN in the summary" bash -c "! grep -q 'pin-value=1234' '$T/stderr'"
run_estc csr --key "$(addr no-such-key)" --subject /CN=p11-1
expect_fail "csr for a key that is not there" 1 "^estc: csr: making the CSR: "
check "csr for no key: no object made ($n0)" test "$(count)" -eq "$n0"

# ---- a CSR made by openssl req, with a key estc never saw -----------------
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/element.key" \
  -subj /CN=element-2 -addext subjectAltName=DNS:element-2.example -out "$T/element.csr" \
  2>/dev/null || { echo "FAIL: openssl req"; exit 1; }
n0=$(issued)
run_estc enroll "${NET[@]}" "${BOOT[@]}" --csr "$T/element.csr" --new-cert "file:$T/f/element.crt" \
  --out "$T/element-out.crt"
expect_ok "enroll --csr (PEM from openssl req)"
check "enroll --csr: one certificate issued" test "$(issued)" -eq $((n0 + 1))
check "enroll --csr: stored at --new-cert" test -s "$T/f/element.crt"
check "enroll --csr: --out is the stored certificate" cmp -s "$T/f/element.crt" "$T/element-out.crt"
verify_issued "enroll --csr" "$T/f/element.crt"
check "enroll --csr: the certificate is the outside key's" \
  test "$(cert_pub "$T/f/element.crt")" = "$(pub_of_key "$T/element.key")"
check "enroll --csr: the Subject of the CSR" \
  test "$(subject_of "$T/f/element.crt")" = "CN=element-2"
check "enroll --csr: the summary says the key is not estc's" grep -q "for the key the CSR was made with" "$T/stderr"
check "enroll --csr: no key file made" bash -c "[ \"\$(ls '$T/f' | grep -c key)\" = 1 ]"
# DER is read too.
openssl req -in "$T/element.csr" -outform DER -out "$T/element.der" 2>/dev/null
run_estc enroll "${NET[@]}" "${BOOT[@]}" --csr "$T/element.der" -q
expect_ok "enroll --csr (DER)"
check "enroll --csr (DER): the outside key's certificate on stdout" \
  test "$(cert_pub "$T/stdout")" = "$(pub_of_key "$T/element.key")"

# ---- reenroll --csr -----------------------------------------------------------
# The current credentials, in files estc can use for the DTLS session.
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=renew-1 --new-key "file:$T/f/r.key" \
  --new-cert "file:$T/f/r.crt"
expect_ok "enroll the credentials to renew"
serial0=$(serial_of "$T/f/r.crt")
# The same key, its CSR made by openssl: renewed in place.
openssl req -new -key "$T/f/r.key" -subj /CN=renew-1 -out "$T/same.csr" 2>/dev/null
run_estc reenroll "${NET[@]}" --cert "file:$T/f/r.crt" --key "file:$T/f/r.key" --csr "$T/same.csr"
expect_ok "reenroll --csr for the current key"
check "reenroll --csr same key: renewed in place" \
  test "$(serial_of "$T/f/r.crt")" != "$serial0"
check "reenroll --csr same key: still the key's certificate" \
  test "$(cert_pub "$T/f/r.crt")" = "$(pub_of_key "$T/f/r.key")"
check "reenroll --csr same key: nothing left beside it" bash -c "[ \$(ls '$T/f' | grep -c '^r\.') = 2 ]"
# Another key (the Subject kept): printed; the current pair stays as it was.
cp "$T/f/r.crt" "$T/r-before.crt"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/new.key" \
  -subj /CN=renew-1 -out "$T/other.csr" 2>/dev/null
run_estc reenroll "${NET[@]}" --cert "file:$T/f/r.crt" --key "file:$T/f/r.key" --csr "$T/other.csr" \
  --out "$T/renewed.crt"
expect_ok "reenroll --csr for another key"
check "reenroll --csr other key: --out holds the new key's certificate" \
  test "$(cert_pub "$T/renewed.crt")" = "$(pub_of_key "$T/new.key")"
verify_issued "reenroll --csr other key" "$T/renewed.crt"
check "reenroll --csr other key: the current certificate unchanged" cmp -s "$T/f/r.crt" "$T/r-before.crt"
check "reenroll --csr other key: nothing left beside it" bash -c "[ \$(ls '$T/f' | grep -c '^r\.') = 2 ]"
check "reenroll --csr other key: said so" grep -q "not the one at --key" "$T/stderr"

# ---- bad CSR files: named with the reason, nothing issued or stored -------
printf 'this is no certificate request\n' >"$T/garbage.csr"
# One bit of the signature flipped (its last byte).
cp "$T/element.der" "$T/badsig.der"
size=$(stat -c %s "$T/badsig.der")
last=$(od -An -tu1 -j $((size - 1)) -N1 "$T/badsig.der" | tr -d ' ')
printf "$(printf '\\%03o' $((last ^ 1)))" | dd of="$T/badsig.der" bs=1 seek=$((size - 1)) conv=notrunc 2>/dev/null
check "the flipped CSR fails openssl req -verify" \
  bash -c "openssl req -inform DER -in '$T/badsig.der' -verify -noout 2>&1 | grep -q 'verify failure'"
n0=$(issued)
for sub in enroll reenroll; do
  if [ "$sub" = enroll ]; then
    CREDS=("${BOOT[@]}" --new-cert "file:$T/f/bad.crt")
  else
    CREDS=(--cert "file:$T/f/r.crt" --key "file:$T/f/r.key")
  fi
  cp "$T/f/r.crt" "$T/r-before.crt"
  run_estc "$sub" "${NET[@]}" "${CREDS[@]}" --csr "$T/garbage.csr"
  expect_fail "$sub --csr garbage" 1 "^estc: $sub: --csr $T/garbage.csr: .*not a PKCS#10 request"
  run_estc "$sub" "${NET[@]}" "${CREDS[@]}" --csr "$T/badsig.der"
  expect_fail "$sub --csr with a bad signature" 1 "^estc: $sub: --csr $T/badsig.der: .*signature does not verify"
  run_estc "$sub" "${NET[@]}" "${CREDS[@]}" --csr "$T/no-such.csr"
  expect_fail "$sub --csr missing file" 1 "^estc: $sub: --csr $T/no-such.csr: No such file or directory$"
  run_estc "$sub" "${NET[@]}" "${CREDS[@]}" --csr "$T/f"
  expect_fail "$sub --csr a folder" 1 "^estc: $sub: --csr $T/f: Is a directory$"
  check "$sub: the current certificate unchanged" cmp -s "$T/f/r.crt" "$T/r-before.crt"
done
check "bad CSRs: nothing issued" test "$(issued)" -eq "$n0"
check "bad CSRs: nothing stored" test ! -e "$T/f/bad.crt"

# ---- usage --------------------------------------------------------------------
run_estc enroll "${NET[@]}" "${BOOT[@]}" --csr "$T/element.csr" --subject /CN=x
expect_fail "enroll --csr with --subject" 2 "--subject does not go with --csr"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --csr "$T/element.csr" --new-key "file:$T/f/k2.pem"
expect_fail "enroll --csr with --new-key" 2 "--new-key does not go with --csr"
run_estc reenroll "${NET[@]}" --cert "file:$T/f/r.crt" --key "file:$T/f/r.key" --csr "$T/other.csr" --rekey
expect_fail "reenroll --csr --rekey" 2 "--rekey does not go with --csr"
run_estc serverkeygen "${NET[@]}" "${BOOT[@]}" --csr "$T/element.csr" --subject /CN=x
expect_fail "serverkeygen --csr" 2 "--csr does not apply to serverkeygen"
run_estc csr --subject /CN=x
expect_fail "csr without --key" 2 "--key is required"
run_estc csr --key "file:$T/f/key.pem"
expect_fail "csr without --subject" 2 "--subject is required"
run_estc csr --key "file:$T/f/key.pem" --subject /CN=x "${NET[@]}"
expect_fail "csr --server without --with-csrattrs" 2 "go with --with-csrattrs"
run_estc csr --key "file:$T/f/key.pem" --subject CN=x
expect_fail "csr with a malformed subject" 2 "write it as /CN=name"
check "usage errors: nothing issued" test "$(issued)" -eq "$n0"

finish
