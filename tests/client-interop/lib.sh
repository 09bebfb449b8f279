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

command -v coap-client-openssl >/dev/null || { echo "FAIL: coap-client-openssl missing"; exit 1; }
command -v openssl >/dev/null || { echo "FAIL: openssl missing"; exit 1; }
[ -x "$ESTC" ] || { echo "FAIL: no estc program at $ESTC"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/estc-cli.XXXXXX")
chmod 700 "$T"
FAILED=0
PASSED=0
CLEANUPS=()

cleanup() {
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c"; done
  estc_server_stop
  rm -rf "$T"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() {
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
}

# A manufacturer CA (the IDevID issuer the server trusts) and a device
# certificate: the bootstrap credentials for /sen and /skg.
make_pki() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/mca.key" -out "$T/mca.crt" -subj "/CN=Test Manufacturer CA" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    2>/dev/null || return 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/dev.key" \
    -out "$T/dev.csr" -subj "/CN=idevid-1" 2>/dev/null || return 1
  openssl x509 -req -in "$T/dev.csr" -CA "$T/mca.crt" -CAkey "$T/mca.key" -CAcreateserial \
    -out "$T/dev.crt" -days 1 2>/dev/null || return 1
  # A CA that has nothing to do with the server.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/other.key" -out "$T/other.crt" -subj "/CN=Other CA" -days 1 \
    -addext basicConstraints=critical,CA:TRUE 2>/dev/null
}

# start_server [estc-server options]: a server that trusts the manufacturer CA.
start_server() {
  estc_server_start --client-ca "$T/mca.crt" "$@" || { echo "FAIL: estc-server did not start"; exit 1; }
  # The options every network subcommand takes.
  NET=(--server "$ESTC_SERVER_URI" --trust "$ESTC_SERVER_CA")
  BOOT=(--cert "$T/dev.crt" --key "$T/dev.key")
}

# run_estc ARGS...: runs estc (bounded in time); RC, stdout in $T/stdout,
# stderr in $T/stderr.
run_estc() {
  # shellcheck disable=SC2086 # the wrapper is a command line
  timeout 150 $WRAP "$ESTC" "$@" >"$T/stdout" 2>"$T/stderr"
  RC=$?
}

show_err() { sed 's/^/       | /' "$T/stderr" | head -20; }

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
