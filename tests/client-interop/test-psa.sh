#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Interop through the estc command with the enrolled key in PSA Crypto
# (mbed TLS), whose key and ITS files live in the current folder: estc runs
# in a private 0700 folder, whose files are counted before and after.
. "$(dirname "$0")/lib.sh"

PSA=$T/psa
mkdir -m 700 "$PSA"
cd "$PSA" || exit 1
count() { ls -A "$PSA" | wc -l; }

run_estc status --new-cert psa:uid=0x20001
if grep -qi "scheme" "$T/stderr"; then
  echo "SKIP: this build has no psa: engine"; exit 77
fi

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server
KEY=psa:key-id=0x10001
CERT=psa:uid=0x20001

untrusted_server /CN=psa "$KEY" "$CERT" "PSA storage"
n0=$N0

run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=psa-device --new-key "$KEY" --new-cert "$CERT"
expect_ok "03 psa: enroll"
cp "$T/stdout" "$T/psa.pem"
verify_issued "03 psa" "$T/psa.pem"
same_key "03 psa" "$T/psa.pem" "$(engine_pub "$KEY")"
n1=$(count)
check "03 psa: storage grew ($n0 -> $n1)" test "$n1" -gt "$n0"
check "03 psa: storage is private" test "$(stat -c %a "$PSA")" = 700

run_estc reenroll "${NET[@]}" --new-cert "$CERT" --new-key "$KEY"
expect_ok "05 psa: reenroll"
verify_issued "05 psa" "$T/stdout"
same_key "05 psa" "$T/stdout" "$(engine_pub "$KEY")"
check "05 psa: storage count unchanged" test "$(count)" -eq "$n1"

run_estc serverkeygen "${NET[@]}" "${BOOT[@]}" --subject /CN=psa-skg --new-key psa:key-id=0x10002 \
  --new-cert psa:uid=0x20002
expect_ok "07 psa: serverkeygen (key imported)"
verify_issued "07 psa" "$T/stdout"
same_key "07 psa" "$T/stdout" "$(engine_pub psa:key-id=0x10002)"

run_estc csrattrs "${NET[@]}" "${BOOT[@]}"
expect_ok "08 psa: csrattrs"

finish
