#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Interop through the estc command with the enrolled key in a SoftHSM2 token:
# sen, sren, skg, crts into the token; object counts before and after; the
# key sensitive and not extractable; PINs never shown.
. "$(dirname "$0")/lib.sh"
start_token cli 741852
no_pin() { ! grep -q "$PIN" "$T/stderr" "$T/stdout"; }

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server

# A failed enrollment leaves the token as it was.
untrusted_server /CN=p11 "$(addr est-key)" "$(addr est-cert)" token
n0=$N0
check "untrusted server: no PIN in the error" no_pin

# 03: sen with the key generated in the token.
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=p11-device --new-key "$(addr est-key)" \
  --new-cert "$(addr est-cert)"
expect_ok "03 pkcs11: enroll"
cp "$T/stdout" "$T/p11.pem"
verify_issued "03 pkcs11" "$T/p11.pem"
same_key "03 pkcs11" "$T/p11.pem" "$(engine_pub "$(addr est-key)")"
n1=$(count)
check "03 pkcs11: key pair and certificate added ($n0 -> $n1)" test "$n1" -eq $((n0 + 3))
check "03 pkcs11: no PIN on stderr" no_pin
objs=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label cli --login --pin "$PIN" --list-objects 2>/dev/null)
priv=$(printf '%s\n' "$objs" | grep -A12 '^Private Key Object' | grep -m1 'Access:')
check "03 pkcs11: the key is sensitive" grep -q 'sensitive' <<<"$priv"
check "03 pkcs11: the key is never extractable" grep -q 'never extractable' <<<"$priv"
check "03 pkcs11: the token holds the certificate" bash -c "pkcs11-tool --module '$SOFTHSM_MODULE' --token-label cli --login --pin '$PIN' --read-object --type cert --label est-cert 2>/dev/null | openssl x509 -inform DER -noout -subject | grep -q p11-device"
run_estc status --new-cert "$(addr est-cert)" --new-key "$(addr est-key)"
expect_ok "03 pkcs11: status"
check "03 pkcs11: status shows a matching key, PIN hidden" bash -c "grep -q 'matches the certificate' '$T/stdout' && grep -q 'pin-value=\*\*\*' '$T/stdout'"
check "03 pkcs11: status shows no PIN" no_pin

# A token key that is not the certificate's: caught before any network
# traffic (exit 1, not a failed handshake), the token unchanged, no PIN shown.
n_mm=$(count)
run_estc discover "${NET[@]}" --cert "$T/dev.crt" --key "$(addr est-key)"
expect_fail "pkcs11: --key of another certificate" 1 \
  "the key at --key pkcs11:.*pin-value=\*\*\*.* does not belong to the certificate at --cert"
check "pkcs11 mismatch: no PIN in the error" no_pin
check "pkcs11 mismatch: token unchanged" test "$(count)" -eq "$n_mm"

# 05: sren with the token key; the old certificate is replaced, not piled up.
run_estc reenroll "${NET[@]}" --new-cert "$(addr est-cert)" --new-key "$(addr est-key)"
expect_ok "05 pkcs11: reenroll"
verify_issued "05 pkcs11" "$T/stdout"
same_key "05 pkcs11" "$T/stdout" "$(engine_pub "$(addr est-key)")"
check "05 pkcs11: new serial" test "$(serial_of "$T/stdout")" != "$(serial_of "$T/p11.pem")"
check "05 pkcs11: no PIN on stderr" no_pin
n2=$(count)
check "05 pkcs11: token count unchanged after sren ($n1 -> $n2)" test "$n2" -eq "$n1"

# 01: crts into the token as trust objects.
run_estc cacerts "${NET[@]}" "${BOOT[@]}" --ca-out "$P11;pin-value=$PIN$Q"
expect_ok "01 pkcs11: cacerts into the token"
n3=$(count)
check "01 pkcs11: one trust object added ($n2 -> $n3)" test "$n3" -eq $((n2 + 1))
check "01 pkcs11: no PIN on stderr" no_pin

# 07: skg: the server's key imported into the token.
run_estc serverkeygen "${NET[@]}" "${BOOT[@]}" --subject /CN=p11-skg --new-key "$(addr skg-key)" \
  --new-cert "$(addr skg-cert)"
expect_ok "07 pkcs11: serverkeygen"
verify_issued "07 pkcs11" "$T/stdout"
same_key "07 pkcs11" "$T/stdout" "$(engine_pub "$(addr skg-key)")"
n4=$(count)
check "07 pkcs11: key pair and certificate added ($n3 -> $n4)" test "$n4" -eq $((n3 + 3))
objs=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label cli --login --pin "$PIN" --list-objects 2>/dev/null)
# The Access line of the private key labelled skg-key, whatever the listing order.
skg_access=$(printf '%s\n' "$objs" | awk '
  /^[A-Z][a-z]+ Key Object|^Certificate Object|^Data Object/ { priv = ($0 ~ /^Private Key Object/); label = ""; next }
  /label:/ { label = $2 }
  /Access:/ && priv && label == "skg-key" { sub(/^[ \t]*Access:[ \t]*/, ""); print; exit }')
check "07 pkcs11: the imported key is sensitive and not extractable" \
  bash -c '[[ $1 == *sensitive* ]] && ! [[ ${1//never extractable/} == *extractable* ]]' _ "$skg_access"

# A wrong PIN: a clear error, nothing created.
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=p11-bad \
  --new-key "$P11;object=bad-key;pin-value=000000$Q" --new-cert "$P11;object=bad-cert;pin-value=000000$Q"
expect_fail "wrong PIN" 1 "PIN|auth|pin"
check "wrong PIN: token unchanged" test "$(count)" -eq "$n4"
check "wrong PIN: the PIN is not shown" bash -c "! grep -q 000000 '$T/stderr'"

finish
