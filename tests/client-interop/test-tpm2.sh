#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Interop through the estc command with the enrolled key in a TPM 2.0
# (swtpm): sen and sren with persistent handles and NV certificates, counts
# of handles before and after, skg refused cleanly (no key import in a TPM).
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/fixtures/swtpm.sh"

swtpm_require 1 tpm2_getcap tpm2_readpublic || { echo "FAIL: tpm2-tools missing"; exit 1; }
swtpm_start || exit $?
CLEANUPS+=(swtpm_stop)
export ESTC_TPM2_TCTI=$ESTC_TEST_TCTI

# Persistent handles and NV indices, without the storage primary key the
# engine makes for itself (0x81000001).
objects() {
  { tpm2_getcap handles-persistent; tpm2_getcap handles-nv-index; } 2>/dev/null |
    grep -oE '0x[0-9a-fA-F]+' | grep -vi '^0x81000001$' | sort
}
count() { objects | wc -l; }

run_estc status --new-cert tpm2:nv=0x01500010
if grep -q "no driver\|unknown scheme\|scheme" "$T/stderr" && ! grep -q "nv" "$T/stderr"; then
  echo "SKIP: this build has no tpm2: engine"; exit 77
fi

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server
KEY=tpm2:handle=0x81000010
CERT=tpm2:nv=0x01500010

untrusted_server /CN=tpm "$KEY" "$CERT" TPM
n0=$N0

run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=tpm-device --san DNS:tpm.example \
  --new-key "$KEY" --new-cert "$CERT"
expect_ok "03 tpm2: enroll"
cp "$T/stdout" "$T/tpm.pem"
verify_issued "03 tpm2" "$T/tpm.pem"
tpm2_readpublic -c 0x81000010 -f pem -o "$T/tpm-pub.pem" >/dev/null 2>&1
same_key "03 tpm2 (tpm2_readpublic)" "$T/tpm.pem" "$(openssl pkey -pubin -in "$T/tpm-pub.pem" -pubout 2>/dev/null)"
same_key "03 tpm2 (estc provider)" "$T/tpm.pem" "$(engine_pub "$KEY")"
n1=$(count)
check "03 tpm2: one key handle and one NV index added ($n0 -> $n1)" test "$n1" -eq $((n0 + 2))
attrs=$(tpm2_readpublic -c 0x81000010 2>/dev/null)
check "03 tpm2: the key is fixedTPM and fixedParent" bash -c "grep -q fixedtpm <<<\"\$1\" && grep -q fixedparent <<<\"\$1\"" _ "$attrs"
run_estc status --new-cert "$CERT" --new-key "$KEY"
expect_ok "03 tpm2: status"

run_estc reenroll "${NET[@]}" --new-cert "$CERT" --new-key "$KEY" --block-size 64
expect_ok "05 tpm2: reenroll"
verify_issued "05 tpm2" "$T/stdout"
same_key "05 tpm2" "$T/stdout" "$(openssl pkey -pubin -in "$T/tpm-pub.pem" -pubout 2>/dev/null)"
check "05 tpm2: new serial" test "$(serial_of "$T/stdout")" != "$(serial_of "$T/tpm.pem")"
check "05 tpm2: TPM count unchanged" test "$(count)" -eq "$n1"
run_estc status --new-cert "$CERT" --new-key "$KEY"
check "05 tpm2: the NV index holds the renewed certificate" bash -c "[ $RC -eq 0 ]"

run_estc cacerts "${NET[@]}" "${BOOT[@]}" --ca-out tpm2:
expect_ok "01 tpm2: cacerts into NV"
n2=$(count)
check "01 tpm2: one NV index added ($n1 -> $n2)" test "$n2" -eq $((n1 + 1))

# 07: skg with the server's key imported into the TPM (the engine offers
# key_import: the key is wrapped for the SRK and loaded, never readable).
run_estc serverkeygen "${NET[@]}" "${BOOT[@]}" --subject /CN=tpm-skg --new-key tpm2:handle=0x81000011 \
  --new-cert tpm2:nv=0x01500011
expect_ok "07 tpm2: serverkeygen (key imported)"
if [ "$RC" -eq 0 ]; then
  verify_issued "07 tpm2" "$T/stdout"
  same_key "07 tpm2" "$T/stdout" "$(engine_pub tpm2:handle=0x81000011)"
  check "07 tpm2: key handle and NV index added" test "$(count)" -eq $((n2 + 2))
else
  check "07 tpm2: a failed import leaves the TPM unchanged" test "$(count)" -eq "$n2"
fi

finish
