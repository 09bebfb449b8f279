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
# Then the floor: estc-floor (bench/floor) does what one enrollment needs
# from OpenSSL and nothing else (DTLS 1.2 handshake with client certificate,
# CSR parse and verify, issuing) with the same keys and certificates, and
# the summary table puts the server's CPU time per enrollment next to it:
# its share of the floor and of the openssl-speed bound.
#
#   bench/run-load.sh [BUILD_DIR]          (default: build)
# Environment: WORKERS (default: online CPUs), CLIENTS (concurrent clients,
# default 16), COUNT (enrollments per run, default 1500), SPEED_SECONDS
# (openssl speed time per operation, default 2), FLOOR_COUNT (enrollments
# of estc-floor, default 500).
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
floor_count=${FLOOR_COUNT:-500}
load=$build/bench/load/estc-load
floor=$build/bench/floor/estc-floor
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-900}
for p in "$load" "$floor" "$ESTC_SERVER_BIN"; do
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

# The floor, with the server's own CA and credentials (the server idle).
floor_run() {
  local st=$ESTC_SERVER_STATE/state
  echo
  echo "== estc-floor: $floor_count enrollments in OpenSSL alone, the server's CPU"
  "$floor" --ca-cert "$st/ca.crt" --ca-key "$st/ca.key" --server-cert "$st/server.crt" \
    --server-key "$st/server.key" --client-ca "$tmp/idevid-ca.pem" --cert "$tmp/device.pem" \
    --key "$tmp/device.key" --count "$floor_count" >"$tmp/floor.txt"
  grep -v '^floor-ms' "$tmp/floor.txt" | sed 's/^/  /'
}

run() { # WORKERS
  estc_server_start --client-ca "$tmp/idevid-ca.pem" --workers "$1" >/dev/null
  [ -s "$tmp/floor.txt" ] || floor_run
  common=(--port "$ESTC_SERVER_PORT" --ca "$ESTC_SERVER_CA" --cert "$tmp/device.pem"
    --key "$tmp/device.key" --op-times "$op_times" --max-seconds 600)
  # Warm-up: the server's first sessions and allocations.
  "$load" "${common[@]}" --clients "$clients" --count 50 >/dev/null
  echo
  echo "== estc-server --workers $1: $count enrollments, $clients concurrent clients"
  "$load" "${common[@]}" --clients "$clients" --count "$count" --server-pid "$ESTC_SERVER_PID" \
    >"$tmp/load-$1.txt"
  sed 's/^/  /' "$tmp/load-$1.txt"
  estc_server_stop
}

run 1
[ "$workers" -eq 1 ] || run "$workers"

# Summary: CPU time per enrollment against the floor and the crypto bound.
ossl=$(openssl version | awk '{split($2, v, "."); print v[1] "." v[2]}')
cols=(1)
[ "$workers" -eq 1 ] || cols+=("$workers")
python3 - "$tmp" "$(nproc)" "$ossl" "${cols[@]}" <<'EOF'
import re, sys
tmp, cores, ossl, cols = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def field(text, name):
    m = re.search(r'^' + re.escape(name) + r'\s+([0-9.]+)', text, re.M)
    return float(m.group(1)) if m else None
floor = open(f'{tmp}/floor.txt').read()
fl = [float(x) for x in re.search(r'^floor-ms (.*)$', floor, re.M).group(1).split()]
rows = []
crypto = None
for w in cols:
    t = open(f'{tmp}/load-{w}.txt').read()
    crypto = field(t, 'crypto/enrollment')
    rows.append((f'estc-server --workers {w}', field(t, 'server CPU')))
rows.append((f'OpenSSL {ossl} floor', fl[4]))
print()
print(f'== summary: server CPU per enrollment; crypto {crypto:.3f} ms (openssl speed), {cores} cores')
print(f'  {"":28} {"ms":>7} {"rate/s":>8} {"of bound":>9} {"of floor":>9}')
for name, ms in rows:
    if ms is None:
        print(f'  {name:28} (no server CPU time)')
        continue
    print(f'  {name:28} {ms:7.3f} {cores / ms * 1e3:8.0f} {100 * crypto / ms:8.1f}% '
          f'{100 * fl[4] / ms:8.1f}%')
print(f'  floor split: handshake {fl[0]:.3f} ms, CSR parse+verify {fl[1]:.3f} ms, '
      f'issuing {fl[2]:.3f} ms, records {fl[3]:.3f} ms')
EOF
echo
echo "after: $(uptime | sed 's/.*load/load/')"
