#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tpm2: engine versus direct ESAPI calls, against a swtpm started here in a
# temporary folder and stopped by PID. Run by bench/run-engine-ops.sh, which
# sets ESTC_BUILD_ROOT, BENCH_ENGINE_OPS, KEYGENS and SIGNS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${ESTC_BUILD_ROOT:?}
native=$build/bench/engine-ops/tpm2/estc-bench-native-tpm2
[ -x "$native" ] || { echo "tpm2.sh: $native not built (tpm2 disabled?)" >&2; exit 1; }
# A software TPM generates keys slowly: keep the counts modest by default.
keygens=${TPM2_KEYGENS:-$(( ${KEYGENS:-30} < 10 ? ${KEYGENS:-30} : 10 ))}
signs=${TPM2_SIGNS:-$(( ${SIGNS:-300} < 200 ? ${SIGNS:-300} : 200 ))}

# shellcheck source=../../tests/fixtures/swtpm.sh
. "$here/../../tests/fixtures/swtpm.sh"
swtpm_start
trap swtpm_stop EXIT

# One program at a time: swtpm serves one connection.
"${BENCH_ENGINE_OPS:?}" "tpm2:" --keygens "$keygens" --signs "$signs"
"$native" --keygens "$keygens" --signs "$signs"
