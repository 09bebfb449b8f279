#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The units of examples/systemd (estc.service, estc-tpm.service):
# `systemd-analyze verify` finds nothing, and `systemd-analyze security
# --offline=true` rates their exposure at most 2.0. Both run offline (PID 1
# need not be systemd) against a root folder holding the system's unit
# folder, the units and the estc program at /usr/bin/estc. Each check is
# shown able to fail: a misspelled setting fails verify, and the unit
# without its hardening block is rated above 2.0.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=${ESTC_SOURCE_ROOT:-$HERE/../..}
: "${ESTC_BUILD_ROOT:?ESTC_BUILD_ROOT must name the build folder}"
ESTC=${ESTC_BIN:-$ESTC_BUILD_ROOT/tools/estc/estc}
. "$SRC/tests/fixtures/report.sh"
REPORT_NEED_PASS=1
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze missing"; exit 77; }
units=/lib/systemd/system
[ -d "$units" ] || units=/usr/lib/systemd/system
[ -e "$units/multi-user.target" ] || { echo "SKIP: no systemd unit folder"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/estc-unit.XXXXXX")
trap 'rm -rf "$T"' EXIT
R=$T/root
mkdir -p "$R/usr/bin" "$R/bin" "$R/lib/systemd"
cp -a "$units" "$R/lib/systemd/system"
cp "$SRC"/examples/systemd/*.service "$R/lib/systemd/system/"
cp "$ESTC" "$R/usr/bin/estc"
cp "$(type -P kill)" "$R/bin/kill"

# verify UNIT: no complaint (the man page is the man suite's).
verify() {
  (cd / && systemd-analyze verify --man=no --root="$R" "$1") >"$T/verify.out" 2>&1 &&
    ! [ -s "$T/verify.out" ]
}
# exposure FILE: the overall exposure, e.g. 1.5.
exposure() {
  systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'; }

for u in estc.service estc-tpm.service; do
  f=$SRC/examples/systemd/$u
  check "$u: systemd-analyze verify is clean" verify "$u"
  [ -s "$T/verify.out" ] && sed 's/^/       | /' "$T/verify.out"
  e=$(exposure "$f")
  check "$u: exposure $e <= 2.0 (systemd-analyze security --offline=true)" at_most "$e" 2.0
  check "$u: Type=notify" grep -qx 'Type=notify' "$f"
  check "$u: reload is SIGHUP" grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$f"
  check "$u: no core files" grep -qx 'LimitCORE=0' "$f"
  check "$u: the configuration file and the state folder" \
    grep -q '^ExecStart=/usr/bin/estc run --syslog --config /etc/estc/estc.conf --state /var/lib/estc/state$' "$f"
done
check "estc.service: the token folder is writable" \
  grep -qx 'ReadWritePaths=/var/lib/softhsm/tokens' "$SRC/examples/systemd/estc.service"
check "estc.service: the softhsm group" \
  grep -qx 'SupplementaryGroups=softhsm' "$SRC/examples/systemd/estc.service"
check "estc-tpm.service: the TPM alone of the devices" bash -c \
  "grep -qx 'DevicePolicy=closed' '$SRC/examples/systemd/estc-tpm.service' &&
   grep -qx 'DeviceAllow=/dev/tpmrm0 rw' '$SRC/examples/systemd/estc-tpm.service'"
check "estc-tpm.service: the tss group" \
  grep -qx 'SupplementaryGroups=tss' "$SRC/examples/systemd/estc-tpm.service"

# The checks can fail.
sed 's/^ProtectSystem=strict/ProtectSytem=strict/' "$SRC/examples/systemd/estc.service" \
  >"$R/lib/systemd/system/estc-typo.service"
check "a misspelled setting fails verify" bash -c "! (cd / && systemd-analyze verify --man=no \
  --root='$R' estc-typo.service 2>&1 | tee '$T/typo.out' | grep -q 'Unknown key name')"
sed '/^# Hardening/,/^UMask/d' "$SRC/examples/systemd/estc.service" >"$T/bare.service"
e=$(exposure "$T/bare.service")
check "the unit without its hardening is rated above 2.0 ($e)" bash -c "! awk -v a='$e' 'BEGIN { exit !(a + 0 <= 2.0) }'"
finish
