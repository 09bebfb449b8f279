#!/usr/bin/env bash
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

moddir=$(cd "$1" && pwd)
keytool=$2

# ldd's output is read whole: under pipefail `ldd | grep -q` can fail when
# grep's early exit breaks the pipe, and the preload would silently be lost.
moddeps=$(ldd "$moddir/estc.so")
if [[ $moddeps == *libasan* ]]; then
    LD_PRELOAD=$(printf '%s\n' "$moddeps" | awk '/libasan|libubsan/ { printf "%s ", $3 }')
    export LD_PRELOAD ASAN_OPTIONS=detect_leaks=0
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/estc-psa-openssl.XXXXXX")
trap 'rm -rf "$out"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

its_files() {
    find . -maxdepth 1 -name '*.psa_its' | wc -l
}

P=(-provider-path "$moddir" -provider estc -provider default -propquery '?provider=default')
[ "$(its_files)" = 0 ] || fail "the PSA folder is not empty"

n=0
for kt in ec256 ec384 rsa2048; do
    n=$((n + 1))
    addr="psa:key-id=0x4242$n"
    "$keytool" gen "$addr" "$kt"
    file=$(printf '%016x.psa_its' "0x4242$n")
    [ "$(stat -c %a "$file")" = 600 ] || fail "$kt: key file $file not 0600"
    "$keytool" ref "$addr" "$out/ref-$kt.pem"

    openssl req -new "${P[@]}" -key "$out/ref-$kt.pem" -subj "/CN=psa-ref-$kt" \
        -out "$out/ref-$kt.csr"
    openssl req -verify -noout -in "$out/ref-$kt.csr" 2>&1 | grep -q "verify OK" ||
        fail "$kt: CSR from the reference does not verify"
    openssl req -new "${P[@]}" -key "$addr" -subj "/CN=psa-addr-$kt" -out "$out/addr-$kt.csr"
    openssl req -verify -noout -in "$out/addr-$kt.csr" 2>&1 | grep -q "verify OK" ||
        fail "$kt: CSR from the address does not verify"

    openssl pkey "${P[@]}" -in "$out/ref-$kt.pem" -pubout -out "$out/pub-$kt.pem"
    openssl req -in "$out/ref-$kt.csr" -pubkey -noout >"$out/csrpub-$kt.pem"
    cmp -s "$out/pub-$kt.pem" "$out/csrpub-$kt.pem" || fail "$kt: the CSR holds another key"

    for fmt in PEM DER; do
        if openssl pkey "${P[@]}" -in "$out/ref-$kt.pem" -outform "$fmt" \
            -out "$out/priv-$kt" 2>/dev/null; then
            fail "$kt: openssl pkey wrote the private key ($fmt)"
        fi
        [ ! -s "$out/priv-$kt" ] || fail "$kt: private key bytes written ($fmt)"
    done
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
