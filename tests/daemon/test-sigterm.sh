#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# SIGTERM ends `estc run` while a renewal waits on the network: during a
# 5.03 Max-Age pause and during DTLS retransmissions to a server that never
# answers. The operation rolls back (no key left), the state stays readable,
# the cancelled attempt counts as no failure, and the next run enrolls.
. "$(dirname "$0")/common.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
# The first enrollment request of each client gets 5.03 with Max-Age 250.
start_server --validity 600 --dedup-window 0 --delay-first 1 --max-age 250
mkdir -m 700 "$T/dev"
RUN=(--state "$T/state" "${NET[@]}" "${BOOT[@]}" --subject /CN=daemon-t
  --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem" --retry-spacing 1
  --max-wait 300)

# exits_within PID SECONDS: the process is gone within SECONDS; RC its status.
# A wait far below the 250 s pause (or the 60 s exchange time-out) is the
# point: without cancellation the daemon sleeps the whole pause.
exits_within() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1" 2>/dev/null
      RC=$?
      DAEMON_PIDS=()
      return 0
    fi
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  DAEMON_PIDS=()
  RC=137
  return 1
}

# 1. SIGTERM during the 5.03 pause.
start_daemon "$T/run1.log" -v
check "5.03 received, the daemon waits" wait_for "$T/run1.log" '5\.03, retrying in 250 s' 1 60
kill -TERM "$DPID"
check "SIGTERM during a 5.03 pause: the daemon exits within 15 s" exits_within "$DPID" 15
check "SIGTERM during a 5.03 pause: exit 0 ($RC)" test "$RC" -eq 0
check "SIGTERM during a 5.03 pause: says why" grep -q 'stopping on SIGTERM' "$T/run1.log"
check "SIGTERM during a 5.03 pause: the cancelled enrollment is named" \
  grep -q 'cancelled' "$T/run1.log"
check "SIGTERM during a 5.03 pause: no key left behind" \
  test -z "$(find "$T/dev" -name '*.pem' -print -quit)"
run_estc status --state "$T/state"
check "the state after SIGTERM still reads (no certificate yet: exit 1, $RC)" test "$RC" -eq 1
check "the state after SIGTERM: says no certificate" grep -q 'no certificate is held' "$T/stderr"

# The server answers the second request: the next run enrolls at once.
run_estc run "${RUN[@]}" --once
expect_ok "after the cancelled run, run --once enrolls"
check "the certificate verifies" openssl verify -CAfile "$ESTC_SERVER_CA" "$T/dev/cert.pem"
rm -rf "$T/state" "$T/dev"
mkdir -m 700 "$T/dev"

# 2. SIGTERM during DTLS retransmissions: a UDP port that never answers.
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
time.sleep(120)
' >"$T/silent.port" &
SILENT=$!
CLEANUPS+=("stop_pids $SILENT")
for _ in $(seq 1 50); do [ -s "$T/silent.port" ] && break; sleep 0.1; done
port=$(cat "$T/silent.port")
RUN2=(--state "$T/state" --server "coaps://127.0.0.1:$port" --trust "$ESTC_SERVER_CA" "${BOOT[@]}"
  --subject /CN=daemon-t --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem"
  --retry-spacing 1 --timeout 60000)
$WRAP "$ESTC" run "${RUN2[@]}" >"$T/run.out" 2>"$T/run2.log" &
DPID=$!
DAEMON_PIDS=("$DPID")
sleep 3 # the handshake is under way (ClientHello sent, retransmitting)
kill -TERM "$DPID"
check "SIGTERM during retransmissions: the daemon exits within 15 s" exits_within "$DPID" 15
check "SIGTERM during retransmissions: exit 0 ($RC)" test "$RC" -eq 0
check "SIGTERM during retransmissions: says why" grep -q 'stopping on SIGTERM' "$T/run2.log"
check "SIGTERM during retransmissions: no key left behind" \
  test -z "$(find "$T/dev" -name '*.pem' -print -quit)"
stop_pids "$SILENT"
finish
