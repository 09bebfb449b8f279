#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The estc command's failures: one line on stderr naming the cause, the
# documented exit status, nothing created, no secret echoed.
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
pki_self_signed "$T/rogue.key" "$T/rogue.crt" "/CN=rogue" 1
start_server
mkdir -m 700 "$T/f"
issued() { wc -l <"$ESTC_SERVER_STATE/state/index.txt" 2>/dev/null || echo 0; }
empty_dir() { [ -z "$(ls -A "$T/f")" ]; }
ENROLL=(--subject /CN=device-x --new-key "file:$T/f/key.pem" --new-cert "file:$T/f/cert.pem")

# Help for the command and every subcommand.
run_estc --help
check "--help: exit 0, lists the subcommands" bash -c "[ $RC -eq 0 ] && grep -q reenroll '$T/stdout'"
for sub in discover cacerts enroll reenroll serverkeygen csrattrs status; do
  run_estc "$sub" --help
  check "$sub --help" bash -c "[ $RC -eq 0 ] && grep -q '^usage: estc $sub' '$T/stdout' && grep -q 'Exit status' '$T/stdout'"
  run_estc help "$sub"
  check "help $sub" bash -c "[ $RC -eq 0 ] && grep -q '^usage: estc $sub' '$T/stdout'"
done

# Usage errors: exit 2.
run_estc
check "no subcommand: exit 2" test "$RC" -eq 2
run_estc frobnicate
expect_fail "unknown subcommand" 2 "unknown subcommand"
run_estc enroll --no-such-option
expect_fail "unknown option" 2 "unknown option"
run_estc enroll --server
expect_fail "missing value" 2 "missing value"
run_estc cacerts --rekey
expect_fail "option of another subcommand" 2 "does not apply to cacerts"
run_estc enroll "${NET[@]}" --key-type p521
expect_fail "bad --key-type" 2 "key-type"
run_estc enroll "${NET[@]}" --block-size 100
expect_fail "bad --block-size" 2 "block-size"
run_estc enroll "${NET[@]}" --timeout soon
expect_fail "bad --timeout" 2 "timeout"
run_estc enroll "${NET[@]}" --accept 999
expect_fail "bad --accept" 2 "accept"
run_estc enroll --server "$ESTC_SERVER_URI" --server "$ESTC_SERVER_URI"
expect_fail "--server twice" 2 "twice"
run_estc enroll --trust "$ESTC_SERVER_CA" "${ENROLL[@]}"
expect_fail "no --server" 2 "server is required"
run_estc enroll --server "$ESTC_SERVER_URI" "${ENROLL[@]}"
expect_fail "no trust anchor" 2 "trust"
run_estc enroll --server "http://127.0.0.1/" --trust "$ESTC_SERVER_CA" "${BOOT[@]}" "${ENROLL[@]}"
expect_fail "not a coaps URI" 2 "server"
run_estc enroll "${NET[@]}" --cert "$T/dev.crt" "${ENROLL[@]}"
expect_fail "--cert without --key" 2 "go together"
run_estc reenroll "${NET[@]}"
expect_fail "reenroll without the current credentials" 2 "current certificate"
run_estc status
expect_fail "status without a certificate" 2 "needs the certificate"
run_estc enroll "${NET[@]}" 'pkcs11:token=t;object=k;pin-value=987654'
expect_fail "stray operand" 2 "unexpected argument"
check "the PIN of a stray operand is not echoed" bash -c "! grep -q 987654 '$T/stderr'"
run_estc enroll "--new-key=pkcs11:token=t;object=k;pin-value=987654" --new-key mem:x
expect_fail "option given twice" 2 "twice"
check "the PIN of a repeated option is not echoed" bash -c "! grep -q 987654 '$T/stderr'"
check "usage errors created nothing" empty_dir

# Operation failures: exit 1..5 with the cause.
before=$(issued)
run_estc enroll --server "$ESTC_SERVER_URI" --trust "$T/other.crt" "${BOOT[@]}" "${ENROLL[@]}"
expect_fail "untrusted server (wrong --trust)" 5 "^estc: enroll: "
check "untrusted server: nothing created" empty_dir
check "untrusted server: nothing issued" test "$(issued)" = "$before"

run_estc enroll "${NET[@]}" --server-name wrong.example "${BOOT[@]}" "${ENROLL[@]}"
expect_fail "--server-name not matching" 5 "wrong.example"
check "--server-name: nothing created" empty_dir
check "--server-name: nothing issued" test "$(issued)" = "$before"

run_estc enroll "${NET[@]}" --cert "$T/rogue.crt" --key "$T/rogue.key" "${ENROLL[@]}"
expect_fail "client certificate the server does not trust (4.01)" 4 "4\.01"
check "4.01: nothing created" empty_dir

run_estc enroll "${NET[@]}" --trust "$T/no-such-file.pem" "${BOOT[@]}" "${ENROLL[@]}"
expect_fail "missing trust file" 1 "no-such-file"

run_estc status --new-cert "file:$T/f/none.pem"
expect_fail "status of a missing certificate" 1 "none.pem"

run_estc enroll "${NET[@]}" --driver "$T/no-such-driver.so" "${BOOT[@]}" "${ENROLL[@]}"
expect_fail "--driver that cannot load" 1 "driver"

# A PIN inside an address stays out of error text.
run_estc status --new-cert 'nosuchscheme:pin-value=987654'
check "unknown scheme: exit non-zero" test "$RC" -ne 0
check "unknown scheme: PIN not echoed" bash -c "! grep -q 987654 '$T/stderr'"

# Endless 5.03 with --retries 2: a limit error, nothing created.
estc_server_stop
start_server --delay-first 100 --max-age 1
before=$(issued)
run_estc enroll "${NET[@]}" "${BOOT[@]}" --retries 2 "${ENROLL[@]}"
expect_fail "endless 5.03, --retries 2" 4 "limit|5\.03"
check "endless 5.03: nothing created" empty_dir
check "endless 5.03: exactly three requests answered 5.03" test "$(count_delays)" -eq 3

# Server down: nothing listens (ICMP port unreachable), a transport error.
port=$ESTC_SERVER_PORT
estc_server_stop
SECONDS=0
run_estc enroll --server "coaps://127.0.0.1:$port" --trust "$T/mca.crt" "${BOOT[@]}" --timeout 2000 "${ENROLL[@]}"
expect_fail "server down" 3 "transport|time"
check "server down: bounded in time (${SECONDS}s)" test "$SECONDS" -lt 60
check "server down: nothing created" empty_dir

# A server that never answers (a UDP socket that swallows everything): a
# time-out within the bound. The socket stops by itself after 60 s.
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1)
end = time.time() + 60
while time.time() < end:
    try:
        s.recv(4096)
    except socket.timeout:
        pass
' >"$T/sink.port" &
SINK_PID=$!
CLEANUPS+=('kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null')
for _ in $(seq 1 50); do [ -s "$T/sink.port" ] && break; sleep 0.1; done
SECONDS=0
run_estc enroll --server "coaps://127.0.0.1:$(cat "$T/sink.port")" --trust "$T/mca.crt" "${BOOT[@]}" \
  --timeout 2000 "${ENROLL[@]}"
# Each lost handshake flight waits a second or more: one line each (see
# test-waits.sh); apart from those, the failure is one line.
HSWAIT='^estc: warning: coap: DTLS handshake: no answer from .* \(DTLS retransmission [0-9]+\)$'
check "server silent: a line per DTLS retransmission" grep -qE "$HSWAIT" "$T/stderr"
grep -vE "$HSWAIT" "$T/stderr" >"$T/stderr.rest" || true
mv "$T/stderr.rest" "$T/stderr"
expect_fail "server silent" 3 "time|transport"
grep -qi "time" "$T/stderr" && pass "server silent: a time-out error" || fail "server silent: not a time-out error"
check "server silent: bounded in time (${SECONDS}s)" test "$SECONDS" -lt 60
check "server silent: nothing created" empty_dir

# ---- an engine whose plug-in cannot be loaded ----------------------------
# The pkcs11: scheme is known without its plug-in: its addresses are not
# taken for file names, and their use says why the plug-in did not load (a
# missing plug-in; a fake one standing for the plug-in of an older library).
# An unknown scheme is a file name.
OLD_PLUGIN=$ESTC_BUILD_ROOT/tests/unit/libunit-driver-old-pkcs11.so
if [ -e "${ESTC_ENGINE_DIR:-}/estc-pkcs11.so" ] && [ -e "$OLD_PLUGIN" ]; then
  mkdir "$T/no-plugins" "$T/old-plugins"
  ln -s "$OLD_PLUGIN" "$T/old-plugins/estc-pkcs11.so"
  P11KEY="pkcs11:token=none;object=k;pin-value=93521"
  ESTC_ENGINE_DIR=$T/no-plugins run_estc csr --key "$P11KEY" --subject /CN=x
  expect_fail "pkcs11: plug-in missing" 1 'the pkcs11: engine is a plug-in that cannot be loaded: .*no-plugins/estc-pkcs11\.so: cannot open shared object file'
  check "pkcs11: plug-in missing: no PIN echoed" bash -c "! grep -q 93521 '$T/stderr'"
  ESTC_ENGINE_DIR=$T/old-plugins run_estc csr --key "$P11KEY" --subject /CN=x
  expect_fail "pkcs11: plug-in of an older library" 1 'the pkcs11: engine plug-in .*old-plugins/estc-pkcs11\.so cannot be used: driver API version 1'
  ESTC_ENGINE_DIR=$T/old-plugins run_estc cacerts --server coaps://127.0.0.1:9 --trust "pkcs11:token=none;object=ca"
  expect_fail "pkcs11: trust anchor with a plug-in of an older library" 1 'pkcs11: engine plug-in .* cannot be used: driver API version 1'
  run_estc csr --key "nosuch:k" --subject /CN=x
  expect_fail "an unknown scheme is a file name" 1 'nosuch:k: No such file'
  check "plug-in errors: nothing created" empty_dir
else
  echo "# skip: plug-in errors: no pkcs11: plug-in built"
fi

finish
