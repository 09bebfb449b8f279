#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Operations per second of key generation and signing through the estc
# engine API versus the engine's native API, as a table with the ratio.
#
#   bench/run-engine-ops.sh [BUILD_DIR]      (default: build)
#
# The software drivers are compared with OpenSSL EVP; every other driver
# with a bench/engine-ops/<driver>.sh brings its own peer (SoftHSM2, swtpm,
# a PSA folder) and its native program. Environment: KEYGENS, SIGNS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
export ESTC_BUILD_ROOT=$build
export BENCH_ENGINE_OPS=$build/bench/engine-ops/estc-bench-engine-ops
export KEYGENS=${KEYGENS:-30} SIGNS=${SIGNS:-300}
[ -x "$BENCH_ENGINE_OPS" ] || { echo "build first: meson setup $build && ninja -C $build" >&2; exit 1; }

rows=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$rows" "$work"' EXIT

"$BENCH_ENGINE_OPS" mem: --keygens "$KEYGENS" --signs "$SIGNS" --native-openssl >>"$rows"
"$BENCH_ENGINE_OPS" "file:$work/" --keygens "$KEYGENS" --signs "$SIGNS" | \
  sed 's/^file\t/file\t/' >>"$rows"
# file: keys go through OpenSSL too: the native column is the same EVP run.
awk -F'\t' '$1=="mem" && $3=="native" {print "file\t" $2 "\tnative\t" $4}' "$rows" >>"$rows.tmp" || true
cat "$rows.tmp" >>"$rows" 2>/dev/null; rm -f "$rows.tmp"

for script in "$here"/engine-ops/*.sh; do
  [ -e "$script" ] || continue
  echo "running $(basename "$script") ..." >&2
  bash "$script" >>"$rows" || echo "$(basename "$script") failed; its rows are missing" >&2
done

python3 - "$rows" <<'PY'
import sys
data = {}
order = []
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 4:
        continue
    drv, op, path, ops = parts
    key = (drv, op)
    if key not in data:
        data[key] = {}
        order.append(key)
    data[key][path] = float(ops)
print(f"{'driver':<8} {'operation':<16} {'engine ops/s':>13} {'native ops/s':>13} {'engine/native':>14}")
for drv, op in order:
    d = data[(drv, op)]
    e, n = d.get("engine"), d.get("native")
    ratio = f"{e / n:.2f}" if e and n else "-"
    fe = f"{e:.1f}" if e is not None else "-"
    fn = f"{n:.1f}" if n is not None else "-"
    print(f"{drv:<8} {op:<16} {fe:>13} {fn:>13} {ratio:>14}")
PY
