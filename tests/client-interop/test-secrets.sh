#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# PINs stay out of sight, with the enrolled key in a SoftHSM2 token:
# addresses from a 0600 file (@FILE) and from the environment (env:VAR); a
# file holding a PIN that others can read is refused; a PIN given on the
# command line of `estc run` is gone from /proc/PID/cmdline, the process is
# not dumpable and has no core limit; no PIN on stderr or in a log line; and
# a DTLS session with the token key, killed mid-exchange, leaves no file in
# TMPDIR (libcoap gets its credentials in memory).
. "$(dirname "$0")/lib.sh"
start_token sec 864213
# Everything estc printed in this test, searched for the PIN at the end.
ALL_OUT=$T/all-output
: >"$ALL_OUT"
keep_output() { cat "$T/stdout" "$T/stderr" >>"$ALL_OUT"; }
no_pin_in() { ! grep -q "$PIN" "$@"; }

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server

# As root, a process reading another's /proc/PID/environ passes the ptrace
# check by its capabilities whatever the target's dumpable flag; without
# capabilities (on both sides) the flag decides, as it does between two
# processes of an ordinary user.
if [ "$(id -u)" -eq 0 ]; then
  command -v setpriv >/dev/null || { echo "FAIL: setpriv missing"; exit 1; }
  NOCAP=(setpriv --bounding-set -all --inh-caps -all)
else
  NOCAP=()
fi

# 1. Addresses from a 0600 file and from the environment.
umask 077
addr est-key >"$T/key.addr"
n0=$(count)
ESTC_TEST_CERT_ADDR=$(addr est-cert) run_estc enroll "${NET[@]}" "${BOOT[@]}" \
  --subject /CN=sec-1 --new-key "@$T/key.addr" --new-cert env:ESTC_TEST_CERT_ADDR
keep_output
expect_ok "@FILE and env:VAR: enroll into the token"
same_key "@FILE and env:VAR" "$T/stdout" "$(engine_pub "$(addr est-key)")"
check "@FILE and env:VAR: key pair and certificate in the token" test "$(count)" -eq $((n0 + 3))
check "@FILE and env:VAR: no note about a PIN on the command line" \
  bash -c "! grep -q 'command line' '$T/stderr'"
cp "$T/stdout" "$T/sec-1.pem"

# 2. A file holding a PIN that group or others can read is refused.
n1=$(count)
addr other-key >"$T/open.addr"
chmod 644 "$T/open.addr"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=sec-2 --new-key "@$T/open.addr" \
  --new-cert "$(addr other-cert)"
keep_output
expect_fail "@FILE readable by others" 2 "readable by group or others"
check "@FILE readable by others: token unchanged" test "$(count)" -eq "$n1"
mkfifo "$T/fifo.addr"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=sec-2 --new-key "@$T/fifo.addr"
keep_output
expect_fail "@FILE that is a FIFO: refused without blocking" 2 "not a regular file"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=sec-2 --new-key env:ESTC_TEST_UNSET_VAR
keep_output
expect_fail "env:VAR not set" 2 "not set"

# 3. estc run with the PIN on its command line.
"${NOCAP[@]}" sleep 60 &
control=$!
rm -f "$T/run.state"
"${NOCAP[@]}" "$ESTC" run "${NET[@]}" "${BOOT[@]}" --subject /CN=sec-run --state "$T/run.state" \
  --new-key "$(addr run-key)" --new-cert "$(addr run-cert)" --ca-out "$P11;pin-value=$PIN$Q" \
  --max-runtime 120 -v >"$T/run.out" 2>"$T/run.err" &
run_pid=$!
for _ in $(seq 1 600); do
  [ -s "$T/run.state" ] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.1
done
check "run: enrolled and wrote its state" test -s "$T/run.state"
tr '\0' ' ' <"/proc/$run_pid/cmdline" >"$T/cmdline"
check "run: /proc/PID/cmdline shows no PIN" no_pin_in "$T/cmdline"
check "run: /proc/PID/cmdline shows the redacted addresses" grep -q 'pin-value=\*\*\*' "$T/cmdline"
check "run: no core dump (RLIMIT_CORE 0)" \
  grep -Eq '^Max core file size +0 +0 ' "/proc/$run_pid/limits"
check "run: the probe reads a dumpable process's environment" \
  bash -c "${NOCAP[*]} cat /proc/$control/environ >/dev/null"
check "run: not dumpable (its environment unreadable to the same user)" \
  bash -c "! ${NOCAP[*]} cat /proc/$run_pid/environ >/dev/null 2>&1"
kill "$control" 2>/dev/null
kill -TERM "$run_pid"
wait "$run_pid"
check "run: SIGTERM, exit 0" test "$?" -eq 0
cat "$T/run.out" "$T/run.err" >>"$ALL_OUT"
check "run: one note that pin-source is preferred" \
  test "$(grep -c 'prefer pin-source' "$T/run.err")" -eq 1

# 4. The DTLS session with the token key leaves nothing in TMPDIR, even
# when killed: the server holds the renewal in 5.03 with a long Max-Age.
estc_server_stop_keep_state
start_server --delay-first 1 --max-age 60
mkdir -m 700 "$T/tmp"
touch "$T/marker"
TMPDIR=$T/tmp "$ESTC" reenroll "${NET[@]}" --cert "$(addr est-cert)" --key "@$T/key.addr" \
  >"$T/re.out" 2>"$T/re.err" &
re_pid=$!
for _ in $(seq 1 600); do
  [ "$(count_delays)" -ge 1 ] && break
  kill -0 "$re_pid" 2>/dev/null || break
  sleep 0.1
done
check "reenroll: DTLS with the token key done, the server answered 5.03" \
  test "$(count_delays)" -ge 1
check "reenroll: still waiting out the 5.03" kill -0 "$re_pid"
kill -KILL "$re_pid" 2>/dev/null
wait "$re_pid" 2>/dev/null
cat "$T/re.out" "$T/re.err" >>"$ALL_OUT"
check "reenroll killed: TMPDIR is empty" test -z "$(ls -A "$T/tmp")"
# A key reference (PEM, the address in base64) is as secret as the PIN.
check "reenroll killed: no file written in /tmp during the run holds the PIN or a key reference" \
  bash -c "! find '$T/tmp' /tmp -xdev -type f -newer '$T/marker' -readable -size -1024k -print0 2>/dev/null |
    xargs -0r grep -lsE -- '$PIN|BEGIN ESTC KEY REFERENCE' | grep -q ."

check "no PIN in anything estc printed" no_pin_in "$ALL_OUT"
check "no PIN in the server's log" no_pin_in "$ESTC_SERVER_LOG"
finish
