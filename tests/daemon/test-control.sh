#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Renewal control: `estc status --json` (one JSON object, ISO 8601 UTC
# dates, PINs hidden) for a certificate and for the state of `estc run`;
# the text status with the same dates; at the default verbosity, one line
# for a 5.03 wait (`estc enroll` and `estc run`).
. "$(dirname "$0")/common.sh"

start_token dev "$PIN"
make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
pki_issue "$T/mca.key" "$T/mca.crt" "$T/dev2.key" "$T/dev2.crt" "/CN=idevid-2" 1 ||
  { echo "FAIL: cannot make the second device"; exit 1; }
# Each device's first enrollment is answered 5.03 with Max-Age 2.
start_server --validity 3600 --dedup-window 0 --delay-first 1 --max-age 2
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
finish
