#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Clients killed and restarted on fixed source ports against estc-server:
# SLOTS loops, each on a port of its own, start coap-client-openssl, kill it
# with SIGKILL 0 to 0.1 s later (in its handshake, or after it without a
# close_notify), then time a whole request from the same port. A request
# that fails or takes more than 2.5 s is printed as SLOW (a restarted client
# left unanswered by the server, see docs/estc-server.md); the summary counts
# them. The server runs with WORKERS workers for SECONDS_RUN seconds.
#
#   bench/run-restarts.sh [BUILD_DIR]      (default: build)
# Environment: WORKERS (default 2), SLOTS (default 6), SECONDS_RUN (default 60).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
workers=${WORKERS:-2}
slots=${SLOTS:-6}
seconds=${SECONDS_RUN:-60}
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
. "$src/tests/fixtures/estc-server.sh"
estc_server_start --workers "$workers" || exit 1
trap estc_server_stop EXIT
out=$(mktemp -d)
base=$((20000 + RANDOM % 20000))

slot() {
  local port=$1 end=$(($(date +%s) + seconds)) n=0 slow=0 pid t0 ms trace
  while [ "$(date +%s)" -lt "$end" ]; do
    coap-client-openssl -p "$port" -B 5 -C "$ESTC_SERVER_CA" \
      "$ESTC_SERVER_URI/.well-known/core" >/dev/null 2>&1 &
    pid=$!
    sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    t0=$(date +%s%N)
    trace=$(coap-client-openssl -p "$port" -B 8 -v 6 -C "$ESTC_SERVER_CA" \
      "$ESTC_SERVER_URI/.well-known/core" 2>&1)
    ms=$((($(date +%s%N) - t0) / 1000000))
    n=$((n + 1))
    if ! grep -q 'c:2\.05' <<<"$trace" || [ "$ms" -gt 2500 ]; then
      slow=$((slow + 1))
      echo "SLOW: port $port, request $n: $ms ms"
    fi
  done
  echo "$n $slow" >"$out/$port"
}
pids=()
for i in $(seq 1 "$slots"); do
  slot $((base + i)) &
  pids+=($!)
done
wait "${pids[@]}" # not the server, a child of this shell too
cat "$out"/* | awk -v w="$workers" '{ n += $1; s += $2 }
  END { printf "%d worker(s): %d restarted clients, %d slow or unanswered\n", w, n, s }'
rm -rf "$out"
