#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc run / status --state error paths: a corrupt or truncated state is
# refused with one clear line and left as it was; a missing state for
# status; missing options; --psa-dir checks; a refused enrollment leaves no
# objects; SIGINT exits 0.
. "$(dirname "$0")/common.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --validity 20 --dedup-window 0
mkdir -m 700 "$T/dev"
RUN=(--state "$T/state" "${NET[@]}" "${BOOT[@]}" --subject /CN=daemon-e
  --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem" --retry-spacing 1)
sum() { sha256sum "$1" | cut -d' ' -f1; }

# status on a missing state.
run_estc status --state "$T/none"
expect_fail "status: missing state file" 1 'none: No such file'

# A garbage state: one line, non-zero, untouched, nothing made.
head -c 300 /dev/urandom >"$T/state"
s0=$(sum "$T/state")
run_estc run "${RUN[@]}" --once
expect_fail "run: corrupt state" 1 'state .* \(left unchanged\)'
check "corrupt state: file untouched" test "$(sum "$T/state")" = "$s0"
check "corrupt state: no key or certificate made" test ! -e "$T/dev/key.pem" -a ! -e "$T/dev/cert.pem"
run_estc status --state "$T/state"
expect_fail "status: corrupt state" 1 'state'
check "status: corrupt state untouched" test "$(sum "$T/state")" = "$s0"
rm -f "$T/state"

# Usage errors.
run_estc run "${NET[@]}" "${BOOT[@]}" --subject /CN=x
expect_fail "run without --state" 2 'state FILE is required'
run_estc run --state "$T/state" "${NET[@]}" --subject /CN=x --once
expect_fail "run: no state and no bootstrap credentials" 2 'no bootstrap credentials'
check "no state written without credentials" test ! -e "$T/state"
run_estc run "${RUN[@]}" --nominal-usage 1.5
expect_fail "run: --nominal-usage out of range" 2 'nominal-usage'
run_estc run "${RUN[@]}" --cacerts-policy global
expect_fail "run: global policy without --ca-bundle" 2 'ca-bundle'
run_estc run "${RUN[@]}" --cacerts-policy sometimes
expect_fail "run: unknown policy" 2 'cacerts-policy'
run_estc status --state "$T/state" --new-cert "file:$T/dev/cert.pem"
expect_fail "status: --state with --new-cert" 2 'leave out'

# An enrollment the server refuses (untrusted bootstrap certificate): the
# daemon keeps the state, makes nothing, tries again; --once exits non-zero.
pki_self_signed "$T/rogue.key" "$T/rogue.crt" "/CN=rogue" 1
run_estc run --state "$T/state" "${NET[@]}" --cert "$T/rogue.crt" --key "$T/rogue.key" \
  --subject /CN=rogue --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem" --once
check "refused enrollment: exit non-zero ($RC)" test "$RC" -ne 0
check "refused enrollment: logged as enroll-failed" grep -q '^estc: run: enroll-failed: ' "$T/stderr"
check "refused enrollment: no key or certificate left" test ! -e "$T/dev/key.pem" -a ! -e "$T/dev/cert.pem"
run_estc status --state "$T/state"
check "status without a certificate: exit 1 ($RC)" test "$RC" -eq 1
check "status without a certificate: says so" grep -q 'no certificate is held' "$T/stderr"
rm -f "$T/state"

# A good state, then truncated copies of it.
run_estc run "${RUN[@]}" --once
expect_ok "run --once with file: credentials"
check "state is 0600" test "$(stat -c %a "$T/state")" = 600
check "issued certificate verifies" openssl verify -CAfile "$ESTC_SERVER_CA" "$T/dev/cert.pem"
cp "$T/state" "$T/good"
size=$(stat -c %s "$T/good")
for cut in 1 17 $((size / 2)) $((size - 1)); do
  head -c "$cut" "$T/good" >"$T/state"
  s0=$(sum "$T/state")
  run_estc run "${RUN[@]}" --once
  expect_fail "run: state truncated to $cut bytes" 1 '\(left unchanged\)'
  check "truncated to $cut: file untouched" test "$(sum "$T/state")" = "$s0"
done
# One flipped byte in the middle.
cp "$T/good" "$T/state"
printf '\xff' | dd of="$T/state" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
s0=$(sum "$T/state")
run_estc run "${RUN[@]}" --once
expect_fail "run: one flipped byte" 1 '\(left unchanged\)'
check "flipped byte: file untouched" test "$(sum "$T/state")" = "$s0"
check "the key and certificate are still there" openssl verify -CAfile "$ESTC_SERVER_CA" "$T/dev/cert.pem"
cp "$T/good" "$T/state"

# SIGINT while sleeping: exit 0, state written, objects kept.
start_daemon "$T/run.log"
wait_for "$T/run.log" '^estc: run: restored the state' 1 30
sleep 1
stop_daemon INT
check "SIGINT: exit 0 ($RC)" test "$RC" -eq 0
check "SIGINT: logged" grep -q 'stopping on SIGINT' "$T/run.log"
check "SIGINT: objects kept" test -s "$T/dev/key.pem" -a -s "$T/dev/cert.pem"
run_estc status --state "$T/state"
expect_ok "status after SIGINT"

# --syslog: events go to syslog (or nowhere without a syslog daemon), not stderr.
run_estc run "${RUN[@]}" --once --syslog
expect_ok "run --once --syslog"
check "--syslog: nothing on stderr" test ! -s "$T/stderr"

# --psa-dir: made 0700 when missing; refused when open to others.
run_estc status --state "$T/state" --psa-dir "$T/psa-new"
expect_ok "status --psa-dir: a missing folder is made"
check "--psa-dir made with mode 700" test "$(stat -c %a "$T/psa-new")" = 700
mkdir -m 755 "$T/psa-open"
run_estc status --state "$T/state" --psa-dir "$T/psa-open"
expect_fail "--psa-dir open to others" 1 'open to group or others'
ln -s "$T/psa-new" "$T/psa-link"
run_estc status --state "$T/state" --psa-dir "$T/psa-link"
expect_fail "--psa-dir a symlink" 1 'not a folder'
# Relative paths keep meaning the current folder after entering --psa-dir.
(cd "$T" && timeout 60 "$ESTC" status --state state --psa-dir psa-new >"$T/stdout" 2>"$T/stderr")
RC=$?
expect_ok "status: relative --state with --psa-dir"
finish
