#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server under hostile load, in one run on loopback:
#  1. server RSS before and during three 30 MB Block1 pushes at once from
#     clients without a client certificate (tests/server/block1-client);
#  2. the time of a legitimate `estc enroll` with no flood, and during floods
#     of 50 and 200 ClientHellos/s from changing source ports
#     (bench/flood/estc-hello-flood);
#  3. server RSS per idle DTLS session (500 sessions held open).
#
#   bench/run-flood.sh [BUILD_DIR]          (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
flood=$build/bench/flood/estc-hello-flood
b1=$build/tests/server/block1-client
estc=$build/tools/estc/estc
for p in "$flood" "$b1" "$estc" "$ESTC_SERVER_BIN"; do
  [ -x "$p" ] || { echo "build first (server and tests): ninja -C $build ($p missing)" >&2; exit 1; }
done
. "$src/tests/fixtures/estc-server.sh"
. "$src/tests/fixtures/pki.sh"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT
pki_ca "$tmp/mca.key" "$tmp/mca.crt" "/CN=Bench Manufacturer CA" 2
pki_issue "$tmp/mca.key" "$tmp/mca.crt" "$tmp/dev.key" "$tmp/dev.crt" "/CN=bench-device" 1
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$ESTC_SERVER_PID/status"; }
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$ESTC_SERVER_PID/status"; }
now() { date +%s.%N; }
any_alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# The server stops by itself after 600 s; every client below stops by itself too.
ESTC_SERVER_RUNTIME=600 estc_server_start --client-ca "$tmp/mca.crt" --max-sessions 2000
echo "| measure | value |"
echo "|---|---|"
echo "| server RSS before the pushes | $(rss) kB |"
peak=0
# With Size1, as coap-client sends them (libcoap 4.3.1 alone reassembled such a
# body whole before the handler could refuse it; without Size1 it did not).
for i in 1 2 3; do
  timeout 300 "$b1" 127.0.0.1 "$ESTC_SERVER_PORT" "$ESTC_SERVER_CA" est/sen --junk 30000000 \
    >"$tmp/push$i" 2>&1 &
  pids+=($!)
done
# Sampled while the pushes run, and the kernel's high-water mark afterwards.
while any_alive "${pids[@]}"; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.02; done
wait "${pids[@]}" 2>/dev/null || true
pids=()
echo "| server RSS during three 30 MB pushes without a client certificate (sampled peak; VmHWM) | $peak kB; $(hwm) kB |"
echo "| answers to the pushes | $(cat "$tmp"/push* | sort | uniq -c | sed 's/^ *//' | tr '\n' ' ')|"

enroll_time() {
  local n=$1 t0 t1
  rm -rf "$tmp/e$n"; mkdir -p "$tmp/e$n"
  t0=$(now)
  if timeout 120 "$estc" enroll --server "$ESTC_SERVER_URI" --trust "$ESTC_SERVER_CA" \
      --cert "$tmp/dev.crt" --key "$tmp/dev.key" --subject "/CN=bench-$n" \
      --new-key "file:$tmp/e$n/key.pem" --new-cert "file:$tmp/e$n/cert.pem" >"$tmp/e$n.log" 2>&1; then
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f s", b - a }'
  else
    echo "failed"
  fi
}
echo "| enrollment, no flood | $(enroll_time none) |"
for rate in 50 200; do
  # 30 s at most: the flood stops by itself.
  "$flood" 127.0.0.1 "$ESTC_SERVER_PORT" "$rate" 30 >"$tmp/flood$rate" 2>&1 &
  pids+=($!)
  sleep 3
  t=$(enroll_time "f$rate")
  kill -0 "${pids[@]}" 2>/dev/null && on=yes || on=no
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  echo "| enrollment during $rate ClientHellos/s (flood still on at the end: $on) | $t |"
done

before=$(rss)
BLOCK1_HOLD=10 timeout 300 "$b1" 127.0.0.1 "$ESTC_SERVER_PORT" "$ESTC_SERVER_CA" x --sessions 500 >"$tmp/sess" 2>&1 &
pids+=($!)
for _ in $(seq 1 1200); do grep -q sessions "$tmp/sess" 2>/dev/null && break; sleep 0.1; done
after=$(rss)
wait "${pids[@]}" 2>/dev/null || true
pids=()
held=$(sed -n 's/^sessions //p' "$tmp/sess")
[ -n "$held" ] && [ "$held" -gt 0 ] || { echo "no idle session opened" >&2; exit 1; }
echo "| RSS per idle session ($held of 500 held open: $before -> $after kB) | $(( (after - before) * 1024 / held )) bytes |"
