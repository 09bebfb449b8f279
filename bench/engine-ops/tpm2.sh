#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# tpm2: engine versus direct ESAPI calls, against a swtpm started in a
# temporary folder and stopped by PID. Sourced by bench/run-engine-ops.sh
# (tpm2_start; tpm2_run engine|native TYPE ...; tpm2_stop). A software TPM
# generates keys slowly: TPM2_KEYGENS and TPM2_SIGNS (default at most 10
# and 200) keep the counts modest. One program at a time: swtpm serves one
# connection.
tpm2__here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tpm2_start() {
    tpm2__native=$ESTC_BUILD_ROOT/bench/engine-ops/tpm2/estc-bench-native-tpm2
    [ -x "$tpm2__native" ] || { echo "tpm2.sh: $tpm2__native not built" >&2; return 1; }
    tpm2__keygens=${TPM2_KEYGENS:-$((KEYGENS < 10 ? KEYGENS : 10))}
    tpm2__signs=${TPM2_SIGNS:-$((SIGNS < 200 ? SIGNS : 200))}
    # shellcheck source=../../tests/fixtures/swtpm.sh
    . "$tpm2__here/../../tests/fixtures/swtpm.sh"
    swtpm_start
}

tpm2_run() {
    if [ "$1" = engine ]; then
        "$BENCH_ENGINE_OPS" "tpm2:" --keygens "$tpm2__keygens" --signs "$tpm2__signs" --only "$2"
    else
        "$tpm2__native" --keygens "$tpm2__keygens" --signs "$tpm2__signs" --only "$2"
    fi
}

tpm2_stop() {
    swtpm_stop
}
