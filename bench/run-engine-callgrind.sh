#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per pkcs11 signature, estc against raw C_SignInit + C_Sign on
# SoftHSM2, counted by callgrind: steady where CPU times on a shared
# machine are not. Each side runs twice (one key generation, then S1 and S2
# signatures); the difference, less C_GenerateKeyPair, divided by S2 - S1
# is one signature, with process start and key generation taken out.
#
#   bench/run-engine-callgrind.sh [BUILD_DIR]      (default: build)
#
# Environment: TYPE (p256, p384 or rsa2048; default p256), S1 (100), S2
# (1100), KEEP (a folder to keep the callgrind.out files in, for
# callgrind_annotate; default: removed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
type=${TYPE:-p256}
s1=${S1:-100}
s2=${S2:-1100}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 77; }
eo=$build/bench/engine-ops/estc-bench-engine-ops
native=$build/bench/engine-ops/pkcs11/estc-bench-native-pkcs11
if [ ! -x "$eo" ] || [ ! -x "$native" ]; then
    echo "build first (with the pkcs11 driver)" >&2
    exit 1
fi
export ESTC_ENGINE_DIR=${ESTC_ENGINE_DIR:-$build/engines/plugins}

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
# shellcheck source=../tests/fixtures/softhsm.sh
. "$here/../tests/fixtures/softhsm.sh"
softhsm_start
cleanup() {
    softhsm_stop
    [ -n "${KEEP:-}" ] || rm -rf "$out"
}
trap cleanup EXIT
softhsm_init_token estc-bench 1234

count() { # side signatures: the instructions callgrind collected
    local side=$1 n=$2
    local cmd
    if [ "$side" = estc ]; then
        cmd=("$eo" "pkcs11:token=estc-bench;pin-value=1234?module-path=$SOFTHSM_MODULE")
    else
        cmd=("$native" --module "$SOFTHSM_MODULE" --token estc-bench --pin 1234)
    fi
    valgrind --tool=callgrind --callgrind-out-file="$out/$side-$n.out" \
        "${cmd[@]}" --keygens 1 --signs "$n" --only "$type" >/dev/null 2>"$out/$side-$n.log"
    # Less the key generation: its cost varies from key to key (RSA's
    # prime search by millions of instructions).
    local total keygen
    total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$side-$n.log")
    keygen=$(callgrind_annotate --inclusive=yes --threshold=100 "$out/$side-$n.out" 2>/dev/null |
        awk '/:C_GenerateKeyPair / {gsub(",", "", $1); print $1; exit}')
    echo $((total - ${keygen:-0}))
}

for side in estc native; do
    a=$(count "$side" "$s1")
    b=$(count "$side" "$s2")
    echo "$side $type: $(((b - a) / (s2 - s1))) instructions per signature"
done
