#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# PKCS#11 driver tests on fresh SoftHSM2 tokens in a temporary folder.
#
#   run-tests.sh conformance ESTC_ENGINE_TEST   the conformance suite; the token
#                                               must hold no object afterwards
#   run-tests.sh driver PKCS11_TEST             the Check tests (two tokens)
#   run-tests.sh export PKCS11_TEST             a key made by the driver cannot
#                                               be read out with OpenSC's pkcs11-tool
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
valgrind)
    # $exe is estc-engine-test, $3 pkcs11-test: both under memcheck.
    command -v valgrind >/dev/null 2>&1 || { echo "valgrind not installed" >&2; exit 77; }
    vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
        --suppressions="$ESTC_SOURCE_ROOT/tests/fixtures/valgrind-ld.supp")
    softhsm_init_token estc-vg1 1234
    softhsm_init_token estc-vg2 1234
    "${vg[@]}" "$exe" "pkcs11:token=estc-vg1;pin-value=1234?module-path=$SOFTHSM_MODULE"
    CK_FORK=no ESTC_P11_MODULE=$SOFTHSM_MODULE ESTC_P11_TOKEN1=estc-vg1 ESTC_P11_TOKEN2=estc-vg2 \
        "${vg[@]}" "$3"
    ;;
*)
    echo "usage: $0 conformance|driver|export|valgrind EXECUTABLE..." >&2
    exit 2
    ;;
esac
echo "pkcs11 $mode: ok"
