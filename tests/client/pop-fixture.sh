#!/usr/bin/env bash
# Runs test-pop against estc-server --pop on loopback (real DTLS, libcoap):
# makes device (IDevID) credentials from a CA of their own, which the server
# accepts with --client-ca, and passes everything in the environment.
#   usage: pop-fixture.sh TEST_POP
set -u
prog=$(realpath "$1")
: "${ESTC_SOURCE_ROOT:?}"
. "$ESTC_SOURCE_ROOT/tests/fixtures/estc-server.sh"

tmp=$(mktemp -d) || exit 1
cleanup() {
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

ossl() { openssl "$@" 2>>"$tmp/openssl.log" >/dev/null || { cat "$tmp/openssl.log" >&2; exit 1; }; }
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
# shellcheck disable=SC2086
ossl req -x509 $ec -keyout "$tmp/idevid-ca.key" -out "$tmp/idevid-ca.pem" -days 2 \
  -subj "/CN=PoP IDevID CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign"
# shellcheck disable=SC2086
ossl req $ec -keyout "$tmp/device.key" -out "$tmp/device.csr" -subj "/CN=pop-idevid"
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$tmp/device.ext"
ossl x509 -req -in "$tmp/device.csr" -CA "$tmp/idevid-ca.pem" -CAkey "$tmp/idevid-ca.key" \
  -CAcreateserial -days 2 -extfile "$tmp/device.ext" -out "$tmp/device.pem"
chmod 600 "$tmp"/*.key
export POP_CERT=$tmp/device.pem POP_KEY=$tmp/device.key
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-200}

estc_server_start --client-ca "$tmp/idevid-ca.pem" --pop || { echo "estc-server did not start" >&2; exit 1; }
"$prog"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- server log (tail)" >&2
  tail -20 "$ESTC_SERVER_LOG" >&2
fi
exit $rc
