#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# psa: engine versus direct PSA Crypto calls (mbed TLS). mbed TLS keeps its
# key files in the current folder, so both run in a private temporary
# folder, removed afterwards. Run by bench/run-engine-ops.sh, which sets
# ESTC_BUILD_ROOT, BENCH_ENGINE_OPS, KEYGENS and SIGNS.
set -euo pipefail
build=${ESTC_BUILD_ROOT:?}
native=$build/bench/engine-ops/psa/estc-bench-native-psa
[ -x "$native" ] || { echo "psa.sh: $native not built (psa disabled?)" >&2; exit 1; }
keygens=${KEYGENS:-30}
signs=${SIGNS:-300}

work=$(mktemp -d "${TMPDIR:-/tmp}/estc-psa-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
cd "$work"

"${BENCH_ENGINE_OPS:?}" "psa:" --keygens "$keygens" --signs "$signs"
"$native" --keygens "$keygens" --signs "$signs"
if [ -n "$(ls -A)" ]; then
    echo "psa.sh: the bench left PSA files behind:" >&2
    ls -A >&2
    exit 1
fi
