#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Renewal control: `estc status --json` (one JSON object, ISO 8601 UTC
# dates, PINs hidden) for a certificate and for the state of `estc run`;
# the text status with the same dates; at the default verbosity, one line
# for a 5.03 wait (`estc enroll` and `estc run`); the renewal jitter: two
# devices with the same validity renew at different times, the same across
# restarts, and --jitter 0 gives exactly the renewal formula; --exec runs
# after every enrollment and renewal with the addresses (PINs hidden) in
# its environment, a failing hook fails nothing, a hung one is killed.
. "$(dirname "$0")/common.sh"

start_token dev "$PIN"
make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
pki_issue "$T/mca.key" "$T/mca.crt" "$T/dev2.key" "$T/dev2.crt" "/CN=idevid-2" 1 ||
  { echo "FAIL: cannot make the second device"; exit 1; }
# Each device's first enrollment is answered 5.03 with Max-Age 2.
start_server --validity 864000 --dedup-window 0 --delay-first 1 --max-age 2
mkdir -m 700 "$T/dev"
ISO='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

# ---- one line for a 5.03 wait at the default verbosity ------------------
run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=control-1 \
  --new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem"
expect_ok "enroll through a 5.03"
check "enroll (no -v): one line names the 5.03 and the wait" \
  test "$(grep -cE '5\.03, retrying in 2 s' "$T/stderr")" -eq 1
check "enroll (no -v): no other library line" \
  bash -c "! grep -E '^estc: (warning|error|info|debug): ' '$T/stderr' | grep -qv '5\.03'"
run_estc enroll -q "${NET[@]}" "${BOOT[@]}" --subject /CN=control-q \
  --new-key "file:$T/dev/keyq.pem" --new-cert "file:$T/dev/certq.pem"
expect_ok "enroll -q"

# ---- status --json for a certificate and key -----------------------------
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d.get(sys.argv[2]); print("null" if v is None else v)' "$@"; }
run_estc status --json --new-cert "file:$T/dev/cert.pem" --new-key "file:$T/dev/key.pem"
expect_ok "status --json"
cp "$T/stdout" "$T/cert.json"
check "status --json: one JSON object" python3 -m json.tool "$T/cert.json"
check "status --json: subject" grep -q 'control-1' <<<"$(json_get "$T/cert.json" subject)"
check "status --json: state valid" test "$(json_get "$T/cert.json" state)" = valid
check "status --json: keyMatches" test "$(json_get "$T/cert.json" keyMatches)" = True
serial=$(openssl x509 -in "$T/dev/cert.pem" -noout -serial | cut -d= -f2)
check "status --json: serial ($serial)" test "$(json_get "$T/cert.json" serial)" = "$serial"
for f in notBefore notAfter; do
  check "status --json: $f is ISO 8601 UTC" grep -qE "$ISO" <<<"$(json_get "$T/cert.json" $f)"
done
na=$(openssl x509 -in "$T/dev/cert.pem" -noout -enddate | cut -d= -f2)
check "status --json: notAfter is the certificate's" \
  test "$(date -u -d "$na" +%Y-%m-%dT%H:%M:%SZ)" = "$(json_get "$T/cert.json" notAfter)"

# The text status shows the same dates.
run_estc status --new-cert "file:$T/dev/cert.pem"
expect_ok "status (text)"
check "status (text): not after in ISO 8601 UTC" \
  grep -qE "^not after +$(json_get "$T/cert.json" notAfter)\$" "$T/stdout"
check "status (text): not before in ISO 8601 UTC" \
  grep -qE "^not before +$(json_get "$T/cert.json" notBefore)\$" "$T/stdout"

# ---- estc run (second device): the 5.03 line; status --state --json ------
BOOT=(--cert "$T/dev2.crt" --key "$T/dev2.key")
run_opts
run_estc run "${RUN[@]}" --once
expect_ok "run --once through a 5.03"
check "run (no -v): one line names the 5.03 and the wait" \
  test "$(grep -cE '^estc: run: warning: .*5\.03, retrying in 2 s' "$T/stderr")" -eq 1

run_estc status --json --state "$T/state"
expect_ok "status --state --json"
cp "$T/stdout" "$T/state.json"
check "status --state --json: one JSON object" python3 -m json.tool "$T/state.json"
check "status --state --json: subject" grep -q 'daemon-1' <<<"$(json_get "$T/state.json" subject)"
for f in notBefore notAfter provisioned renewal nextDeadline; do
  check "status --state --json: $f is ISO 8601 UTC" \
    grep -qE "$ISO" <<<"$(json_get "$T/state.json" $f)"
done
check "status --state --json: key address with the PIN hidden" \
  grep -q 'pin-value=\*\*\*' <<<"$(json_get "$T/state.json" key)"
check "status --state --json: trust store listed" \
  python3 -c 'import json,sys; assert len(json.load(open(sys.argv[1]))["trustStore"]) == 1' "$T/state.json"
check "status --state --json: no PIN" bash -c "! grep -q '$PIN' '$T/state.json' '$T/stderr'"

# ---- jitter -------------------------------------------------------------
# A second device (the first IDevID) with its own state and file: engine.
RUN2=(--state "$T/state2" "${NET[@]}" --cert "$T/dev.crt" --key "$T/dev.key" --subject /CN=daemon-2
  --new-key "file:$T/dev/k2.pem" --new-cert "file:$T/dev/c2.pem" --retry-spacing 1)
run_estc run "${RUN2[@]}" --once --jitter 100%
expect_ok "second device: run --once --jitter 100%"
cp "$T/stderr" "$T/run2.log"
# renewal_of STATE [status options]: the renewal time in seconds.
renewal_of() {
  local st=$1
  shift
  timeout 60 "$ESTC" status --json --state "$st" "$@" >"$T/j.json" 2>/dev/null || return 1
  python3 -c 'import json,sys,calendar,time
d=json.load(open(sys.argv[1]))
print(calendar.timegm(time.strptime(d["renewal"], "%Y-%m-%dT%H:%M:%SZ")))' "$T/j.json"
}
# formula_of STATE: max(notAfter - 30 days, p + 0.9 (notAfter - p)), from status.
formula_of() {
  timeout 60 "$ESTC" status --json --state "$1" >"$T/f.json" 2>/dev/null || return 1
  python3 -c 'import json,sys,calendar,time
d=json.load(open(sys.argv[1]))
t=lambda k: calendar.timegm(time.strptime(d[k], "%Y-%m-%dT%H:%M:%SZ"))
nb,na,p=t("notBefore"),t("notAfter"),t("provisioned")
p=min(max(p,nb),na)
print(min(na, max(na-2592000, p+int(0.9*(na-p)))))' "$T/f.json"
}
for st in state state2; do
  f=$(formula_of "$T/$st")
  z=$(renewal_of "$T/$st" --jitter 0)
  check "$st: --jitter 0 gives exactly the formula ($z == $f)" test -n "$f" -a "$z" = "$f"
  j=$(renewal_of "$T/$st" --jitter 100%)
  eval "off_$st=\$((f - j))"
  check "$st: --jitter 100% moves the renewal earlier ($j < $f)" test -n "$j" -a "$j" -lt "$f"
  check "$st: the same offset when asked again (a restart)" \
    test "$(renewal_of "$T/$st" --jitter 100%)" = "$j"
  d=$(renewal_of "$T/$st")
  check "$st: default jitter at most a day ($((f - d)) s)" test "$((f - d))" -ge 0 -a "$((f - d))" -le 86400
  k=$(renewal_of "$T/$st" --jitter 600)
  check "$st: --jitter 600 moves it at most 600 s ($((f - k)) s)" test "$((f - k))" -ge 0 -a "$((f - k))" -lt 600
done
at=$(sed -n 's/^estc: run: enrolled: .*renewal at \([^ ]*\)$/\1/p' "$T/run2.log")
check "the daemon renews at the jittered time it logged ($at)" \
  test -n "$at" -a "$(date -u -d "$at" +%s)" = "$(renewal_of "$T/state2" --jitter 100%)"
# shellcheck disable=SC2154 # set by eval above
check "two devices, same validity: different offsets ($off_state != $off_state2)" \
  test "$off_state" != "$off_state2"
run_estc status --state "$T/state" --jitter 101%
expect_fail "--jitter 101%: usage error" 2 'jitter'
run_estc status --new-cert "file:$T/dev/cert.pem" --jitter 10%
expect_fail "--jitter without --state: usage error" 2 'jitter'

# ---- --exec --------------------------------------------------------------
cat >"$T/hook.sh" <<'HOOK'
#!/bin/sh
n=$(($(cat "$HOOK_DIR/count" 2>/dev/null || echo 0) + 1))
echo "$n" >"$HOOK_DIR/count"
env | grep '^ESTC_' | sort >"$HOOK_DIR/env.$n"
[ -n "$HOOK_HANG" ] && { echo $$ >"$HOOK_DIR/hung.$n"; exec sleep 60; }
exit 3
HOOK
chmod +x "$T/hook.sh"
mkdir "$T/hook"
export HOOK_DIR="$T/hook"
# Renewal about a second after each enrollment: --nominal-usage 0.000002.
RUN3=(--state "$T/state3" "${NET[@]}" --cert "$T/dev.crt" --key "$T/dev.key" --subject /CN=daemon-3
  --new-key "$(addr hook-key)" --new-cert "$(addr hook-cert)" --ca-out "$P11;pin-value=$PIN$Q"
  --retry-spacing 1 --jitter 0 --nominal-usage 0.000002)
RUN=("${RUN3[@]}")
start_daemon "$T/hook.log" --exec "$T/hook.sh" --max-runtime 60
check "--exec: ran after the enrollment and a renewal" wait_for "$T/hook.log" '^estc: run: exec: ' 2 60
check "--exec: the daemon renewed after the failing hook" \
  wait_for "$T/hook.log" '^estc: run: reenrolled: ' 1 30
stop_daemon TERM
check "--exec: a failing hook fails nothing (SIGTERM: exit 0, got $RC)" test "$RC" -eq 0
check "--exec: its exit status logged" grep -q '^estc: run: exec: enrolled: exit status 3$' "$T/hook.log"
check "--exec: first event 'enrolled'" grep -qx 'ESTC_EVENT=enrolled' "$T/hook/env.1"
check "--exec: second event 'reenrolled'" grep -qx 'ESTC_EVENT=reenrolled' "$T/hook/env.2"
check "--exec: ESTC_CERT and ESTC_KEY, PIN as ***" bash -c "
  grep '^ESTC_CERT=pkcs11:token=dev;' '$T/hook/env.2' | grep 'object=hook-cert' | grep -q 'pin-value=\*\*\*' &&
  grep '^ESTC_KEY=pkcs11:token=dev;' '$T/hook/env.2' | grep 'object=hook-key' | grep -q 'pin-value=\*\*\*'"
check "--exec: ESTC_CA names the CA certificate" grep -q '^ESTC_CA=pkcs11:.*pin-value=\*\*\*' "$T/hook/env.2"
check "--exec: no PIN in the hook's environment" bash -c "! grep -q '$PIN' '$T'/hook/env.*"
na_env=$(sed -n 's/^ESTC_NOT_AFTER=//p' "$T/hook/env.2")
check "--exec: ESTC_NOT_AFTER in ISO 8601 UTC ($na_env)" grep -qE "$ISO" <<<"$na_env"
na_log=$(grep '^estc: run: reenrolled: ' "$T/hook.log" | head -1 | sed -n 's/.*valid until \([^,]*\),.*/\1/p')
check "--exec: ESTC_NOT_AFTER is the renewed certificate's ($na_log)" test "$na_env" = "$na_log"

# A hook that hangs is killed (with its children) after --exec-timeout.
rm -rf "$T/hook" && mkdir "$T/hook"
export HOOK_HANG=1
start_daemon "$T/hang.log" --exec "$T/hook.sh" --exec-timeout 1 --max-runtime 60
check "--exec-timeout: the hung hook is killed and logged" \
  wait_for "$T/hang.log" '^estc: run: exec: reenrolled: killed after 1 s' 1 40
hung=$(cat "$T/hook/hung.1" 2>/dev/null)
# Gone, or a zombie left to the container's init (killed all the same).
check "--exec-timeout: the hook's process is gone" \
  bash -c "[ -n '$hung' ] && { [ ! -e /proc/$hung ] || grep -q '^[0-9]* ([^)]*) Z' /proc/$hung/stat; }"
check "--exec-timeout: the daemon goes on renewing" \
  wait_for "$T/hang.log" '^estc: run: reenrolled: ' 2 40
stop_daemon TERM
check "--exec-timeout: SIGTERM: exit 0 (got $RC)" test "$RC" -eq 0
unset HOOK_HANG
run_estc run "${RUN2[@]}" --exec-timeout 5 --once
expect_fail "--exec-timeout without --exec: usage error" 2 'exec-timeout goes with --exec'
finish
