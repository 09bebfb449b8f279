#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Throughput of estc-server on this machine: estc-load (bench/load) drives it
# with many concurrent clients on loopback, each enrollment a DTLS handshake
# of its own with a device certificate and a CSR of a fresh P-256 key, once
# with one worker and once with WORKERS workers. Each run prints
# enrollments/s, p50/p99 latency, the busy share of each CPU, the CPU time
# of the server and of the load generator per enrollment, and the crypto
# bound of the server (cores / (2 sign + 3 verify + 1 ECDH), P-256) from
# `openssl speed` measured in the same run.
#
#   bench/run-load.sh [BUILD_DIR]          (default: build)
# Environment: WORKERS (default: online CPUs), CLIENTS (concurrent clients,
# default 16), COUNT (enrollments per run, default 1500), SPEED_SECONDS
# (openssl speed time per operation, default 2).
# The load generator runs on the same machine: what it uses is not the
# server's. The "server-CPU rate" line divides the cores by the server's CPU
# time per enrollment: the rate the server would reach with the machine to
# itself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
workers=${WORKERS:-$(nproc)}
clients=${CLIENTS:-16}
count=${COUNT:-1500}
speed_s=${SPEED_SECONDS:-2}
load=$build/bench/load/estc-load
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-900}
for p in "$load" "$ESTC_SERVER_BIN"; do
  [ -x "$p" ] || { echo "build first (with the server): ninja -C $build ($p missing)" >&2; exit 1; }
done

. "$src/tests/fixtures/estc-server.sh"
. "$src/tests/fixtures/pki.sh"
tmp=$(mktemp -d)
cleanup() {
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "machine: $(nproc) online CPUs, $(uname -r); before: $(uptime | sed 's/.*load/load/')"
# The bound, from openssl speed (one core): t = 1 / (operations per second).
openssl speed -seconds "$speed_s" ecdsap256 ecdhp256 >"$tmp/speed.txt" 2>/dev/null
read -r sign_s verify_s < <(awk '/ecdsa \(nistp256\)/ {print $(NF-1), $NF}' "$tmp/speed.txt")
ecdh_s=$(awk '/ecdh +\(nistp256\)/ {print $NF}' "$tmp/speed.txt")
if [ -z "$sign_s" ] || [ -z "$verify_s" ] || [ -z "$ecdh_s" ]; then
  echo "cannot read openssl speed's output" >&2
  cat "$tmp/speed.txt" >&2
  exit 1
fi
op_times=$(python3 -c "print(f'{1e6/$sign_s:.2f},{1e6/$verify_s:.2f},{1e6/$ecdh_s:.2f}')")
echo "openssl speed (one core): ecdsa p256 sign/s $sign_s verify/s $verify_s, ecdh p256 op/s $ecdh_s"

pki_idevid "$tmp" "/CN=Load IDevID CA" "/CN=load-device"

run() { # WORKERS
  estc_server_start --client-ca "$tmp/idevid-ca.pem" --workers "$1" >/dev/null
  common=(--port "$ESTC_SERVER_PORT" --ca "$ESTC_SERVER_CA" --cert "$tmp/device.pem"
    --key "$tmp/device.key" --op-times "$op_times" --max-seconds 600)
  # Warm-up: the server's first sessions and allocations.
  "$load" "${common[@]}" --clients "$clients" --count 50 >/dev/null
  echo
  echo "== estc-server --workers $1: $count enrollments, $clients concurrent clients"
  "$load" "${common[@]}" --clients "$clients" --count "$count" --server-pid "$ESTC_SERVER_PID" |
    sed 's/^/  /'
  estc_server_stop
}

run 1
[ "$workers" -eq 1 ] || run "$workers"
echo
echo "after: $(uptime | sed 's/.*load/load/')"
