#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The last error in `estc status --state`: a failed attempt of `estc run` is
# kept in the state (time, error, detail) and shown by status --json
# ("lastError", ISO 8601 UTC) and the text form ("last error"); a new
# certificate clears it. Every date of status --json is ISO 8601 UTC.
. "$(dirname "$0")/common.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --dedup-window 0
mkdir -m 700 "$T/dev"
ISO='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'
KEEP=(--new-key "file:$T/dev/key.pem" --new-cert "file:$T/dev/cert.pem" --retry-spacing 1
  --subject /CN=status-1)
# jq-free: the value at a dotted path of a JSON file ("null" for None).
json_get() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v=None if v is None else v.get(k)
print("null" if v is None else v)' "$@"; }

# A first attempt the server refuses (a bootstrap certificate it does not
# trust): the state is written without a certificate, with the failure.
pki_self_signed "$T/rogue.key" "$T/rogue.crt" "/CN=rogue" 1
before=$(date -u +%s)
run_estc run --state "$T/state" "${NET[@]}" --cert "$T/rogue.crt" --key "$T/rogue.key" "${KEEP[@]}" --once
check "refused enrollment: exit non-zero ($RC)" test "$RC" -ne 0
check "refused enrollment: state written" test -s "$T/state"
check "refused enrollment: the daemon's line has the detail" \
  grep -qE '^estc: run: enroll-failed: .*: POST /[^ ]*sen: 4\.01' "$T/stderr"

run_estc status --json --state "$T/state"
check "status --json after a failure: exit 1 (no certificate)" test "$RC" -eq 1
cp "$T/stdout" "$T/fail.json"
check "status --json: one JSON object" python3 -m json.tool "$T/fail.json"
check "status --json: state none" test "$(json_get "$T/fail.json" state)" = none
t=$(json_get "$T/fail.json" lastError.time)
check "lastError.time is ISO 8601 UTC ($t)" grep -qE "$ISO" <<<"$t"
check "lastError.time is the attempt's" bash -c \
  "s=\$(date -u -d '$t' +%s) && [ \$s -ge $((before - 1)) ] && [ \$s -le \$(date -u +%s) ]"
check "lastError.error names the error ($(json_get "$T/fail.json" lastError.error))" \
  grep -qE '^ESTC_ERR_[A-Z_]+$' <<<"$(json_get "$T/fail.json" lastError.error)"
check "lastError.message is the error's text" \
  test "$(json_get "$T/fail.json" lastError.message)" != null
check "lastError.detail names the request and the answer" grep -q "POST /[^ ]*sen: 4\.01" <<<"$(json_get "$T/fail.json" lastError.detail)"
check "nextDeadline is ISO 8601 UTC" grep -qE "$ISO" <<<"$(json_get "$T/fail.json" nextDeadline)"

run_estc status --state "$T/state"
check "status (text) after a failure: exit 1" test "$RC" -eq 1
check "status (text): the last error, same time and detail" \
  grep -qF "last error   $t: $(json_get "$T/fail.json" lastError.message): $(json_get "$T/fail.json" lastError.detail)" "$T/stdout"

# The next attempt (after --retry-spacing) with good credentials enrolls:
# no last error any more.
sleep 1.2
run_estc run --state "$T/state" "${NET[@]}" "${BOOT[@]}" "${KEEP[@]}" --once
expect_ok "run --once with the good bootstrap credentials"
run_estc status --json --state "$T/state"
expect_ok "status --json after the enrollment"
cp "$T/stdout" "$T/ok.json"
check "status --json: one JSON object" python3 -m json.tool "$T/ok.json"
check "lastError null after a new certificate" \
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert "lastError" in d and d["lastError"] is None' "$T/ok.json"
for f in notBefore notAfter provisioned renewal nextDeadline; do
  check "status --json: $f is ISO 8601 UTC" grep -qE "$ISO" <<<"$(json_get "$T/ok.json" $f)"
done
run_estc status --state "$T/state"
expect_ok "status (text) after the enrollment"
check "status (text): no last error line" bash -c "! grep -q '^last error' '$T/stdout'"
finish
