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
    local lifetime=${SWTPM_LIFETIME:-900} _ up=
    mkdir -p "$work/bus" || return 1
    cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=$work/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
    timeout "$lifetime" dbus-daemon --config-file="$work/bus.conf" --nofork \
        --print-address=1 >"$work/bus.address" 2>"$work/dbus.log" &
    tpm2__broker_pids+=($!)
    for _ in $(seq 1 50); do
        [ -s "$work/bus.address" ] && break
        sleep 0.1
    done
    [ -s "$work/bus.address" ] || {
        echo "dbus-daemon did not start: $(cat "$work/dbus.log")" >&2
        return 1
    }
    DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$work/bus.address")
    export DBUS_SESSION_BUS_ADDRESS
    local root=()
    [ "$(id -u)" = 0 ] && root=(--allow-root)
    timeout "$lifetime" tpm2-abrmd --session "${root[@]}" --flush-all \
        --tcti="swtpm:host=127.0.0.1,port=$SWTPM_PORT" >"$work/abrmd.log" 2>&1 &
    tpm2__broker_pids+=($!)
    for _ in $(seq 1 100); do
        if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.NameHasOwner string:com.intel.tss2.Tabrmd 2>/dev/null |
            grep -q 'boolean true'; then
            up=1
            break
        fi
        sleep 0.1
    done
    [ -n "$up" ] || {
        echo "tpm2-abrmd did not start: $(cat "$work/abrmd.log")" >&2
        return 1
    }
    export ESTC_TPM2_TCTI="tabrmd:bus_type=session"
    export TPM2TOOLS_TCTI="$ESTC_TPM2_TCTI"
}
