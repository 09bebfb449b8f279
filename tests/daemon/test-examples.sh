#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The examples against estc-server: persistence (mem: key in the state
# file) and hsm (everything in a SoftHSM2 token, CA objects named by the
# example's generator). Each enrolls, then restores without enrolling again.
. "$(dirname "$0")/common.sh"
PEX=${ESTC_PERSISTENCE_EXAMPLE:?}
HEX=${ESTC_HSM_EXAMPLE:?}

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --validity 60 --dedup-window 0

ex() { run_cmd "$@"; }

ex "$PEX" "$T/p.state" "$ESTC_SERVER_URI/est" "$ESTC_SERVER_CA" "$T/dev.crt" "$T/dev.key" once
expect_ok "persistence example: first run"
check "persistence example: enrolled" grep -q '^enrolled: valid' "$T/stdout"
check "persistence example: state 0600" test "$(stat -c %a "$T/p.state")" = 600
ex "$PEX" "$T/p.state" "$ESTC_SERVER_URI/est" "$ESTC_SERVER_CA" "$T/dev.crt" "$T/dev.key" once
expect_ok "persistence example: second run"
check "persistence example: restored, no new enrollment" bash -c "grep -q '^restored' '$T/stdout' && ! grep -q '^enrolled$' '$T/stdout' && ! grep -q '^enrolled ' '$T/stdout'"
run_estc status --state "$T/p.state"
expect_ok "estc status reads the example's state"

start_token dev "$PIN"
n0=$(count)
printf '%s' "$PIN" >"$T/pin"
chmod 600 "$T/pin"
ex "$HEX" "$T/h.state" "$ESTC_SERVER_URI/est" "$ESTC_SERVER_CA" "$T/dev.crt" "$T/dev.key" dev \
  "$SOFTHSM_MODULE" "$T/pin" once
expect_ok "hsm example: first run"
check "hsm example: CA object named by the generator" grep -qE '^CA certificate 0: object=ca-estc-server-test-CA-[0-9a-f]{8}$' "$T/stdout"
n1=$(count)
check "hsm example: key pair, certificate, CA in the token ($n0 -> $n1)" test "$n1" -eq $((n0 + 4))
check "hsm example: the token holds device-cert" bash -c "pkcs11-tool --module '$SOFTHSM_MODULE' --token-label dev --login --pin '$PIN' --read-object --type cert --label device-cert 2>/dev/null | openssl x509 -inform DER -out '$T/h.pem' && openssl verify -CAfile '$ESTC_SERVER_CA' '$T/h.pem'"
check "hsm example: no PIN in the state file (pin-source)" bash -c "! grep -qa '$PIN' '$T/h.state'"
ex "$HEX" "$T/h.state" "$ESTC_SERVER_URI/est" "$ESTC_SERVER_CA" "$T/dev.crt" "$T/dev.key" dev \
  "$SOFTHSM_MODULE" "$T/pin" once
expect_ok "hsm example: second run restores"
check "hsm example: nothing new in the token" test "$(count)" -eq "$n1"
# A wrong PIN: a clear failure, no PIN shown, the token unchanged.
printf '000000' >"$T/badpin"
chmod 600 "$T/badpin" # a PIN file open to others is refused before any login
ex "$HEX" "$T/h2.state" "$ESTC_SERVER_URI/est" "$ESTC_SERVER_CA" "$T/dev.crt" "$T/dev.key" dev \
  "$SOFTHSM_MODULE" "$T/badpin" once
check "hsm example: wrong PIN fails (exit $RC)" test "$RC" -ne 0
check "hsm example: wrong PIN leaves the token unchanged" test "$(count)" -eq "$n1"
finish
