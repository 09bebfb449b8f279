#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Operating `estc run`: the configuration file (--config; keys are the long
# option names, the command line wins, errors name FILE:LINE, a PIN only in
# a 0600 file); SIGUSR1 and `estc renew` renew now (with the daemon, and
# without one); SIGHUP re-reads the configuration while the key and the
# certificate stay, and a bad file keeps the running one; STATE.pid refuses
# a second daemon; the systemd notifications (READY=1, STATUS=, RELOADING=1,
# STOPPING=1) on a real notification socket; a state written for other
# addresses is refused (exit 2, both named, nothing changed) unless
# --take-over sets it aside.
. "$(dirname "$0")/common.sh"

start_token dev "$PIN"
make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
# Certificates valid for a day: nothing renews unless asked.
start_server --validity 86400 --dedup-window 0

# write_conf FILE HOOK-LOG [extra lines]: a configuration file, mode 0600.
write_conf() {
  local f=$1 hook=$2
  shift 2
  {
    echo "# estc run, as in /etc/estc/estc.conf"
    echo "server = $ESTC_SERVER_URI"
    echo "trust = $ESTC_SERVER_CA"
    echo "cert = $T/dev.crt"
    echo "key  = $T/dev.key"
    echo "subject = /CN=signals-1"
    echo "new-key = $(addr est-key)"
    echo "new-cert = $(addr est-cert)"
    echo ""
    echo "retry-spacing = 1"
    echo "exec = echo \"\$ESTC_EVENT \$ESTC_NOT_AFTER\" >>$hook"
    printf '%s\n' "$@"
  } >"$f"
  chmod 600 "$f"
}
CONF=$T/estc.conf
write_conf "$CONF" "$T/hook1.log"

# serial_held: the serial of the certificate the state names (from the token).
serial_held() { held_cert "$T/h.pem" && openssl x509 -in "$T/h.pem" -noout -serial | cut -d= -f2; }

# ---- systemd's notification socket (a listener standing in for PID 1) ----
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(200)
with open(sys.argv[2], "a") as out:
    while True:
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            break
        out.write(m.replace("\n", " | ") + "\n")
        out.flush()
' "$T/notify.sock" "$T/notify.log" &
LISTENER=$!
CLEANUPS+=("stop_pids $LISTENER")
for _ in $(seq 1 50); do [ -S "$T/notify.sock" ] && break; sleep 0.1; done

# ---- the daemon from the configuration file ------------------------------
RUN=(--config "$CONF" --state "$T/state")
NOTIFY_SOCKET=$T/notify.sock start_daemon "$T/run.log"
if ! wait_for "$T/run.log" 'enrolled: serial' 1 60; then
  fail "run --config: enrolled"
  sed 's/^/       | /' "$T/run.log" | head -20
  exit 1
fi
pass "run --config: enrolled"
check "the pid file holds the daemon's PID" test "$(cat "$T/state.pid")" = "$DPID"
check "READY=1 once the certificate is valid" wait_for "$T/notify.log" 'READY=1 \| STATUS=serial' 1 10
check "the hook ran after the enrollment" wait_for "$T/hook1.log" '^enrolled 20' 1 10
S1=$(serial_held)
N1=$(count)
check "a certificate is held ($S1)" test -n "$S1"

# A second daemon on the same state is refused.
run_estc run "${RUN[@]}" --once
expect_fail "a second estc run on the same state" 1 "another estc run \\(pid $DPID\\)"

# ---- SIGUSR1: renew now ---------------------------------------------------
kill -USR1 "$DPID"
check "SIGUSR1: renewed" wait_for "$T/run.log" 'reenrolled: serial' 1 60
check "SIGUSR1: logged" grep -q 'SIGUSR1: renewing now' "$T/run.log"
S2=$(serial_held)
check "SIGUSR1: a new certificate ($S1 -> $S2)" test -n "$S2" -a "$S2" != "$S1"
check "SIGUSR1: the daemon runs on" kill -0 "$DPID"
check "SIGUSR1: the token holds as many objects ($N1, $(count))" test "$(count)" -eq "$N1"
check "SIGUSR1: the hook ran" wait_for "$T/hook1.log" '^reenrolled 20' 1 10

# ---- estc renew: signals the running daemon -------------------------------
run_estc renew --state "$T/state"
expect_ok "estc renew with a daemon running"
check "estc renew names the daemon" grep -q "asked the daemon (pid $DPID)" "$T/stderr"
check "estc renew: renewed by the daemon" wait_for "$T/run.log" 'reenrolled: serial' 2 60
S3=$(serial_held)
check "estc renew: a new certificate ($S2 -> $S3)" test -n "$S3" -a "$S3" != "$S2"

# ---- SIGHUP: the configuration again; key and certificate stay ------------
write_conf "$CONF" "$T/hook2.log" "verbose = 2"
kill -HUP "$DPID"
check "SIGHUP: configuration re-read" wait_for "$T/run.log" 'SIGHUP: configuration re-read' 1 20
check "SIGHUP: RELOADING=1 then READY=1" wait_for "$T/notify.log" '^RELOADING=1' 1 10
check "SIGHUP: READY=1 after the reload" \
  bash -c "grep -A5 '^RELOADING=1' '$T/notify.log' | grep -q '^READY=1'"
check "SIGHUP: the daemon runs on" kill -0 "$DPID"
check "SIGHUP: the same certificate ($S3)" test "$(serial_held)" = "$S3"
check "SIGHUP: no renewal" test "$(grep -c 'reenrolled: serial' "$T/run.log")" -eq 2
kill -USR1 "$DPID"
check "after SIGHUP: renewed" wait_for "$T/run.log" 'reenrolled: serial' 3 60
check "after SIGHUP: the new --exec ran" wait_for "$T/hook2.log" '^reenrolled 20' 1 10
check "after SIGHUP: the old --exec did not" test "$(grep -c reenrolled "$T/hook1.log")" -eq 2
check "after SIGHUP: verbose = 2 applies (debug lines)" grep -q ': debug: ' "$T/run.log"
check "before SIGHUP: no debug lines" bash -c "! sed -n '1,/SIGHUP: configuration re-read/p' '$T/run.log' | grep -q ': debug: '"

# A bad file: the running configuration stays, the reason is logged.
cp "$CONF" "$T/good.conf"
echo "exec-timeout = soon" >>"$CONF"
line=$(wc -l <"$CONF")
kill -HUP "$DPID"
check "SIGHUP with a bad file: the error names the line" \
  wait_for "$T/run.log" "$CONF:$line: --exec-timeout: bad value" 1 20
check "SIGHUP with a bad file: the running configuration stays" \
  wait_for "$T/run.log" 'SIGHUP: the configuration has errors' 1 10
check "SIGHUP with a bad file: the daemon runs on" kill -0 "$DPID"
kill -USR1 "$DPID"
check "after the bad SIGHUP: renewed" wait_for "$T/run.log" 'reenrolled: serial' 4 60
check "after the bad SIGHUP: still the second --exec" \
  wait_for "$T/hook2.log" '^reenrolled 20' 2 10

# A changed address is named, not applied.
sed "s|object=est-key;|object=other-key;|" "$T/good.conf" >"$CONF"
kill -HUP "$DPID"
check "SIGHUP: a changed --new-key is named as needing a restart" \
  wait_for "$T/run.log" 'SIGHUP: --new-key changed: not applied' 1 20
S5=$(serial_held)

# ---- SIGTERM: STOPPING=1, exit 0 ------------------------------------------
stop_daemon TERM
check "SIGTERM: exit 0 ($RC)" test "$RC" -eq 0
check "SIGTERM: STOPPING=1" grep -q '^STOPPING=1' "$T/notify.log"
write_conf "$CONF" "$T/hook2.log"
cp "$CONF" "$T/good.conf"

# ---- estc renew without a daemon: renews the state itself -----------------
run_estc renew --config "$CONF" --state "$T/state"
expect_ok "estc renew without a daemon"
check "estc renew without a daemon: says so" grep -q 'renewing now (no daemon' "$T/stderr"
S6=$(serial_held)
check "estc renew without a daemon: a new certificate ($S5 -> $S6)" test -n "$S6" -a "$S6" != "$S5"
run_estc renew --state "$T/nothing"
expect_fail "estc renew of no state" 1 'nothing to renew'
# Another user's state (root asking for the service's): never written here.
rm -f "$T/state.pid"
chown nobody "$T/state"
sum1=$(sha256sum <"$T/state")
run_estc renew --config "$CONF" --state "$T/state"
expect_fail "estc renew of another user's state without a daemon" 1 'belongs to uid .*run estc renew as that user'
check "... no lock file made for that user" test ! -e "$T/state.pid"
check "... the state unchanged" test "$(sha256sum <"$T/state")" = "$sum1"
chown root "$T/state"

# ---- the configuration file: errors name FILE:LINE ------------------------
N0=$(count)
sum0=$(sha256sum <"$T/state")
cp "$T/good.conf" "$T/bad.conf"
echo "sever = coaps://x" >>"$T/bad.conf"
run_estc run --config "$T/bad.conf" --state "$T/state" --once
expect_fail "an unknown key" 2 "bad.conf:13: unknown key 'sever'"
cp "$T/good.conf" "$T/bad.conf"
echo "once = perhaps" >>"$T/bad.conf"
run_estc run --config "$T/bad.conf" --state "$T/state"
expect_fail "a flag that is neither yes nor no" 2 "bad.conf:13: once takes yes or no"
cp "$T/good.conf" "$T/bad.conf"
echo "no equals sign" >>"$T/bad.conf"
run_estc run --config "$T/bad.conf" --state "$T/state" --once
expect_fail "a line without =" 2 "bad.conf:13: not a 'key = value' line"
cp "$T/good.conf" "$T/bad.conf"
echo "json = yes" >>"$T/bad.conf"
run_estc run --config "$T/bad.conf" --state "$T/state" --once
expect_fail "an option of another command" 2 "bad.conf:13: json does not apply to run"
printf 'verbose = 2\nsubject = /CN=x\n' >"$T/loud.conf"
chmod 600 "$T/loud.conf"
run_estc run --config "$T/loud.conf" -q --state "$T/none" --server "$ESTC_SERVER_URI" \
  --trust "$ESTC_SERVER_CA"
expect_fail "-q on the command line wins over the file's verbose" 2 'no bootstrap credentials'
chmod 640 "$CONF"
run_estc run --config "$CONF" --state "$T/state" --once
expect_fail "a PIN in a file others can read" 2 'holds a PIN \(pin-value\) but is readable'
chmod 620 "$CONF"
run_estc run --config "$CONF" --state "$T/state" --once
expect_fail "a file others can write" 2 'writable by group or others'
chmod 600 "$CONF"
run_estc run --config "$T/none.conf" --state "$T/state" --once
expect_fail "a missing --config file" 2 'none.conf: No such file'
check "the errors changed no object ($N0)" test "$(count)" -eq "$N0"
check "the errors left the state unchanged" test "$(sha256sum <"$T/state")" = "$sum0"

# ---- a state written for other addresses ---------------------------------
run_estc run --config "$CONF" --state "$T/state" --once --new-key "$(addr moved-key)" -q
expect_fail "--new-key other than the state's" 2 \
  "--new-key pkcs11:token=dev;object=moved-key.* \\(the state's: pkcs11:token=dev;object=est-key"
check "the refusal hides the PIN" bash -c "! grep -q '$PIN' '$T/stderr'"
check "the refusal changed no object ($N0)" test "$(count)" -eq "$N0"
check "the refusal left the state unchanged" test "$(sha256sum <"$T/state")" = "$sum0"
# The same addresses with the PIN given another way are the same addresses.
echo "$PIN" >"$T/pin.txt"
chmod 600 "$T/pin.txt"
run_estc run --config "$CONF" --state "$T/state" --once \
  --new-key "$P11;object=est-key;pin-source=file:$T/pin.txt$Q"
expect_ok "the state's --new-key with pin-source instead of pin-value"

# --take-over: the old state is set aside, a new enrollment at the new
# addresses; the command line wins over the file (the subject).
run_estc run --config "$CONF" --state "$T/state" --once --take-over \
  --new-key "$(addr moved-key)" --new-cert "$(addr moved-cert)" --subject /CN=taken-over
expect_ok "--take-over"
check "--take-over: the old state is kept as state.old" test -s "$T/state.old"
check "--take-over: says where the old objects stay" grep -q 'stay in place' "$T/stderr"
check "--take-over: the old objects stay, as many new ones added ($N0 -> $(count))" \
  test "$(count)" -eq $((N0 * 2))
held_cert "$T/new.pem"
check "--take-over: the certificate is at the new address" grep -q 'moved-cert' "$T/status.out"
check "--take-over: the command line's --subject won" \
  bash -c "openssl x509 -in '$T/new.pem' -noout -subject | grep -q taken-over"
finish
