#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# PKCS#11 driver tests on fresh SoftHSM2 tokens in a temporary folder.
#
#   run-tests.sh conformance ESTC_ENGINE_TEST   the conformance suite; the token
#                                               must hold no object afterwards
#   run-tests.sh driver PKCS11_TEST             the Check tests (two tokens)
#   run-tests.sh export PKCS11_TEST             a key made by the driver cannot
#                                               be read out with OpenSC's pkcs11-tool
#   run-tests.sh exportable PKCS11_TEST FAKE_MODULE
#                                               a key that a (fake) token made
#                                               exportable is refused, nothing left
#   run-tests.sh tpm2-pkcs11 ESTC_ENGINE_TEST   the conformance suite on a
#                                               tpm2-pkcs11 token (swtpm, tpm2-abrmd)
#   run-tests.sh nss ESTC_ENGINE_TEST           the conformance suite on NSS softokn
#   run-tests.sh valgrind ESTC_ENGINE_TEST PKCS11_TEST
#                                               both under valgrind memcheck
set -euo pipefail

mode=$1
exe=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../fixtures/softhsm.sh"

softhsm_start || exit $?
trap softhsm_stop EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

case "$mode" in
conformance)
    softhsm_init_token estc-conf 1234
    before=$(softhsm_count_objects estc-conf 1234)
    prefix="pkcs11:token=estc-conf;pin-value=1234?module-path=$SOFTHSM_MODULE"
    "$exe" "$prefix"
    after=$(softhsm_count_objects estc-conf 1234)
    echo "objects on the token: $before before, $after after"
    [ "$before" = "$after" ] || fail "the suite left $((after - before)) objects behind"
    [ "$after" = 0 ] || fail "the fresh token holds $after objects"
    # The same with the module from PKCS11_MODULE_PATH and a narrower prefix.
    PKCS11_MODULE_PATH=$SOFTHSM_MODULE "$exe" "pkcs11:token=estc-conf;object=estc-;pin-value=1234"
    after=$(softhsm_count_objects estc-conf 1234)
    [ "$after" = 0 ] || fail "the second run left $after objects behind"
    ;;
driver)
    softhsm_init_token estc-t1 1234
    softhsm_init_token estc-t2 1234
    ESTC_P11_MODULE=$SOFTHSM_MODULE ESTC_P11_TOKEN1=estc-t1 ESTC_P11_TOKEN2=estc-t2 "$exe"
    for t in estc-t1 estc-t2; do
        n=$(softhsm_count_objects "$t" 1234)
        [ "$n" = 0 ] || fail "token $t holds $n objects after the tests"
    done
    ;;
export)
    softhsm_init_token estc-exp 1234
    export ESTC_P11_MODULE=$SOFTHSM_MODULE ESTC_P11_TOKEN1=estc-exp ESTC_P11_TOKEN2=estc-exp
    addr="pkcs11:token=estc-exp;object=exp-key;pin-value=1234?module-path=$SOFTHSM_MODULE"
    "$exe" --make-key "$addr"
    [ "$(softhsm_count_objects estc-exp 1234)" = 2 ] || fail "expected a key pair on the token"
    listing=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label estc-exp --login --pin 1234 \
        --list-objects --type privkey 2>&1)
    printf '%s\n' "$listing"
    printf '%s\n' "$listing" | grep -q 'Access:.*sensitive' || fail "private key not sensitive"
    printf '%s\n' "$listing" | grep -q 'never extractable' || fail "private key extractable"
    printf '%s\n' "$listing" | grep -q 'Usage:.*sign' || fail "private key cannot sign"
    # pkcs11-tool must not get the key out: no bytes written, whatever its
    # exit status (OpenSC 0.23 declines private keys and still exits 0; the
    # Check tests see the token itself answer CKR_ATTRIBUTE_SENSITIVE).
    out=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label estc-exp --login --pin 1234 \
        --read-object --type privkey --label exp-key -o "$SOFTHSM_DIR/priv.der" 2>&1) || true
    [ ! -s "$SOFTHSM_DIR/priv.der" ] || fail "pkcs11-tool read the private key out"
    echo "pkcs11-tool --read-object got nothing: $out"
    # Nor can the private value be read as an attribute.
    out=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label estc-exp --login --pin 1234 \
        --list-objects --type privkey --label exp-key --id "$(pkcs11-tool --module \
        "$SOFTHSM_MODULE" --token-label estc-exp --list-objects --type pubkey 2>/dev/null |
        sed -n 's/^ *ID: *//p' | head -n1)" 2>&1) || true
    printf '%s\n' "$out" | grep -q 'never extractable' || fail "key listed by id is extractable"
    # The public half is readable, as it should be.
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label estc-exp --read-object --type pubkey \
        --label exp-key -o "$SOFTHSM_DIR/pub.der" >/dev/null 2>&1 || fail "public key unreadable"
    openssl pkey -pubin -inform DER -in "$SOFTHSM_DIR/pub.der" -noout || fail "bad public key"
    "$exe" --remove-key "$addr"
    [ "$(softhsm_count_objects estc-exp 1234)" = 0 ] || fail "key pair not removed"
    if "$exe" --remove-key "$addr" 2>"$SOFTHSM_DIR/err"; then
        fail "removing a missing key succeeded"
    fi
    grep -q ESTC_ERR_NOT_FOUND "$SOFTHSM_DIR/err" || fail "missing key: $(cat "$SOFTHSM_DIR/err")"
    ;;
exportable)
    # $3 is the FAKE module: SoftHSM2 that turns CKA_EXTRACTABLE of a key
    # template to TRUE.
    softhsm_init_token estc-fake 1234
    export ESTC_P11_MODULE=$SOFTHSM_MODULE ESTC_P11_TOKEN1=estc-fake ESTC_P11_TOKEN2=estc-fake
    addr="pkcs11:token=estc-fake;object=fake-key;pin-value=1234?module-path=$3"
    if ESTC_FAKE_REAL_MODULE=$SOFTHSM_MODULE "$exe" --make-key "$addr" 2>"$SOFTHSM_DIR/err"; then
        fail "an exportable key was accepted"
    fi
    cat "$SOFTHSM_DIR/err"
    grep -q 'refused: the token made the private key extractable (CKA_EXTRACTABLE)' "$SOFTHSM_DIR/err" ||
        fail "not refused for its attributes: $(cat "$SOFTHSM_DIR/err")"
    n=$(softhsm_count_objects estc-fake 1234)
    [ "$n" = 0 ] || fail "the refused key left $n objects on the token"
    ;;
tpm2-pkcs11 | nss)
    # The conformance suite on a module we did not develop with; every case
    # passes or is skipped with the module's reason, nothing is left.
    out=$(mktemp)
    if [ "$mode" = nss ]; then
        . "$here/../fixtures/nss-softokn.sh"
        nss_start 1234 || exit $?
        trap 'nss_stop; softhsm_stop; rm -f "$out"' EXIT
        count() { nss_count_objects; }
        prefix="pkcs11:token=NSS%20Certificate%20DB;pin-value=1234?module-path=$NSS_MODULE&x-init-reserved=$NSS_INIT"
    else
        . "$here/../fixtures/tpm2-pkcs11.sh"
        tpm2p11_start || exit $?
        trap 'tpm2p11_stop; softhsm_stop; rm -f "$out"' EXIT
        tpm2p11_add_token estc-tpm 1234
        # The module's own leak (see the file), for sanitizer builds; the
        # slow unwinder sees through libcrypto's frames to the module.
        export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$here/lsan-tpm2-pkcs11.supp"
        export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
        count() { tpm2p11_count_objects estc-tpm 1234; }
        prefix="pkcs11:token=estc-tpm;pin-value=1234?module-path=$TPM2P11_MODULE"
    fi
    before=$(count)
    status=0
    "$exe" "$prefix" >"$out" 2>"$out.err" || status=$?
    cat "$out"
    [ "$status" = 0 ] || { tail -20 "$out.err"; rm -f "$out.err"; fail "the suite failed (exit $status)"; }
    rm -f "$out.err"
    grep -q '^PASS no_objects_left_behind (0 before and after)' "$out" ||
        fail "the suite's own count is not 0 before and after"
    grep -q ' passed, [0-9]* skipped, 0 failed$' "$out" || fail "no summary line"
    grep '^SKIP' "$out" | sed 's/^/recorded: /' || true
    after=$(count)
    echo "objects on the token: $before before, $after after"
    [ "$before" = 0 ] && [ "$after" = 0 ] || fail "objects left on the token: $after"
    # Once more without forking: the module initialized once in this
    # process for every case (its templates, its handles after deletions).
    if [ "$mode" = tpm2-pkcs11 ]; then
        CK_FORK=no "$exe" "$prefix" >"$out" 2>/dev/null || { cat "$out"; fail "CK_FORK=no run failed"; }
        tail -n 1 "$out"
        after=$(count)
        [ "$after" = 0 ] || fail "the CK_FORK=no run left $after objects"
    fi
    ;;
valgrind)
    # $exe is estc-engine-test, $3 pkcs11-test: both under memcheck.
    command -v valgrind >/dev/null 2>&1 || { echo "valgrind not installed" >&2; exit 77; }
    vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
    softhsm_init_token estc-vg1 1234
    softhsm_init_token estc-vg2 1234
    "${vg[@]}" "$exe" "pkcs11:token=estc-vg1;pin-value=1234?module-path=$SOFTHSM_MODULE"
    CK_FORK=no ESTC_P11_MODULE=$SOFTHSM_MODULE ESTC_P11_TOKEN1=estc-vg1 ESTC_P11_TOKEN2=estc-vg2 \
        "${vg[@]}" "$3"
    ;;
*)
    echo "usage: $0 conformance|driver|export|exportable|tpm2-pkcs11|nss|valgrind EXECUTABLE..." >&2
    exit 2
    ;;
esac
echo "pkcs11 $mode: ok"
