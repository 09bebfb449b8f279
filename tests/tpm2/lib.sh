# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# The common start of the tpm2 suite's scripts (run.sh, owner-auth.sh,
# keyfile.sh, cache.sh): the swtpm fixture, a private work folder, pass and
# fail counting, and the TPM's handle lists to compare before and after.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   tpm2_lib_start FIXTURE NAME TOOL...
#       sources FIXTURE (tests/fixtures/swtpm.sh), fails when a TOOL is
#       missing, starts swtpm, makes $work (0700, "estc-NAME.XXXXXX") and
#       sets an EXIT trap that stops swtpm and removes $work; exits the
#       script when any of it fails
#   pass TEXT / fail TEXT        one line each; $failures counts the failures
#   tpm2_persistent [HANDLE...]  the persistent handles, without HANDLE...
#   tpm2_handles [HANDLE...]     the same, a "--" line, the NV indices
#   tpm2_transient               the transient handles (none after a test)
#   tpm2_lib_broker              puts tpm2-abrmd (on a private D-Bus session
#       bus) in front of the swtpm and points ESTC_TPM2_TCTI and
#       TPM2TOOLS_TCTI at it, so that a test's estc context and tpm2-tools
#       use the TPM at the same time (swtpm alone serves one connection at a
#       time); returns 77 when tpm2-abrmd or dbus-daemon is missing. Both
#       run under `timeout` and are stopped by pid on exit.

failures=0
pass() { echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

tpm2_lib_start() {
    local fixture=$1 name=$2
    shift 2
    # shellcheck source=../fixtures/swtpm.sh
    . "$fixture"
    swtpm_require 1 tpm2_getcap "$@" || exit $?
    swtpm_start || exit $?
    work=
    trap tpm2__stop EXIT
    work=$(mktemp -d "${TMPDIR:-/tmp}/estc-$name.XXXXXX") || exit 1
    chmod 700 "$work"
}

tpm2_persistent() {
    local h skip=()
    for h in "$@"; do skip+=(-e "$h"); done
    if [ ${#skip[@]} -eq 0 ]; then
        tpm2_getcap handles-persistent
    else
        tpm2_getcap handles-persistent | grep -v -i "${skip[@]}"
    fi
}

tpm2_handles() {
    tpm2_persistent "$@"
    echo "--"
    tpm2_getcap handles-nv-index
}

tpm2_transient() {
    tpm2_getcap handles-transient
}

tpm2__broker_pids=()
tpm2__stop() {
    local p
    for p in "${tpm2__broker_pids[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    swtpm_stop
    [ -z "$work" ] || rm -rf "$work"
}

tpm2_lib_broker() {
    swtpm_require 77 tpm2-abrmd dbus-daemon dbus-send || return 77
    local rc=0
    swtpm_broker_start "$work" || rc=1
    tpm2__broker_pids+=($SWTPM_BUS_PID $SWTPM_BROKER_PID)
    [ "$rc" = 0 ] || return 1
    export ESTC_TPM2_TCTI="tabrmd:bus_type=session"
    export TPM2TOOLS_TCTI="$ESTC_TPM2_TCTI"
}
