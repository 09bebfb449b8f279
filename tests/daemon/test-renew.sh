#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc run with its key, certificate and CA certificate in a SoftHSM2 token,
# against estc-server issuing certificates valid for 20 s: the daemon renews
# on time, at least three times; the token's object count stays constant;
# SIGTERM exits 0 with the state written and the objects kept.
. "$(dirname "$0")/common.sh"

start_token dev "$PIN"
make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --validity 20 --dedup-window 0
run_opts
n0=$(count)

# First enrollment (--once): state written, key pair + certificate + CA.
run_estc run "${RUN[@]}" --once
cp "$T/stderr" "$T/once.log"
expect_ok "run --once enrolls"
check "run --once: logged the enrollment" grep -q '^estc: run: enrolled: serial' "$T/once.log"
check "state file is 0600" test "$(stat -c %a "$T/state")" = 600
n1=$(count)
check "token: key pair, certificate and CA added ($n0 -> $n1)" test "$n1" -eq $((n0 + 4))
check "held certificate verifies (pkcs11-tool + openssl verify)" valid_held
check "no PIN in the log" bash -c "! grep -q '$PIN' '$T/once.log'"
serial0=$(openssl x509 -in "$T/held.pem" -noout -serial)
na0=$(openssl x509 -in "$T/held.pem" -noout -enddate | cut -d= -f2)

# The daemon: restores, renews when 90% of the validity has passed.
start=$(date +%s)
start_daemon "$T/run.log" --max-runtime 150
counts=()
renewed=0
for i in 1 2 3; do
  if wait_for "$T/run.log" '^estc: run: reenrolled: ' "$i" 45; then
    renewed=$i
    # Sample between operations: right after the renewal's /crts line.
    wait_for "$T/run.log" '^estc: run: cacerts: ' "$i" 10
    sleep 0.5
    counts+=("$(count)")
  fi
done
check "3 renewals within the time ($renewed)" test "$renewed" -ge 3
elapsed=$(($(date +%s) - start))
# 20 s certificates renewed at 90%: three renewals take at least ~36 s, so
# they happened on schedule, not all at once.
check "renewals were spread over time (${elapsed}s >= 30s)" test "$elapsed" -ge 30
for c in "${counts[@]}"; do
  check "token object count constant after a renewal ($c == $n1)" test "$c" -eq "$n1"
done
stop_daemon TERM
check "SIGTERM: exit 0 (got $RC)" test "$RC" -eq 0
check "SIGTERM: logged the stop" grep -q '^estc: run: stopping on SIGTERM; state written' "$T/run.log"
check "log: one line per event, all 'estc: run: '" bash -c "! grep -qv '^estc: run: ' '$T/run.log'"
check "no PIN in the log" bash -c "! grep -q '$PIN' '$T/run.log'"
n2=$(count)
check "after SIGTERM: objects kept, count unchanged ($n2 == $n1)" test "$n2" -eq "$n1"
check "after SIGTERM: held certificate verifies" valid_held
check "the certificate is a renewed one" test "$(openssl x509 -in "$T/held.pem" -noout -serial)" != "$serial0"
na1=$(openssl x509 -in "$T/held.pem" -noout -enddate | cut -d= -f2)
check "notAfter moved on ($na0 -> $na1)" test "$(date -d "$na1" +%s)" -gt "$(date -d "$na0" +%s)"

# status --state from the written state.
run_estc status --state "$T/state"
expect_ok "status --state: exit 0 with a valid certificate"
check "status: subject, issuer, validity, renewal, addresses, trust store" bash -c "
  grep -q '^subject .*daemon-1' '$T/stdout' && grep -q '^issuer ' '$T/stdout' &&
  grep -q '^not after ' '$T/stdout' && grep -q '^renewal ' '$T/stdout' &&
  grep -q '^key .*pkcs11:token=dev;object=.*pin-value=\*\*\*' '$T/stdout' &&
  grep -q '^trust store  1 CA certificate' '$T/stdout'"
check "status: PIN shown as ***" bash -c "! grep -q '$PIN' '$T/stdout' '$T/stderr'"

# Wait past notAfter without the daemon: status exits 1.
sleep_to=$(($(date -d "$na1" +%s) + 2 - $(date +%s)))
[ "$sleep_to" -gt 0 ] && sleep "$sleep_to"
run_estc status --state "$T/state"
check "status after notAfter: exit 1 (got $RC)" test "$RC" -eq 1
check "status after notAfter: says expired" grep -q 'expired' "$T/stderr"

# The daemon restarted on the expired state falls back to /sen (new key) at once.
run_estc run "${RUN[@]}" --once
expect_ok "run --once on an expired state"
check "expired: fallback enrollment logged" grep -q '^estc: run: fallback-enrolled: ' "$T/stderr"
check "expired: holds a valid certificate again" valid_held
n3=$(count)
check "expired: no orphaned objects after the fallback ($n3 == $n1)" test "$n3" -eq "$n1"
finish
