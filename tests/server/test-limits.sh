#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server's resource limits against hostile clients on loopback: the
# request-body limit (4.13 with Size1, 4.01 at the first block without a
# client certificate, memory bounded), Block1 without Size1, the ClientHello
# guard (an enrollment completes during a flood of 200 ClientHellos/s from
# changing source ports) and the session limit (the oldest idle session
# goes, a new client is served).
. "$(dirname "$0")/lib.sh"

B1=${ESTC_BLOCK1_CLIENT:?ESTC_BLOCK1_CLIENT names tests/server/block1-client}
FLOOD=${ESTC_HELLO_FLOOD:?ESTC_HELLO_FLOOD names the hello-flood program}
ESTC=${ESTC_BIN:-$ESTC_BUILD_ROOT/tools/estc/estc}
FLOOD_PID=
stop_flood() {
  if [ -n "$FLOOD_PID" ]; then kill "$FLOOD_PID" 2>/dev/null; wait "$FLOOD_PID" 2>/dev/null; fi
  FLOOD_PID=
}
trap 'stop_flood; cleanup' EXIT

make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }

# The server's peak resident memory so far (VmHWM, kB): read after a push, it
# still shows what the server held while the push went on.
peak_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$ESTC_SERVER_PID/status"; }
# start DESCRIPTION [options...]: a server, or a failed check (an option the
# server does not know) and the section's checks are skipped.
start() {
  local what=$1; shift
  if estc_server_start --client-ca "$T/mca.crt" "$@"; then return 0; fi
  fail "$what: the server starts with: $*"
  return 1
}
# stop DESCRIPTION: SIGTERM, exit status 0 (no sanitizer report), folder removed.
stop() { stop_server "$1"; estc_server_stop; }
# Every client ends by itself: a bounded wait per block, and timeout on top.
b1() { timeout 120 "$B1" 127.0.0.1 "$ESTC_SERVER_PORT" "$ESTC_SERVER_CA" "$@" 2>&1; }
DEV=(--cert "$T/dev.crt" --key "$T/dev.key")

# --- request bodies ---------------------------------------------------------------
start "request bodies" || exit 1
peak0=$(peak_kb)
for i in 1 2 3; do
  out=$(b1 est/sen --junk 30000000)
  check "30 MB push $i without a client certificate: 4.01 at the first block ($out)" \
    test "$out" = "code 4.01 blocks 1"
done
out=$(b1 est/sen --junk 30000000 "${DEV[@]}")
check "30 MB push with Size1: 4.13 with Size1 65536 at the first block ($out)" \
  test "$out" = "code 4.13 blocks 1 size1 65536"
out=$(b1 est/sren --junk 30000000 "${DEV[@]}")
check "30 MB push to sren with a manufacturer certificate: 4.03 at the first block ($out)" \
  test "$out" = "code 4.03 blocks 1"
out=$(b1 est/sen --junk 30000000 --no-size1 "${DEV[@]}")
check "30 MB push without Size1: 4.13 once 64 KiB are in ($out)" \
  test "$out" = "code 4.13 blocks 65 size1 65536"
peak1=$(peak_kb)
check "server peak memory during five 30 MB pushes grew by less than 20 MB ($peak0 -> $peak1 kB)" \
  test $((peak1 - peak0)) -lt 20480

# Block1 without Size1, first transfer of its session (RFC 7959: Size1 is optional).
new_csr n "/CN=device-1"
out=$(BLOCK1_OUT=$T/n.p7 b1 est/sen --body "$T/n.csr" --no-size1 --block-size 16 "${DEV[@]}")
check "CSR in 16-byte blocks without Size1: 2.04 ($out)" test "${out%% blocks*}" = "code 2.04"
check "the answer is a certificate" openssl x509 -inform DER -in "$T/n.p7" -noout
out=$(b1 est/sen --body "$T/n.csr" --block-size 64 "${DEV[@]}")
check "CSR in 64-byte blocks with Size1: 2.04 ($out)" test "${out%% blocks*}" = "code 2.04"
# coap-client (Size1, Request-Tag) still works.
coap -b 64 -m post -t 286 -f "$T/n.csr" /est/sen
expect_code 2.04 "coap-client sen in 64-byte blocks"
stop "after the pushes"

if start "--max-body" --max-body 128; then
  out=$(b1 est/sen --body "$T/n.csr" --no-size1 --block-size 64 "${DEV[@]}")
  check "--max-body 128: a 200-byte CSR gets 4.13 ($out)" test "$out" = "code 4.13 blocks 3 size1 128"
  stop "--max-body 128"
fi

# --- ClientHello flood ---------------------------------------------------------------
start "ClientHello flood" || exit 1
# 90 s at most: the flood stops by itself should this script die.
"$FLOOD" 127.0.0.1 "$ESTC_SERVER_PORT" 200 90 >"$T/flood.out" 2>&1 &
FLOOD_PID=$!
sleep 3 # the flood is on: without the guard the handshake table is full by now
mkdir -p "$T/f"
timeout 60 "$ESTC" enroll --server "$ESTC_SERVER_URI" --trust "$ESTC_SERVER_CA" "${DEV[@]}" \
  --subject /CN=device-flood --new-key "file:$T/f/key.pem" --new-cert "file:$T/f/cert.pem" \
  >"$T/enroll.out" 2>&1
rc=$?
check "estc enroll completes during a flood of 200 ClientHellos/s (exit $rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/     | /' "$T/enroll.out" | tail -5
check "the flood was running all along" kill -0 "$FLOOD_PID"
stop_flood
stop_server "after the flood"
check "the server answered ClientHellos statelessly" \
  grep -q "without a cookie answered statelessly" "$ESTC_SERVER_LOG"
estc_server_stop

# --- session limit ------------------------------------------------------------------
if start "--max-sessions" --max-sessions 4 -vv; then
  out=$(b1 x --sessions 10)
  check "10 clients one after the other all served with --max-sessions 4 ($out)" \
    test "$out" = "sessions 10"
  n=$(grep -c "session .* closed" "$ESTC_SERVER_LOG")
  check "the oldest idle sessions were closed to make room ($n closed)" test "$n" -ge 6
  coap /est/crts
  expect_code 2.05 "a new client is served after that"
  stop "--max-sessions 4"
fi

# --- bad option values --------------------------------------------------------------
bin=${ESTC_SERVER_BIN:-$ESTC_BUILD_ROOT/tools/estc-server/estc-server}
for bad in "--max-body 63" "--max-body x" "--max-sessions 0" "--idle-timeout 86401" \
  "--max-handshakes -1"; do
  # shellcheck disable=SC2086 # the option and its value
  "$bin" $bad --listen 127.0.0.1:1 --state-dir "$T/none" --max-runtime 1 >/dev/null 2>"$T/bad.err"
  check "refuses $bad (exit 2, the option named)" \
    bash -c "test $? -eq 2 && grep -q -- '${bad%% *} wants' '$T/bad.err'"
done
check "a refused option leaves no state folder" test ! -e "$T/none"

finish
