# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Helpers shared by the estc-server tests: a real coap-client-openssl against a
# real estc-server on loopback, certificates made by the openssl command.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VECTORS=$HERE/vectors
. "$HERE/../fixtures/estc-server.sh"
. "$HERE/../fixtures/pki.sh"
. "$HERE/../fixtures/report.sh"

command -v coap-client-openssl >/dev/null || { echo "SKIP: coap-client-openssl missing"; exit 77; }
command -v openssl >/dev/null || { echo "FAIL: openssl missing"; exit 1; }

# In sanitizer builds, any report makes the server exit non-zero, which the
# tests check when they stop it.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

T=$(mktemp -d)

cleanup() {
  estc_server_stop
  rm -rf "$T"
}
trap cleanup EXIT

# A manufacturer CA (the IDevID issuer the server trusts) and a device certificate.
make_pki() {
  pki_ca "$T/mca.key" "$T/mca.crt" "/CN=Test Manufacturer CA" 2 &&
    pki_issue "$T/mca.key" "$T/mca.crt" "$T/dev.key" "$T/dev.crt" "/CN=device-1" 1 &&
    # A client nobody vouches for.
    pki_self_signed "$T/rogue.key" "$T/rogue.crt" "/CN=rogue" 1
}

# new_csr NAME SUBJECT [openssl req args...]: key $T/NAME.key, DER CSR $T/NAME.csr
new_csr() {
  local name=$1 subj=$2; shift 2
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$name.key" \
    -outform DER -out "$T/$name.csr" -subj "$subj" "$@" 2>/dev/null
}

# coap [coap-client args...] PATH: runs coap-client-openssl against the
# server with the device credentials unless CERT/KEY say otherwise
# (CERT=none: no client certificate). The payload goes to $T/out; CODE is the
# last response code of the -v trace (coap-client exits 0 even on errors),
# RCF its Content-Format, TRACE the trace file.
coap() {
  local path=${!#}
  local args=("${@:1:$#-1}")
  local cert=${CERT:-$T/dev.crt} key=${KEY:-$T/dev.key}
  local creds=()
  [ "$cert" = none ] || creds=(-c "$cert" -j "$key")
  rm -f "$T/out"
  TRACE=$T/trace
  coap-client-openssl -v 7 -B 10 -C "$ESTC_SERVER_CA" "${creds[@]}" -o "$T/out" "${args[@]}" \
    "$ESTC_SERVER_URI$path" >"$TRACE" 2>&1
  CODE=$(grep -oE '^v:1 t:(ACK|CON|NON) c:[2-5]\.[0-9]{2}' "$TRACE" | tail -1 | sed 's/.*c://')
  RCF=$(grep -E '^v:1 t:(ACK|CON|NON) c:[2-5]\.[0-9]{2}' "$TRACE" | tail -1 |
    grep -oE 'Content-Format:[^ ,]+' | sed 's/Content-Format://')
  [ -f "$T/out" ] || : >"$T/out"
}

# expect_code WANT DESCRIPTION
expect_code() {
  if [ "${CODE:-none}" = "$1" ]; then pass "$2 -> $1"; else
    fail "$2: wanted $1, got ${CODE:-none}"
    sed 's/^/     | /' "$TRACE" | grep -E 'c:|WARN|ERR' | tail -5
  fi
}

# The diagnostic text of the last response.
diag() {
  grep -E '^v:1 t:(ACK|CON|NON) c:[45]\.[0-9]{2}' "$TRACE" | tail -1 | sed -n "s/.*:: '\(.*\)'$/\1/p"
}

index_lines() {
  wc -l <"$ESTC_SERVER_STATE/state/index.txt"
}

fingerprint() { # FILE FORM
  openssl x509 -inform "$2" -in "$1" -noout -fingerprint -sha256 2>/dev/null
}

# verifies [openssl verify options...] PEM: chains to the server's CA
verifies() {
  openssl verify -CAfile "$ESTC_SERVER_CA" "$@" >/dev/null 2>&1
}

# stop_server DESCRIPTION: SIGTERM, then the exit status must be 0
stop_server() {
  estc_server_stop_keep_state
  check "$1: clean exit on SIGTERM" test "${ESTC_SERVER_STATUS:-1}" -eq 0
}
