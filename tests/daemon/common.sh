# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the tests
# Shared by the daemon tests: the estc-server and SoftHSM2 fixtures, the
# estc command (all through client-interop/lib.sh), and helpers for daemons
# started in the background.
. "$(dirname "${BASH_SOURCE[0]}")/../client-interop/lib.sh"
. "$SRC/tests/fixtures/processes.sh"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
DAEMON_PIDS=()
stop_daemons() {
  stop_pids "${DAEMON_PIDS[@]}"
  DAEMON_PIDS=()
}
CLEANUPS+=(stop_daemons)

# start_daemon LOG [estc run options...]: `estc run` with RUN and the
# options in the background, its log (stderr) in LOG and stdout in
# $T/run.out; DPID is its PID.
start_daemon() {
  local log=$1
  shift
  # shellcheck disable=SC2086 # the wrapper is a command line
  $WRAP "$ESTC" run "${RUN[@]}" "$@" >"$T/run.out" 2>"$log" &
  DPID=$!
  DAEMON_PIDS=("$DPID")
}

# stop_daemon SIGNAL: sends SIGNAL to the daemon and waits for it; RC is its
# exit status.
stop_daemon() {
  kill "-$1" "$DPID" 2>/dev/null
  wait "$DPID" 2>/dev/null
  RC=$?
  DAEMON_PIDS=()
}

# The user PIN of the SoftHSM2 token "dev" (start_token dev "$PIN", in lib.sh).
PIN=362514

# The options of a daemon whose credentials live in the token.
run_opts() {
  RUN=(--state "$T/state" "${NET[@]}" "${BOOT[@]}" --subject /CN=daemon-1
    --new-key "$(addr est-key)" --new-cert "$(addr est-cert)" --ca-out "$P11;pin-value=$PIN$Q"
    --retry-spacing 1)
}

# held_cert OUT.pem: the certificate the state names, read from the token
# with pkcs11-tool (not through estc); fails when there is none.
held_cert() {
  local label
  timeout 60 "$ESTC" status --state "$T/state" >"$T/status.out" 2>"$T/status.err" || true
  label=$(sed -n 's/^certificate .*object=\([^;?]*\).*/\1/p' "$T/status.out")
  [ -n "$label" ] || return 1
  pkcs11-tool --module "$SOFTHSM_MODULE" --token-label dev --login --pin "$PIN" \
    --read-object --type cert --label "$label" 2>/dev/null >"$T/held.der" || return 1
  openssl x509 -inform DER -in "$T/held.der" -out "$1" 2>/dev/null
}

# valid_held: the held certificate verifies against the server's CA now.
valid_held() {
  held_cert "$T/held.pem" && openssl verify -CAfile "$ESTC_SERVER_CA" "$T/held.pem" >/dev/null 2>&1
}

# wait_for FILE REGEX COUNT SECONDS: until FILE has COUNT lines matching.
wait_for() {
  local i n
  for i in $(seq 1 $(($4 * 5))); do
    n=$(grep -cE -- "$2" "$1" 2>/dev/null || true)
    [ "${n:-0}" -ge "$3" ] && return 0
    sleep 0.2
  done
  return 1
}

# count_split: LABELLED and PARTIAL, the token's objects with a label and
# those without one. Every object estc makes has a label; an unlabelled
# certificate is what SoftHSM2's file store leaves when the process dies
# inside C_CreateObject (it writes the object's attributes in several steps).
count_split() {
  local out
  out=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label dev --login --pin "$PIN" \
    --list-objects 2>/dev/null) || return 1
  read -r LABELLED PARTIAL < <(printf '%s\n' "$out" | awk '
    /^(Private Key|Public Key|Certificate|Data|Secret Key) Object/ { if (o) p++; o = 1; next }
    o && /^ *label:/ { sub(/^ *label: */, ""); if ($0 != "") l++; else p++; o = 0 }
    END { if (o) p++; print l + 0, p + 0 }')
}
