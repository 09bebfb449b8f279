#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per enrollment, counted by callgrind: steady on a busy
# machine where CPU times are not. Three lines:
#   - estc-server --workers 1 under callgrind, driven by estc-load (the
#     counters zeroed after WARMUP enrollments, dumped after COUNT);
#   - estc-floor (bench/floor), the same enrollment in OpenSSL alone, with
#     the server's CA and credentials: the server thread's instructions, the
#     difference of a run of WARMUP+COUNT and one of WARMUP enrollments;
#   - estc-floor --tickets (a session ticket per handshake).
#
#   bench/run-callgrind.sh [BUILD_DIR]          (default: build)
# Environment: COUNT (default 100), WARMUP (default 20), CLIENTS (estc-load's
# concurrent clients, default 4), INDEX_LINES (serials put in the server's
# index.txt before it starts, default 0), LOAD_ARGS (more estc-load options,
# e.g. --no-ticket).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
count=${COUNT:-100}
warmup=${WARMUP:-20}
clients=${CLIENTS:-4}
index_lines=${INDEX_LINES:-0}
load=$build/bench/load/estc-load
floor=$build/bench/floor/estc-floor
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-1800}
for p in "$load" "$floor" "$ESTC_SERVER_BIN"; do
  [ -x "$p" ] || { echo "build first: ninja -C $build ($p missing)" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is missing" >&2; exit 1; }

. "$src/tests/fixtures/estc-server.sh"
. "$src/tests/fixtures/pki.sh"
tmp=$(mktemp -d)
cleanup() {
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

pki_idevid "$tmp" "/CN=Load IDevID CA" "/CN=load-device"
ESTC_SERVER_STATE=$tmp/server
mkdir -m 700 "$ESTC_SERVER_STATE" "$ESTC_SERVER_STATE/state"
if [ "$index_lines" -gt 0 ]; then
  python3 - "$index_lines" >"$ESTC_SERVER_STATE/state/index.txt" <<'EOF'
import os, sys
for i in range(int(sys.argv[1])):
    b = bytearray(os.urandom(16))
    b[0] = (b[0] & 0x7f) | 0x40
    print(f"{b.hex().upper()}\t20991231000000Z\t/CN=earlier-{i}")
EOF
fi

# Instructions in a callgrind output file (all threads, or one: FILE-NN).
totals() { awk '/^totals:/ {print $2}' "$1"; }

export ESTC_SERVER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$tmp/server.cg"
estc_server_start --client-ca "$tmp/idevid-ca.pem" --workers 1 >/dev/null
common=(--port "$ESTC_SERVER_PORT" --ca "$ESTC_SERVER_CA" --cert "$tmp/device.pem"
  --key "$tmp/device.key" --op-times 1,1,1 --max-seconds 1800 ${LOAD_ARGS:-})
"$load" "${common[@]}" --clients "$clients" --count "$warmup" >/dev/null
callgrind_control -z "$ESTC_SERVER_PID" >/dev/null 2>&1
"$load" "${common[@]}" --clients "$clients" --count "$count" >"$tmp/load.txt" ||
  { cat "$tmp/load.txt" >&2; exit 1; }
callgrind_control -d "$ESTC_SERVER_PID" >/dev/null 2>&1
sleep 1
dump=$(ls -t "$tmp"/server.cg.* | head -1)
server=$(($(totals "$dump") / count))

st=$ESTC_SERVER_STATE/state
floor_run() { # N OUT [ARGS]
  local n=$1 out=$2
  shift 2
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" "$floor" \
    --ca-cert "$st/ca.crt" --ca-key "$st/ca.key" --server-cert "$st/server.crt" \
    --server-key "$st/server.key" --client-ca "$tmp/idevid-ca.pem" --cert "$tmp/device.pem" \
    --key "$tmp/device.key" --warmup "$warmup" --count "$n" "$@" >/dev/null 2>&1
}
floor_per() { # [ARGS]: the server thread (thread 1) per enrollment
  floor_run 1 "$tmp/f1.cg" "$@"
  floor_run $((count + 1)) "$tmp/f2.cg" "$@"
  echo $((($(totals "$tmp/f2.cg-01") - $(totals "$tmp/f1.cg-01")) / count))
}
fl=$(floor_per)
flt=$(floor_per --tickets)

python3 - "$server" "$fl" "$flt" "$count" "$index_lines" "${LOAD_ARGS:-}" <<'EOF'
import sys
server, fl, flt = (int(x) for x in sys.argv[1:4])
count, index, args = sys.argv[4], sys.argv[5], sys.argv[6]
print(f"instructions per enrollment (callgrind, {count} enrollments; server index "
      f"{index} lines before; estc-load {args or 'defaults'})")
print(f"  estc-server --workers 1      {server / 1e6:7.2f} M   {100 * fl / server:5.1f} % of the floor")
print(f"  floor (estc-floor)           {fl / 1e6:7.2f} M")
print(f"  floor with session tickets   {flt / 1e6:7.2f} M")
EOF
