#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs one part of the persist suite with its peers:
#   run.sh PART TEST-PROGRAM
# unit: no peer. software / server: two estc-server instances on loopback
# (A issues certificates valid for a few seconds; B answers each client's
# first enrollment request with 5.03 + Max-Age 1, the window in which a test
# acts "during an operation"). pkcs11: the same plus a SoftHSM2 token.
set -u
part=$1
prog=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/../fixtures/estc-server.sh"
. "$HERE/../fixtures/softhsm.sh"
. "$HERE/../fixtures/pki.sh"
. "$HERE/../fixtures/processes.sh"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-240}

# ESTC_PERSIST_WRAPPER: a command put in front of the test program
# (valgrind); the servers run without it.
wrap=${ESTC_PERSIST_WRAPPER:-}
if [ "$part" = unit ]; then
  # shellcheck disable=SC2086 # the wrapper is a command line
  exec $wrap "$prog" unit
fi

command -v coap-client-openssl >/dev/null || { echo "SKIP: coap-client-openssl missing"; exit 77; }
bin=${ESTC_SERVER_BIN:-${ESTC_BUILD_ROOT:-}/tools/estc-server/estc-server}
[ -x "$bin" ] || { echo "SKIP: estc-server is not built (-Dserver=disabled)"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/estc-persist.XXXXXX") || exit 1
A_PID=
B_PID=
cleanup() {
  stop_pids "$A_PID" "$B_PID"
  softhsm_stop
  rm -rf "$T"
}
trap cleanup EXIT

# The manufacturer CA the servers trust, and the device's bootstrap (IDevID)
# credentials it issued.
pki_ca "$T/mca.key" "$T/mca.crt" "/CN=Persist Test Manufacturer" 2 || { echo "FAIL: openssl"; exit 1; }
pki_issue "$T/mca.key" "$T/mca.crt" "$T/boot.key" "$T/boot.crt" "/CN=device-1" 1 || exit 1
chmod 600 "$T/boot.key"
export ESTC_TEST_BOOT_CERT=$T/boot.crt ESTC_TEST_BOOT_KEY=$T/boot.key ESTC_TEST_DIR=$T

ESTC_SERVER_STATE=$T/srv-a
mkdir -p "$ESTC_SERVER_STATE"
estc_server_start --client-ca "$T/mca.crt" --validity "${ESTC_TEST_VALIDITY:-12}" \
  --dedup-window 0 || { echo "FAIL: estc-server A did not start"; exit 1; }
A_PID=$ESTC_SERVER_PID
export ESTC_TEST_A_URI=$ESTC_SERVER_URI/est ESTC_TEST_A_CA=$ESTC_SERVER_CA
ESTC_SERVER_STATE=$T/srv-b
mkdir -p "$ESTC_SERVER_STATE"
estc_server_start --client-ca "$T/mca.crt" --validity 600 --delay-first 1 --max-age 1 \
  --dedup-window 0 || { echo "FAIL: estc-server B did not start"; exit 1; }
B_PID=$ESTC_SERVER_PID
export ESTC_TEST_B_URI=$ESTC_SERVER_URI/est ESTC_TEST_B_CA=$ESTC_SERVER_CA

if [ "$part" = pkcs11 ]; then
  softhsm_start || exit $?
  softhsm_init_token persist 1234 5678 || { echo "FAIL: token"; exit 1; }
  command -v pkcs11-tool >/dev/null || { echo "FAIL: pkcs11-tool missing"; exit 1; }
  export ESTC_TEST_P11_PREFIX="pkcs11:token=persist;pin-value=1234?module-path=$SOFTHSM_MODULE"
fi

# shellcheck disable=SC2086
$wrap "$prog" "$part"
rc=$?
if [ $rc -ne 0 ]; then
  echo "--- server A log (tail)"; tail -20 "$T/srv-a/server.log" 2>/dev/null
  echo "--- server B log (tail)"; tail -20 "$T/srv-b/server.log" 2>/dev/null
fi
exit $rc
