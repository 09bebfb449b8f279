#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs test-pop against estc-server --pop on loopback (real DTLS, libcoap):
# makes device (IDevID) credentials from a CA of their own, which the server
# accepts with --client-ca, and passes everything in the environment.
#   usage: pop-fixture.sh TEST_POP
set -u
prog=$(realpath "$1")
: "${ESTC_SOURCE_ROOT:?}"
. "$ESTC_SOURCE_ROOT/tests/fixtures/estc-server.sh"
. "$ESTC_SOURCE_ROOT/tests/fixtures/pki.sh"

tmp=$(mktemp -d) || exit 1
cleanup() {
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

pki_idevid "$tmp" "/CN=PoP IDevID CA" "/CN=pop-idevid" || exit 1
export POP_CERT=$tmp/device.pem POP_KEY=$tmp/device.key
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-200}

estc_server_start --client-ca "$tmp/idevid-ca.pem" --pop || { echo "estc-server did not start" >&2; exit 1; }
"$prog"
rc=$?
[ "$rc" -eq 0 ] || estc_server_show_log
exit $rc
