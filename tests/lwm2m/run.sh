#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Suite 'lwm2m': the lwm2m-device example against estc-server
# --lwm2m-bootstrap on loopback, the enrolled key in a SoftHSM2 token.
#   run.sh CASE   with CASE one of: flow, no-est, bootstrap-est, errors
# Environment: ESTC_BUILD_ROOT, ESTC_SOURCE_ROOT (set by meson);
# LWM2M_WRAPPER (optional) runs the device under e.g. valgrind.
set -u
CASE=${1:?case}
SRC=${ESTC_SOURCE_ROOT:?}
BLD=${ESTC_BUILD_ROOT:?}
DEVICE=$BLD/examples/lwm2m-bootstrap/lwm2m-device
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$BLD/tools/estc-server/estc-server}
. "$SRC/tests/fixtures/estc-server.sh"
. "$SRC/tests/fixtures/softhsm.sh"
. "$SRC/tests/fixtures/pki.sh"
. "$SRC/tests/fixtures/report.sh"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

[ -x "$DEVICE" ] || { echo "SKIP: lwm2m-device not built"; exit 77; }
[ -x "$ESTC_SERVER_BIN" ] || { echo "SKIP: estc-server not built"; exit 77; }
softhsm_start || exit $?

T=$(mktemp -d)
cleanup() {
  estc_server_stop
  softhsm_stop
  rm -rf "$T"
}
trap cleanup EXIT

# The factory CA and the device's IDevID (software, as shipped).
pki_self_signed "$T/fca.key" "$T/fca.pem" /CN=factory-ca 2 || exit 1
pki_issue "$T/fca.key" "$T/fca.pem" "$T/dev.key" "$T/dev.pem" /CN=dev-1 2 || exit 1
chmod 600 "$T/dev.key"

softhsm_init_token lw 1234 5678 || exit 1
P11="pin-value=1234?module-path=$SOFTHSM_MODULE"
STATE=$T/state

# device [extra options]: output in $T/out, exit status in $DEV_RC
device() {
  ${LWM2M_WRAPPER:-} "$DEVICE" --server "$ESTC_SERVER_URI" --ep dev-1 --trust "$ESTC_SERVER_CA" \
    --bootstrap-cert "$T/dev.pem" --bootstrap-key "$T/dev.key" \
    --key "pkcs11:token=lw;object=lwm2m-key;$P11" --cert "pkcs11:token=lw;object=lwm2m-cert;$P11" \
    --ca-prefix "pkcs11:token=lw;$P11" --state "$STATE" "$@" >"$T/out" 2>&1
  DEV_RC=$?
  sed 's/^/    | /' "$T/out"
}
# certificates the server issued to the device (its log at -v)
issued() { grep -c "issued a certificate to /CN=dev-1" "$ESTC_SERVER_LOG"; }
objects() { softhsm_count_objects lw 1234; }
has() { grep -q -- "$1" "$T/out"; }
slog() { grep -q -- "$1" "$ESTC_SERVER_LOG"; }

start() {
  ESTC_SERVER_RUNTIME=120 estc_server_start --client-ca "$T/fca.pem" -v --lwm2m-bootstrap \
    --lwm2m-server-uri coaps://127.0.0.1:5784 "$@" || exit 1
}

case $CASE in
flow)
  start
  device
  check "first run: exit 0" [ "$DEV_RC" = 0 ]
  check "first run: Security instance written with mode 4" has "write /0/1: uri coaps://127.0.0.1:5784, bootstrap no, security mode 4"
  check "first run: Bootstrap-Finish received" has "bootstrap: finish"
  check "first run: enrolled over the bootstrap session" has "est: enrolled over the bootstrap session (1 CA"
  check "first run: the account gets the token's EST certificate and key" \
    has "account /0/1: certificate pkcs11:token=lw;object=lwm2m-cert"
  check "first run: credentials from EST" has "account /0/1: credentials from EST: yes"
  check "first run: the trust store is the /crts set in the token" has "account /0/1: trust pkcs11:token=lw;"
  check "server: bootstrap finished" slog "bootstrap of 'dev-1' finished"
  check "server: one certificate issued" [ "$(issued)" = 1 ]
  n1=$(objects)
  # key pair (private + public), certificate, one CA certificate
  check "token: 4 objects after enrollment (got $n1)" [ "$n1" = 4 ]
  check "state file is 0600" [ "$(stat -c %a "$STATE")" = 600 ]
  device
  check "second run: exit 0" [ "$DEV_RC" = 0 ]
  check "second run: restored, no enrollment" has "est: state restored, no bootstrap and no enrollment"
  check "second run: same EST credentials" has "account /0/1: certificate pkcs11:token=lw;object=lwm2m-cert"
  check "second run: still one certificate issued" [ "$(issued)" = 1 ]
  check "second run: token objects unchanged" [ "$(objects)" = "$n1" ]
  device --rebootstrap
  check "re-bootstrap: exit 0" [ "$DEV_RC" = 0 ]
  check "re-bootstrap: already enrolled, no EST" has "est: already enrolled, nothing to do"
  check "re-bootstrap: still one certificate issued" [ "$(issued)" = 1 ]
  check "re-bootstrap: token objects unchanged" [ "$(objects)" = "$n1" ]
  ;;
no-est)
  start --lwm2m-mode 2
  device
  check "exit 0" [ "$DEV_RC" = 0 ]
  check "Security instance written with mode 2" has "security mode 2"
  check "no EST" has "est: not used (no account in security mode 4)"
  check "no estc credentials for a mode-2 account" has "account /0/1: certificate (none"
  check "no certificate issued" [ "$(issued)" = 0 ]
  check "no token objects" [ "$(objects)" = 0 ]
  check "server: no EST request" bash -c "! grep -q 'issued a certificate' '$ESTC_SERVER_LOG'"
  device
  check "second run: restored" has "est: state restored"
  check "second run: still nothing issued" [ "$(issued)" = 0 ]
  ;;
bootstrap-est)
  start --lwm2m-bootstrap-mode 4
  device
  check "exit 0" [ "$DEV_RC" = 0 ]
  check "bootstrap account written in mode 4" has "write /0/0: uri coaps://127.0.0.1:$ESTC_SERVER_PORT, bootstrap yes, security mode 4"
  check "first connection with the factory credentials" has "DTLS to .* with the factory credentials"
  check "bootstrap account: EST credentials" has "account /0/0: credentials from EST: yes"
  check "server: first request with the factory certificate" slog "bootstrap request from 'dev-1', client certificate: other"
  device --rebootstrap
  check "next connection: exit 0" [ "$DEV_RC" = 0 ]
  check "next connection with the EST certificate" has "with the EST-enrolled credentials"
  check "server: next request with the EST certificate" slog "client certificate: issued by the EST CA"
  check "one certificate issued" [ "$(issued)" = 1 ]
  ;;
errors)
  check "server: --lwm2m-mode 5 refused" bash -c "! '$ESTC_SERVER_BIN' --lwm2m-bootstrap --lwm2m-mode 5 2>/dev/null"
  check "server: --lwm2m-mode without --lwm2m-bootstrap refused" \
    bash -c "! '$ESTC_SERVER_BIN' --lwm2m-mode 4 2>/dev/null"
  start
  out=$(coap-client-openssl -B 5 -v 6 -m post -C "$ESTC_SERVER_CA" "$ESTC_SERVER_URI/bs" 2>&1)
  check "server: POST /bs without ep=NAME is 4.00" grep -q 'c:4\.00' <<<"$out"
  device
  check "enrolled" [ "$DEV_RC" = 0 ]
  n1=$(objects)
  cp "$STATE" "$T/good"
  # one flipped byte in the middle of the record
  python3 - "$STATE" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x40
open(p, "wb").write(b)
PY
  cp "$STATE" "$T/bad"
  device
  check "corrupt state: refused with a clear error" [ "$DEV_RC" != 0 ]
  check "corrupt state: error names the format" has "restore: .*malformed\|restore: .*format\|restore:"
  check "corrupt state: file untouched" cmp -s "$STATE" "$T/bad"
  check "corrupt state: token objects unchanged" [ "$(objects)" = "$n1" ]
  check "corrupt state: nothing issued" [ "$(issued)" = 1 ]
  head -c 20 "$T/good" >"$STATE"
  device
  check "truncated state: refused" [ "$DEV_RC" != 0 ]
  check "truncated state: token objects unchanged" [ "$(objects)" = "$n1" ]
  cp "$T/good" "$STATE"
  device
  check "good state again: restored" has "est: state restored"
  ;;
*)
  echo "unknown case $CASE"; exit 2 ;;
esac

# A sanitizer report or a crash makes the server exit non-zero.
estc_server_stop_keep_state
check "server stopped cleanly (status ${ESTC_SERVER_STATUS:-?})" [ "${ESTC_SERVER_STATUS:-1}" = 0 ]
finish
