#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# pkcs11: engine versus direct C_GenerateKeyPair / C_SignInit + C_Sign on
# the same module, against a SoftHSM2 token made in a temporary folder and
# removed afterwards. Sourced by bench/run-engine-ops.sh, which sets
# ESTC_BUILD_ROOT, BENCH_ENGINE_OPS, KEYGENS and SIGNS and calls
#   pkcs11_start; pkcs11_run engine|native TYPE ...; pkcs11_stop
pkcs11__here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pkcs11_start() {
    pkcs11__native=$ESTC_BUILD_ROOT/bench/engine-ops/pkcs11/estc-bench-native-pkcs11
    [ -x "$pkcs11__native" ] || { echo "pkcs11.sh: $pkcs11__native not built" >&2; return 1; }
    # shellcheck source=../../tests/fixtures/softhsm.sh
    . "$pkcs11__here/../../tests/fixtures/softhsm.sh"
    softhsm_start && softhsm_init_token estc-bench 1234
}

pkcs11_run() {
    if [ "$1" = engine ]; then
        "$BENCH_ENGINE_OPS" "pkcs11:token=estc-bench;pin-value=1234?module-path=$SOFTHSM_MODULE" \
            --keygens "$KEYGENS" --signs "$SIGNS" --only "$2"
    else
        "$pkcs11__native" --module "$SOFTHSM_MODULE" --token estc-bench --pin 1234 \
            --keygens "$KEYGENS" --signs "$SIGNS" --only "$2"
    fi
}

pkcs11_stop() {
    softhsm_stop
}
