#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The state file is trusted only when no one else can write it: estc run and
# estc status --state refuse, at once and without changing anything, a FIFO
# (which would block open()), a symbolic link, a state that is group- or
# world-writable or owned by another user, and a folder others can write.
# A state that lists objects outside the configured bases gets them
# forgotten with a warning, never removed; every removal is logged.
. "$(dirname "$0")/common.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --validity 600 --dedup-window 0
mkdir -m 700 "$T/dev" "$T/s"
S=$T/s/state
RUN=(--state "$S" "${NET[@]}" "${BOOT[@]}" --subject /CN=daemon-s
  --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem" --retry-spacing 1)
sum() { sha256sum "$1" | cut -d' ' -f1; }

# A FIFO at the state path: refused without blocking in open(). The
# timeout only keeps a broken build from hanging the suite: what is checked
# is the exit status and the message.
fifo_run() {
  # shellcheck disable=SC2086 # the wrapper is a command line
  timeout -k 5 30 $WRAP "$ESTC" "$@" >"$T/stdout" 2>"$T/stderr"
  RC=$?
}
mkfifo -m 600 "$S"
fifo_run run "${RUN[@]}" --once
expect_fail "run: FIFO state" 1 'is not a regular file; refused'
check "FIFO: still a FIFO, nothing made" test -p "$S" -a ! -e "$T/dev/key.pem"
fifo_run status --state "$S"
expect_fail "status: FIFO state" 1 'is not a regular file; refused'
rm -f "$S"

# A good state.
run_estc run "${RUN[@]}" --once
expect_ok "run --once"
cp "$S" "$T/good"
s0=$(sum "$S")
c0=$(sum "$T/dev/cert.pem")

# A symbolic link to the good state.
mv "$S" "$T/s/real"
ln -s "$T/s/real" "$S"
run_estc run "${RUN[@]}" --once
expect_fail "run: state is a symbolic link" 1 'symbolic link'
rm -f "$S"
mv "$T/s/real" "$S"

# Group- or world-writable state.
for mode in 620 602 666; do
  chmod "$mode" "$S"
  run_estc run "${RUN[@]}" --once
  expect_fail "run: state mode $mode" 1 "writable by group or others \\(mode $mode\\); refused"
  check "mode $mode: state and certificate untouched" \
    test "$(sum "$S")" = "$s0" -a "$(sum "$T/dev/cert.pem")" = "$c0"
done
chmod 600 "$S"

# Owned by another user (root can make one; others skip this part).
if [ "$(id -u)" -eq 0 ]; then
  chown 65534 "$S"
  run_estc run "${RUN[@]}" --once
  expect_fail "run: state owned by another user" 1 'owned by another user \(uid 65534\); refused'
  run_estc status --state "$S"
  expect_fail "status: state owned by another user" 1 'owned by another user'
  chown 0 "$S"
  check "other owner: state untouched" test "$(sum "$S")" = "$s0"
  chown 65534 "$T/s"
  run_estc run "${RUN[@]}" --once
  expect_fail "run: folder owned by another user" 1 "folder $T/s is owned by another user"
  chown 0 "$T/s"
fi

# A folder others can write (sticky or not).
for mode in 770 777 1777; do
  chmod "$mode" "$T/s"
  run_estc run "${RUN[@]}" --once
  expect_fail "run: folder mode $mode" 1 "folder $T/s is writable by group or others"
  run_estc status --state "$S"
  expect_fail "status: folder mode $mode" 1 "writable by group or others"
  check "folder $mode: state untouched" test "$(sum "$S")" = "$s0"
done
chmod 700 "$T/s"
# And no fresh state is written into such a folder.
mkdir -m 777 "$T/open"
run_estc run --state "$T/open/state" "${NET[@]}" "${BOOT[@]}" --subject /CN=daemon-s \
  --new-key "file:$T/dev/key2.pem" --new-cert "file:$T/dev/cert2.pem" --once
check "open folder: exit 1 ($RC)" test "$RC" -eq 1
check "open folder: says why" grep -q "folder $T/open is writable by group or others" "$T/stderr"
check "open folder: no state, key or certificate" \
  test ! -e "$T/open/state" -a ! -e "$T/dev/key2.pem" -a ! -e "$T/dev/cert2.pem"

# add_records STATE LINE...: the state with LINEs added to its lifecycle
# record, framed and digested again (what anyone who can write it can do).
add_records() {
  python3 - "$@" <<'EOF'
import hashlib, struct, sys
path, lines = sys.argv[1], sys.argv[2:]
d = open(path, 'rb').read()
head, body = d[:16], d[16:-32]
out, i = b'', 0
while i < len(body):
    tag, n = body[i], struct.unpack('>I', body[i + 1:i + 5])[0]
    v = body[i + 5:i + 5 + n]
    if v.startswith(b'estc-lifecycle 1\n'):
        v += ''.join(l + '\n' for l in lines).encode()
    out += bytes([tag]) + struct.pack('>I', len(v)) + v
    i += 5 + n
framed = head[:12] + struct.pack('>I', len(out)) + out
open(path, 'wb').write(framed + hashlib.sha256(framed).digest())
EOF
}

# Three PEM files in a folder of their own, listed as pending, superseded
# and committed: the daemon keeps them, with one warning each. A pending
# key under the configured key base is removed, and that is logged.
mkdir -m 700 "$T/other"
for i in 1 2 3; do cp "$T/dev.crt" "$T/other/x$i.pem"; done
gen="file:$T/dev/key.pemestc-key-0123456789abcdef.key.pem"
cp "$T/dev.key" "${gen#file:}"
add_records "$S" "obj cert pending 0 file:$T/other/x1.pem" \
  "obj trust superseded 0 file:$T/other/x2.pem" "obj key committed 0 file:$T/other/x3.pem" \
  "obj key pending 0 $gen"
run_estc status --state "$S"
expect_ok "status reads the edited state"
run_estc run "${RUN[@]}" --once
expect_ok "run --once with foreign objects in the state"
for i in 1 2 3; do
  check "foreign object x$i.pem kept" cmp -s "$T/dev.crt" "$T/other/x$i.pem"
  check "foreign object x$i.pem: one warning" \
    test "$(grep -c "records file:$T/other/x$i.pem (.*), which is not under the .* base .*: refused, it will not be removed" "$T/stderr")" -eq 1
done
check "pending key under the key base removed" test ! -e "${gen#file:}"
check "its removal logged at the default verbosity" \
  grep -qF "$gen: removed" "$T/stderr"
check "the enrolled key and certificate are still there" \
  openssl verify -CAfile "$ESTC_SERVER_CA" "$T/dev/cert.pem"
# Forgotten for good: the next run neither warns nor touches them.
run_estc run "${RUN[@]}" --once
expect_ok "run --once again"
check "no warning the second time" test "$(grep -c 'not under the' "$T/stderr")" -eq 0
check "foreign objects still there" test -e "$T/other/x1.pem" -a -e "$T/other/x2.pem" -a -e "$T/other/x3.pem"
finish
