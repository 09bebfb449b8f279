# SPDX-License-Identifier: Apache-2.0
# Helpers shared by the estc command tests: the real estc command against a
# real estc-server on loopback, certificates checked with the openssl command.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=${ESTC_SOURCE_ROOT:-$HERE/../..}
: "${ESTC_BUILD_ROOT:?ESTC_BUILD_ROOT must name the build folder}"
ESTC=${ESTC_BIN:-$ESTC_BUILD_ROOT/tools/estc/estc}
PROVIDER_DIR=$ESTC_BUILD_ROOT/providers/module
# ESTC_TEST_WRAPPER runs estc under a checker, e.g. "valgrind --error-exitcode=99".
WRAP=${ESTC_TEST_WRAPPER:-}
# Servers stop by themselves even if a test dies without cleaning up.
export ESTC_SERVER_RUNTIME=${ESTC_SERVER_RUNTIME:-240}

. "$SRC/tests/fixtures/estc-server.sh"
. "$SRC/tests/fixtures/pki.sh"
. "$SRC/tests/fixtures/report.sh"
. "$SRC/tests/fixtures/softhsm.sh"

command -v coap-client-openssl >/dev/null || { echo "FAIL: coap-client-openssl missing"; exit 1; }
command -v openssl >/dev/null || { echo "FAIL: openssl missing"; exit 1; }
[ -x "$ESTC" ] || { echo "FAIL: no estc program at $ESTC"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/estc-cli.XXXXXX")
chmod 700 "$T"
CLEANUPS=()

cleanup() {
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c"; done
  estc_server_stop
  rm -rf "$T"
}
trap cleanup EXIT

# finish fails when a check failed or none passed.
REPORT_NEED_PASS=1

# A manufacturer CA (the IDevID issuer the server trusts) and a device
# certificate: the bootstrap credentials for /sen and /skg.
make_pki() {
  pki_ca "$T/mca.key" "$T/mca.crt" "/CN=Test Manufacturer CA" 2 &&
    pki_issue "$T/mca.key" "$T/mca.crt" "$T/dev.key" "$T/dev.crt" "/CN=idevid-1" 1 &&
    # A CA that has nothing to do with the server.
    pki_ca "$T/other.key" "$T/other.crt" "/CN=Other CA" 1
}

# start_token LABEL PIN: a fresh SoftHSM2 token with user PIN PIN, removed
# at exit; P11 is the token's URI and Q the module query; addr NAME gives an
# object's address, count the number of objects on the token.
start_token() {
  softhsm_start
  local rc=$?
  [ "$rc" -eq 0 ] || exit "$rc"
  CLEANUPS+=(softhsm_stop)
  command -v pkcs11-tool >/dev/null || { echo "FAIL: pkcs11-tool missing"; exit 1; }
  TOKEN=$1
  PIN=$2
  softhsm_init_token "$TOKEN" "$PIN" 5678 || { echo "FAIL: cannot make a token"; exit 1; }
  P11="pkcs11:token=$TOKEN"
  Q="?module-path=$SOFTHSM_MODULE"
}
addr() { echo "$P11;object=$1;pin-value=$PIN$Q"; }
count() { softhsm_count_objects "$TOKEN" "$PIN"; }

# start_server [estc-server options]: a server that trusts the manufacturer CA.
start_server() {
  estc_server_start --client-ca "$T/mca.crt" "$@" || { echo "FAIL: estc-server did not start"; exit 1; }
  # The options every network subcommand takes.
  NET=(--server "$ESTC_SERVER_URI" --trust "$ESTC_SERVER_CA")
  BOOT=(--cert "$T/dev.crt" --key "$T/dev.key")
}

# untrusted_server SUBJECT KEY CERT WHAT: an enrollment into the engine
# addresses KEY and CERT against a server that the --trust CA did not sign
# fails with exit status 5 and leaves WHAT (counted by count) unchanged; N0
# is the count before.
untrusted_server() {
  N0=$(count)
  run_estc enroll --server "$ESTC_SERVER_URI" --trust "$T/other.crt" "${BOOT[@]}" --subject "$1" \
    --new-key "$2" --new-cert "$3"
  expect_fail "untrusted server" 5
  check "untrusted server: $4 unchanged ($N0 objects)" test "$(count)" -eq "$N0"
}

# run_cmd PROGRAM ARGS...: runs the program under WRAP (bounded in time);
# RC, stdout in $T/stdout, stderr in $T/stderr. run_estc ARGS...: the same
# for estc.
run_cmd() {
  # shellcheck disable=SC2086 # the wrapper is a command line
  timeout 150 $WRAP "$@" >"$T/stdout" 2>"$T/stderr"
  RC=$?
}
run_estc() { run_cmd "$ESTC" "$@"; }

show_err() { sed "s/^/       | /" "$T/stderr" | head -20; sed "s/^/       | /" "$T/stderr" | tail -n +21 | tail -8; }

# expect_ok DESCRIPTION: the last run succeeded.
expect_ok() {
  if [ "$RC" -eq 0 ]; then pass "$1"; else fail "$1 (exit $RC)"; show_err; fi
}

# expect_fail DESCRIPTION STATUS [REGEX]: the last run failed with STATUS and
# exactly one line on stderr, "estc: ...", matching REGEX.
expect_fail() {
  local what=$1 want=$2 re=${3:-.}
  local lines
  lines=$(wc -l <"$T/stderr")
  if [ "$RC" -ne "$want" ]; then
    fail "$what: exit $RC, wanted $want"; show_err
  elif [ "$lines" -ne 1 ]; then
    fail "$what: $lines lines on stderr, wanted one"; show_err
  elif ! grep -qE "^estc: " "$T/stderr" || ! grep -qE -- "$re" "$T/stderr"; then
    fail "$what: stderr does not match '$re'"; show_err
  elif [ -z "${ALLOW_STDOUT:-}" ] && [ -s "$T/stdout" ]; then
    fail "$what: wrote to stdout on failure"
  else
    pass "$what -> exit $want: $(cat "$T/stderr")"
  fi
}

# verify_issued DESCRIPTION PEM: the certificate chains to the server's CA.
verify_issued() {
  if openssl verify -CAfile "$ESTC_SERVER_CA" "$2" >/dev/null 2>&1; then
    pass "$1: openssl verify against the server CA"
  else
    fail "$1: openssl verify against the server CA"
  fi
}

# cert_pub PEM: the certificate's public key, PEM.
cert_pub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }

# engine_pub ADDR: the public key of an engine key, through the estc
# provider module and the openssl command (independent of estc).
engine_pub() {
  openssl pkey -provider-path "$PROVIDER_DIR" -provider estc -provider default \
    -propquery '?provider=default' -in "$1" -pubin -pubout 2>/dev/null ||
    openssl pkey -provider-path "$PROVIDER_DIR" -provider estc -provider default \
      -propquery '?provider=default' -in "$1" -pubout 2>/dev/null
}

# same_key DESCRIPTION CERT-PEM PUB-PEM-TEXT: the certificate is for that key.
same_key() {
  local cp
  cp=$(cert_pub "$2")
  if [ -n "$cp" ] && [ "$cp" = "$3" ]; then
    pass "$1: the certificate's public key is the engine key's"
  else
    fail "$1: the certificate's public key is not the engine key's"
  fi
}

# subject_of PEM: the one-line subject.
subject_of() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 2>/dev/null | sed 's/^subject=//'; }
serial_of() { openssl x509 -in "$1" -noout -serial 2>/dev/null; }

# count_delays: how many 5.03 answers the server gave so far.
count_delays() { grep -c 'delay mode: 5.03' "$ESTC_SERVER_LOG" || true; }
