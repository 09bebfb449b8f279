#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# psa: keys used by real OpenSSL programs through the estc provider module.
# Runs inside run-psa.sh, so the current folder is the private PSA folder;
# everything else (references, CSRs) goes to a folder of its own.
#
#   run-openssl-psa.sh MODULE_DIR KEYTOOL
#
# For EC P-256, P-384 and RSA 2048 keys: openssl req -new with the PEM
# reference and with the address, checked by openssl req -verify; the CSR
# holds the engine's public key; no private key comes out; a missing key
# fails clearly; no PSA file is left behind.
set -euo pipefail

moddir=$1
keytool=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../fixtures/openssl-provider.sh
. "$here/../fixtures/openssl-provider.sh"

provider_init "$moddir"
out=$(mktemp -d "${TMPDIR:-/tmp}/estc-psa-openssl.XXXXXX")
trap 'rm -rf "$out"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

its_files() {
    find . -maxdepth 1 -name '*.psa_its' | wc -l
}

[ "$(its_files)" = 0 ] || fail "the PSA folder is not empty"

n=0
for kt in ec256 ec384 rsa2048; do
    n=$((n + 1))
    addr="psa:key-id=0x4242$n"
    "$keytool" gen "$addr" "$kt"
    file=$(printf '%016x.psa_its' "0x4242$n")
    [ "$(stat -c %a "$file")" = 600 ] || fail "$kt: key file $file not 0600"
    "$keytool" ref "$addr" "$out/ref-$kt.pem"

    provider_csr "$out/ref-$kt.pem" "/CN=psa-ref-$kt" "$out/ref-$kt.csr" ||
        fail "$kt: CSR from the reference does not verify"
    provider_csr "$addr" "/CN=psa-addr-$kt" "$out/addr-$kt.csr" ||
        fail "$kt: CSR from the address does not verify"

    provider_same_pub "$out/ref-$kt.pem" "$out/ref-$kt.csr" || fail "$kt: the CSR holds another key"

    provider_no_private_export "$out/ref-$kt.pem" "$out/priv-$kt"
done
[ "$(its_files)" = 3 ] || fail "expected 3 key files, found $(its_files)"

# A missing key fails, and changes nothing.
if openssl req -new "${P[@]}" -key "psa:key-id=0x42429" -subj /CN=x -out "$out/bad.csr" \
    2>"$out/err-missing"; then
    fail "a CSR from a missing key"
fi
[ "$(its_files)" = 3 ] || fail "a failed request changed the PSA folder"

for i in 1 2 3; do
    "$keytool" remove "psa:key-id=0x4242$i"
done
if "$keytool" remove "psa:key-id=0x42421" 2>"$out/err-remove"; then
    fail "removing a removed key succeeded"
fi
grep -q "ESTC_ERR_NOT_FOUND" "$out/err-remove" || fail "no NOT_FOUND for a removed key"
[ "$(its_files)" = 0 ] || fail "key files left behind"
echo "psa openssl: all checks passed"
