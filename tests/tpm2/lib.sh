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
    trap 'swtpm_stop; [ -z "$work" ] || rm -rf "$work"' EXIT
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
