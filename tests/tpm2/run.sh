#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tpm2 suite: starts swtpm in a temporary folder, runs the conformance
# suite and the TPM-specific checks against it, compares the TPM's persistent
# handles and NV indices before and after, and stops swtpm by PID.
#
#   run.sh FIXTURE TEST_TPM2 [ESTC_ENGINE_TEST]
#
# ESTC_TEST_WRAPPER (e.g. "valgrind --error-exitcode=9 --leak-check=full")
# runs the programs under a checker.
set -u

fixture=$1
test_tpm2=$2
engine_test=${3:-}
wrap=${ESTC_TEST_WRAPPER:-}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tpm2_lib_start "$fixture" tpm2-test tpm2_readpublic openssl

# Handle lists without the storage primary keys the engine makes (0x81000001
# by default, 0x81000002 in the custom-SRK check): they are the engine's
# infrastructure, not test objects.
handles() { tpm2_handles 0x81000001 0x81000002; }

before=$(handles) || { fail "tpm2_getcap"; exit 1; }

# 1. The conformance suite, with the TCTI given as an address attribute.
if [ -n "$engine_test" ]; then
    prefix="tpm2:?tcti=swtpm:host%3D127.0.0.1,port%3D$SWTPM_PORT"
    if $wrap "$engine_test" "$prefix" >"$work/conformance.txt" 2>&1; then
        pass "estc-engine-test '$prefix'"
    else
        fail "estc-engine-test '$prefix'"
    fi
    cat "$work/conformance.txt"
    grep -q ' 0 failed' "$work/conformance.txt" || fail "conformance summary"
    after=$(handles)
    if [ "$before" = "$after" ]; then
        pass "handles unchanged by the conformance suite"
    else
        fail "handles changed by the conformance suite: before [$before] after [$after]"
    fi
else
    echo "SKIP: estc-engine-test not built; conformance part not run"
fi

# 2. The SRK made by the engine follows the provisioning template.
key=tpm2:handle=0x81000300
if $wrap "$test_tpm2" keygen "$key" p256; then
    srk=$(tpm2_readpublic -c 0x81000001 2>&1)
    for attr in fixedtpm fixedparent sensitivedataorigin userwithauth noda restricted decrypt; do
        grep -q "$attr" <<<"$srk" || fail "SRK lacks $attr"
    done
    grep -q -i "nist p256" <<<"$srk" && pass "SRK is an ECC P-256 storage key" ||
        fail "SRK curve: $srk"

    # 3. A key made through the engine: attributes read by tpm2-tools.
    pub=$(tpm2_readpublic -c 0x81000300 2>&1)
    for attr in fixedtpm fixedparent sensitivedataorigin userwithauth sign; do
        grep -q "$attr" <<<"$pub" || fail "key lacks $attr: $pub"
    done
    if grep -q -e "restricted" -e "decrypt" <<<"$pub"; then
        fail "key is restricted or decrypt: $pub"
    else
        pass "key attributes fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
    fi

    # 4. Its signature verifies with the openssl command.
    echo -n "estc tpm2 test message" >"$work/msg"
    openssl dgst -sha256 -binary "$work/msg" >"$work/digest"
    if $wrap "$test_tpm2" public "$key" >"$work/spki.der" &&
        $wrap "$test_tpm2" sign "$key" <"$work/digest" >"$work/sig.der" &&
        openssl pkeyutl -verify -pubin -keyform DER -inkey "$work/spki.der" \
            -in "$work/digest" -sigfile "$work/sig.der" -pkeyopt digest:sha256 >/dev/null; then
        pass "engine signature verifies with openssl pkeyutl"
    else
        fail "engine signature does not verify"
    fi
    # and a wrong message does not
    echo -n "another message" | openssl dgst -sha256 -binary >"$work/digest2"
    if openssl pkeyutl -verify -pubin -keyform DER -inkey "$work/spki.der" \
        -in "$work/digest2" -sigfile "$work/sig.der" -pkeyopt digest:sha256 >/dev/null 2>&1; then
        fail "signature verifies over a different digest"
    fi
    $wrap "$test_tpm2" remove "$key" || fail "remove $key"
    if tpm2_getcap handles-persistent | grep -q -i 0x81000300; then
        fail "0x81000300 still present after remove"
    fi
else
    fail "keygen $key"
fi

# 5. The TPM-specific checks (TCTI from TPM2TOOLS_TCTI).
if CK_FORK=${CK_FORK:-yes} $wrap "$test_tpm2"; then
    pass "test-tpm2"
else
    fail "test-tpm2"
fi

# 6. Nothing left behind: no test object, no transient object.
after=$(handles)
if [ "$before" = "$after" ]; then
    pass "persistent handles and NV indices as before"
else
    fail "handles differ: before [$before] after [$after]"
fi
transient=$(tpm2_transient)
if [ -z "$transient" ]; then
    pass "no transient object left loaded"
else
    fail "transient objects left: $transient"
fi

echo "tpm2 suite: $failures failure(s)"
[ "$failures" -eq 0 ]
