#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tpm2 suite, the driver's cache of open keys: a key used through one
# estc context is evicted, or another key put at its handle, by another
# program (tpm2-tools) between two signatures. swtpm sits behind tpm2-abrmd
# so that both can use it at once. Checks that:
#   - a signature with an evicted key fails with ESTC_ERR_NOT_FOUND, and
#     once a P-384 key is at the handle, an ECDSA signature is made with it
#     and verifies under the public key read then (not under the old one);
#   - after a P-256 key is replaced by an RSA key, an RSASSA signature is
#     made with the new key (the cached EC public area does not refuse it);
#   - after a P-256 key is replaced by another P-256 key, the signature is
#     the new key's (neither the TPM nor ESYS checks a key's name under
#     password authorization) and the public key read says so: never the
#     old public key with the new key's signatures;
#   - no object is left behind.
#
#   cache.sh FIXTURE TEST_TPM2
set -u

fixture=$1
test_tpm2=$2
wrap=${ESTC_TEST_WRAPPER:-}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tpm2_lib_start "$fixture" tpm2-cache tpm2_createprimary tpm2_evictcontrol tpm2_flushcontext
tpm2_lib_broker || exit $?

handles() { tpm2_handles 0x81000001; }
before=$(handles)

h=0x81000220
key="tpm2:handle=$h"
# Another program puts a new signing key of algorithm $1 at $h: a primary
# key, the same for the same template, so $2 (more attributes) makes another
# one of the same algorithm. The broker flushes the transient copy when the
# tool exits.
put() {
    echo "run:tpm2_createprimary -Q -C o -G $1 -c $work/new.ctx \
-a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign${2:-}' && \
tpm2_evictcontrol -Q -C o -c $work/new.ctx $h >/dev/null"
}
evict="run:tpm2_evictcontrol -Q -C o -c $h"

# check WHAT WANT STEP...: the transcript of test-tpm2 steps is WANT.
check() {
    local what=$1 want=$2
    shift 2
    local got
    got=$($wrap "$test_tpm2" steps "$key" "$@" 2>"$work/err" | paste -sd ' ')
    if [ "$got" = "$want" ]; then
        pass "$what"
    else
        fail "$what: got [$got], want [$want]; stderr: $(tail -5 "$work/err")"
    fi
    tpm2_evictcontrol -Q -C o -c "$h" >/dev/null 2>&1
}

# 1. Evicted between two signatures, then another key there.
check "evicted, then a P-384 key at the handle" \
    "run 0 public ESTC_OK sign ESTC_OK run 0 sign ESTC_ERR_NOT_FOUND run 0 sign ESTC_OK public ESTC_OK now yes first no" \
    "$(put ecc256)" public sign:ecdsa "$evict" sign:ecdsa "$(put ecc384)" sign:ecdsa public

# 2. Replaced by a key of another type.
check "P-256 replaced by RSA 2048" \
    "run 0 public ESTC_OK sign ESTC_OK run 0 run 0 sign ESTC_OK public ESTC_OK now yes first no" \
    "$(put ecc256)" public sign:ecdsa "$evict" "$(put rsa2048)" sign:pkcs1 public

# 3. Replaced by a key of the same type.
check "P-256 replaced by another P-256 key" \
    "run 0 public ESTC_OK sign ESTC_OK run 0 run 0 sign ESTC_OK public ESTC_OK now yes first no" \
    "$(put ecc256)" public sign:ecdsa "$evict" "$(put ecc256 '|noda')" sign:ecdsa public

after=$(handles)
[ "$before" = "$after" ] && pass "persistent handles and NV indices as before" ||
    fail "handles differ: before [$before] after [$after]"
transient=$(tpm2_transient)
[ -z "$transient" ] && pass "no transient object left loaded" ||
    fail "transient objects left: $transient"

echo "tpm2 cache: $failures failure(s)"
[ "$failures" -eq 0 ]
