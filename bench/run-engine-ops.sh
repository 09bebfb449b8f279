#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Key generation and signing per second, and peak RSS, through the estc
# engine API versus each engine's native API, as one table with the ratio,
# plus the .text size of the EST core.
#
#   bench/run-engine-ops.sh [BUILD_DIR]      (default: build)
#
# Environment: ROUNDS (default 5), KEYGENS (30), SIGNS (300), DRIVERS (the
# drivers to run, default "mem file pkcs11 tpm2 psa"), TYPES (default
# "p256 p384 rsa2048").
#
# Every (driver, key type, side) is its own process, so its peak RSS is its
# own; engine and native runs alternate (which goes first flips every
# round) and the rounds interleave all drivers, so a load that comes and
# goes on the machine hits both sides alike. The table shows the median of
# the rounds. The software drivers are compared with OpenSSL EVP; pkcs11
# with SoftHSM2 through raw C_GenerateKeyPair / C_Sign; tpm2 with swtpm
# through raw ESAPI; psa with raw psa_* calls (mbed TLS).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
export ESTC_BUILD_ROOT=$build
export BENCH_ENGINE_OPS=$build/bench/engine-ops/estc-bench-engine-ops
# The plug-in drivers (tpm2:, psa:, ...) of this build, not installed ones.
export ESTC_ENGINE_DIR=${ESTC_ENGINE_DIR:-$build/engines/plugins}
export KEYGENS=${KEYGENS:-30} SIGNS=${SIGNS:-300}
rounds=${ROUNDS:-5}
drivers=${DRIVERS:-mem file pkcs11 tpm2 psa}
types=${TYPES:-p256 p384 rsa2048}
[ -x "$BENCH_ENGINE_OPS" ] || { echo "build first: meson setup $build && ninja -C $build" >&2; exit 1; }

rows=$(mktemp)
work=$(mktemp -d)
started=()
cleanup() {
    local d
    for d in "${started[@]}"; do "${d}_stop" || true; done
    rm -rf "$rows" "$work"
}
trap cleanup EXIT

# The software drivers: the engine through mem: or file:, the native side
# OpenSSL EVP (for file: too: its keys are OpenSSL keys in PEM files).
mem_start() { :; }
mem_stop() { :; }
mem_run() {
    if [ "$1" = engine ]; then
        "$BENCH_ENGINE_OPS" mem: --keygens "$KEYGENS" --signs "$SIGNS" --only "$2"
    else
        "$BENCH_ENGINE_OPS" mem: --keygens "$KEYGENS" --signs "$SIGNS" --only "$2" \
            --native-openssl-only
    fi
}
file_start() { mkdir -p "$work/file"; }
file_stop() { :; }
file_run() {
    if [ "$1" = engine ]; then
        "$BENCH_ENGINE_OPS" "file:$work/file/" --keygens "$KEYGENS" --signs "$SIGNS" --only "$2"
    else
        "$BENCH_ENGINE_OPS" "file:$work/file/" --keygens "$KEYGENS" --signs "$SIGNS" \
            --only "$2" --native-openssl-only
    fi
}

active=()
for d in $drivers; do
    case $d in
    mem | file) ;;
    *)
        if [ ! -e "$here/engine-ops/$d.sh" ]; then
            echo "no bench/engine-ops/$d.sh: $d skipped" >&2
            continue
        fi
        # shellcheck disable=SC1090
        . "$here/engine-ops/$d.sh"
        ;;
    esac
    if "${d}_start"; then
        started+=("$d")
        active+=("$d")
    else
        echo "$d: its peer did not start; its rows are missing" >&2
    fi
done

for ((r = 1; r <= rounds; r++)); do
    echo "round $r of $rounds ..." >&2
    for d in "${active[@]}"; do
        for t in $types; do
            if (((r + ${#t}) % 2)); then order="engine native"; else order="native engine"; fi
            for side in $order; do
                # Rows: driver op side ops/s rss; a file: native row is
                # printed as "file" by the program itself.
                "${d}_run" "$side" "$t" >>"$rows" ||
                    echo "$d $side $t failed in round $r" >&2
            done
        done
    done
done

# The EST core's code: .text of the core layer's objects and of the whole
# library (engines, provider and core together).
core_text=$(size -t "$build/libestc-core.a" 2>/dev/null | awk 'END {print $1}')
lib_text=$(size -A "$build/libestc.so" 2>/dev/null | awk '$1 == ".text" {print $2}')

python3 - "$rows" "$rounds" "${core_text:-?}" "${lib_text:-?}" <<'PY'
import statistics
import sys

rows, rounds, core_text, lib_text = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ops, rss, order = {}, {}, []
for line in open(rows):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        continue
    drv, op, side, v, kb = parts
    key = (drv, op)
    if key not in ops:
        ops[key] = {"engine": [], "native": []}
        rss[key] = {"engine": [], "native": []}
        order.append(key)
    ops[key][side].append(float(v))
    rss[key][side].append(int(kb))


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, f="{:.1f}"):
    return f.format(x) if x is not None else "-"


print(f"median of {rounds} interleaved rounds; peak RSS in KiB")
hdr = ("op", "engine", "estc ops/s", "native ops/s", "ratio", "RSS estc", "RSS native", "RSS ratio")
print(f"{hdr[0]:<16} {hdr[1]:<7} {hdr[2]:>11} {hdr[3]:>12} {hdr[4]:>6} {hdr[5]:>9} {hdr[6]:>10} {hdr[7]:>9}")
for drv, op in order:
    o, m = ops[(drv, op)], rss[(drv, op)]
    e, n = med(o["engine"]), med(o["native"])
    re, rn = med(m["engine"]), med(m["native"])
    ratio = fmt(e / n if e and n else None, "{:.2f}")
    rratio = fmt(re / rn if re and rn else None, "{:.2f}")
    print(f"{op:<16} {drv:<7} {fmt(e):>11} {fmt(n):>12} {ratio:>6} {fmt(re, '{:.0f}'):>9} "
          f"{fmt(rn, '{:.0f}'):>10} {rratio:>9}")
print(f"EST core .text: {core_text} bytes (libestc-core.a); whole libestc.so .text: {lib_text} bytes")
PY
