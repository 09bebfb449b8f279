#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server with several workers (--workers): many concurrent clients each
# get a valid certificate with a serial of its own, both workers serve, a
# DTLS session stays with its worker (re-enrollments on the same session),
# Block-wise transfers and the 5.03 retry work, SIGTERM stops every worker.
# The load comes from estc-load (bench/load), one DTLS session per
# enrollment from a new source port, a fresh P-256 key per CSR.
. "$(dirname "$0")/lib.sh"

LOAD=${ESTC_LOAD:?ESTC_LOAD names the estc-load program}
make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }

# load [estc-load options...]: runs estc-load against the server as device-1.
load() {
  "$LOAD" --port "$ESTC_SERVER_PORT" --ca "$ESTC_SERVER_CA" --cert "$T/dev.crt" --key "$T/dev.key" \
    --op-times 1,1,1 --max-seconds 120 "$@" >"$T/load.out" 2>"$T/load.err"
}
# sessions N: the DTLS sessions worker N says it accepted (at its stop).
sessions() {
  sed -n "s/^estc-server: worker $1: \([0-9]*\) DTLS session(s)$/\1/p" "$ESTC_SERVER_LOG"
}
show_load() { sed 's/^/     | /' "$T/load.out" "$T/load.err" | head -20; }

# --- many concurrent clients --------------------------------------------------------
estc_server_start --client-ca "$T/mca.crt" --workers 2 || exit 1
before=$(index_lines)
if load --clients 12 --count 60; then
  pass "60 enrollments from 12 concurrent clients all succeed"
else
  fail "60 enrollments from 12 concurrent clients: estc-load exit $?"; show_load
fi
check "every certificate checked against the CA and its key" \
  grep -q '^enrollments          60 ok, 0 failed' "$T/load.out"
check "60 distinct serial numbers" grep -q '^unique serials       yes' "$T/load.out"
check "the index has the 60 certificates" test "$(index_lines)" -eq $((before + 60))
check "the index has 60 distinct serials" \
  test "$(tail -n 60 "$ESTC_SERVER_STATE/state/index.txt" | cut -f1 | sort -u | wc -l)" -eq 60
# Same session: 3 more enrollments on each session. A datagram that reached
# the other worker would find no DTLS session there and go unanswered.
if load --clients 6 --count 12 --same-session 3; then
  pass "3 re-enrollments on each of 12 sessions succeed"
else
  fail "re-enrollments on the same session: estc-load exit $?"; show_load
fi
check "36 answers on the sessions' first worker" \
  grep -q '0 after 5.03, 36 re-enrollments on the same session' "$T/load.out"
stop_server "two workers"
s0=$(sessions 0) s1=$(sessions 1)
check "worker 0 served some of the 72 sessions (${s0:-none})" test "${s0:-0}" -gt 0
check "worker 1 served some of the 72 sessions (${s1:-none})" test "${s1:-0}" -gt 0
# 72, and the fixture's readiness probe.
check "no session counted twice ($s0 + $s1)" test $((${s0:-0} + ${s1:-0})) -le 73
check "no error in the server log" bash -c "! grep -qiE 'ERR|failed' '$ESTC_SERVER_LOG'"

# --- Block-wise in both directions, on every worker ---------------------------------
estc_server_start --client-ca "$T/mca.crt" --workers 3 --block-size 64 || exit 1
ok=0
for i in 1 2 3 4 5 6; do
  new_csr "b$i" "/CN=device-block-$i"
  coap -b 64 -m post -t 286 -A 287 -f "$T/b$i.csr" /est/sen
  if [ "$CODE" = 2.04 ] && openssl x509 -inform DER -in "$T/out" -out "$T/b$i.pem" 2>/dev/null &&
    verifies "$T/b$i.pem" && grep -q 'Block1' "$TRACE" && grep -q 'Block2' "$TRACE"; then
    ok=$((ok + 1))
  fi
done
check "6 enrollments with Block1 and Block2 in 64-byte blocks ($ok ok)" test "$ok" -eq 6
stop_server "three workers, block-wise"

# --- 5.03 and the retry after Max-Age ------------------------------------------------
estc_server_start --client-ca "$T/mca.crt" --workers 2 --delay-first 1 --max-age 1 || exit 1
if load --clients 4 --count 8; then
  pass "8 enrollments in delay mode succeed"
else
  fail "8 enrollments in delay mode: estc-load exit $?"; show_load
fi
check "the first request got 5.03 and its retry the certificate" \
  grep -q '^enrollments          8 ok, 0 failed, 1 after 5.03' "$T/load.out"
stop_server "two workers, delay mode"

# --- limits and option errors --------------------------------------------------------
for bad in 0 x 257 -1; do
  "$ESTC_SERVER_BIN" --workers "$bad" --state-dir "$T/never" >/dev/null 2>"$T/err"
  rc=$?
  check "--workers $bad refused with exit 2 ($rc)" test "$rc" -eq 2
done
check "nothing was created for a refused option" test ! -e "$T/never"

finish
