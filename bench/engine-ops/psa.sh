#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# psa: engine versus direct PSA Crypto calls (mbed TLS). mbed TLS keeps its
# key files in the current folder, so every run gets a private temporary
# folder, removed afterwards (a file left behind fails the run). Sourced by
# bench/run-engine-ops.sh (psa_start; psa_run engine|native TYPE ...; psa_stop).

psa_start() {
    psa__native=$ESTC_BUILD_ROOT/bench/engine-ops/psa/estc-bench-native-psa
    [ -x "$psa__native" ] || { echo "psa.sh: $psa__native not built" >&2; return 1; }
}

psa_run() {
    local work rc=0
    work=$(mktemp -d "${TMPDIR:-/tmp}/estc-psa-bench.XXXXXX") || return 1
    chmod 700 "$work"
    if [ "$1" = engine ]; then
        (cd "$work" && "$BENCH_ENGINE_OPS" "psa:" --keygens "$KEYGENS" --signs "$SIGNS" --only "$2") || rc=1
    else
        (cd "$work" && "$psa__native" --keygens "$KEYGENS" --signs "$SIGNS" --only "$2") || rc=1
    fi
    if [ -n "$(ls -A "$work")" ]; then
        echo "psa.sh: the bench left PSA files behind" >&2
        rc=1
    fi
    rm -rf "$work"
    return $rc
}

psa_stop() {
    :
}
