#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pkcs11: engine versus direct C_GenerateKeyPair / C_Sign on the same module,
# against a SoftHSM2 token made here in a temporary folder and removed
# afterwards. Run by bench/run-engine-ops.sh, which sets ESTC_BUILD_ROOT,
# BENCH_ENGINE_OPS, KEYGENS and SIGNS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${ESTC_BUILD_ROOT:?}
native=$build/bench/engine-ops/pkcs11/estc-bench-native-pkcs11
[ -x "$native" ] || { echo "pkcs11.sh: $native not built (pkcs11 disabled?)" >&2; exit 1; }

# shellcheck source=../../tests/fixtures/softhsm.sh
. "$here/../../tests/fixtures/softhsm.sh"
softhsm_start
trap softhsm_stop EXIT
softhsm_init_token estc-bench 1234

"${BENCH_ENGINE_OPS:?}" "pkcs11:token=estc-bench;pin-value=1234?module-path=$SOFTHSM_MODULE" \
    --keygens "${KEYGENS:-30}" --signs "${SIGNS:-300}"
"$native" --module "$SOFTHSM_MODULE" --token estc-bench --pin 1234 \
    --keygens "${KEYGENS:-30}" --signs "${SIGNS:-300}"
