#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `estc run` enrolls and renews a certificate held in a real SoftHSM2 token
# against the real estc-server (DTLS on loopback) under the restrictions of
# examples/systemd/estc.service, rebuilt with a private mount namespace
# (sandbox.sh: read-only file system but the state and token folders,
# private /tmp and /dev, an unprivileged user with the softhsm group, no
# capabilities, no new privileges). The token folder's ReadWritePaths= is
# needed: without it the same run fails and the token is unchanged. The
# --exec hook, run inside, cannot write outside the state folder.
. "$(dirname "$0")/../daemon/common.sh"

[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (mount namespaces)"; exit 77; }
for c in unshare setpriv mknod; do
  command -v "$c" >/dev/null || { echo "SKIP: $c missing"; exit 77; }
done
getent group softhsm >/dev/null || { echo "SKIP: no softhsm group (Debian's softhsm2)"; exit 77; }
unshare -m --propagation private true 2>/dev/null || { echo "SKIP: no mount namespaces"; exit 77; }
SANDBOX=$SRC/tests/systemd/sandbox.sh
SUSER=nobody
SGROUP=$(id -gn nobody)

start_token dev "$PIN"
make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
# Certificates valid for 40 s: a renewal within a minute.
start_server --validity 40 --dedup-window 0

# The token folder as Debian has it (root:softhsm 2770), its token the
# service user's.
chown root:softhsm "$SOFTHSM_DIR/tokens"
chmod 2770 "$SOFTHSM_DIR/tokens"
chown -R "$SUSER:softhsm" "$SOFTHSM_DIR/tokens"/*
# The state folder (StateDirectory=estc, 0700).
mkdir -m 700 "$T/state"
chown "$SUSER" "$T/state"
# What appears under /run: the PIN as LoadCredential= gives it (the
# service user's, 0400) and the configuration.
R=$T/run
mkdir -p "$R/credentials/estc.service" "$R/estc"
printf '%s' "$PIN" >"$R/credentials/estc.service/token-pin"
chown -R "$SUSER" "$R/credentials"
chmod 500 "$R/credentials/estc.service"
chmod 400 "$R/credentials/estc.service/token-pin"
# The program, its library and engine plug-ins as a package installs them,
# at a path the sandbox shows (/run/lib/estc-test): the build folder may lie
# under /tmp, /home or /root, which the unit's settings hide.
STAGE=$R/lib/estc-test
mkdir -p "$STAGE/engines"
cp "$ESTC" "$STAGE/estc"
cp -P "$ESTC_BUILD_ROOT"/libestc.so* "$STAGE/"
cp "${ESTC_ENGINE_DIR:-$ESTC_BUILD_ROOT/engines/plugins}"/*.so "$STAGE/engines/"
chmod -R a+rX "$R/lib"
cp "$ESTC_SERVER_CA" "$R/estc/server-ca.pem"
cp "$T/dev.crt" "$R/estc/idevid.pem"
cp "$T/dev.key" "$R/estc/idevid.key"
chown "$SUSER" "$R/estc/idevid.key"
chmod 600 "$R/estc/idevid.key"
chmod 644 "$R/estc/server-ca.pem" "$R/estc/idevid.pem"
TOK="pkcs11:token=dev;pin-source=file:/run/credentials/estc.service/token-pin"
MOD="?module-path=$SOFTHSM_MODULE"
cat >"$R/estc/estc.conf" <<EOF
server = $ESTC_SERVER_URI
trust = /run/estc/server-ca.pem
cert = /run/estc/idevid.pem
key = /run/estc/idevid.key
subject = /CN=sandboxed-1
new-key = $TOK;object=est-key$MOD
new-cert = $TOK;object=est-cert$MOD
retry-spacing = 1
jitter = 0
exec = touch /etc/estc-sandbox-probe 2>/dev/null; echo "\$ESTC_EVENT etc=\$?" >>/var/lib/estc/hook.log
EOF
chgrp "$SGROUP" "$R/estc/estc.conf"
chmod 640 "$R/estc/estc.conf"

# sandboxed RW LOG [estc run options]: the daemon as the unit starts it
# (without --syslog: the log to LOG), in the background; DPID.
sandboxed() {
  local rw=$1 log=$2
  shift 2
  # SOFTHSM2_CONF unset: the system's /etc/softhsm/softhsm2.conf, whose
  # token folder is /var/lib/softhsm/tokens, as for the service.
  # shellcheck disable=SC2086 # the wrapper is a command line
  env -u SOFTHSM2_CONF unshare -m --propagation private \
    "$SANDBOX" "$SOFTHSM_DIR/tokens" "$T/state" "$R" "$SUSER" "$SGROUP" softhsm "$rw" \
    env LD_LIBRARY_PATH=/run/lib/estc-test ESTC_ENGINE_DIR=/run/lib/estc-test/engines \
    $WRAP /run/lib/estc-test/estc run --config /run/estc/estc.conf --state /var/lib/estc/state "$@" \
    >"$T/run.out" 2>"$log" &
  DPID=$!
  DAEMON_PIDS=("$DPID")
}

# ---- without ReadWritePaths= for the token folder: the token refuses -----
N0=$(count)
sandboxed no "$T/ro.log" --once
wait "$DPID"
RC=$?
stop_daemons
check "read-only token folder: the run fails (exit $RC)" test "$RC" -ne 0
check "read-only token folder: the failure is logged" grep -q 'enroll-failed' "$T/ro.log"
check "read-only token folder: the token is unchanged ($N0 objects)" test "$(count)" -eq "$N0"
sed 's/^/       | /' "$T/ro.log" | head -5
rm -f "$T/state/state" "$T/state/state.pid"

# ---- the unit's settings: enrolls and renews ---------------------------------
sandboxed yes "$T/run.log"
check "sandboxed: enrolled" wait_for "$T/run.log" ' enrolled: serial' 1 60
check "sandboxed: renewed on schedule" wait_for "$T/run.log" 'reenrolled: serial' 1 90
check "sandboxed: runs as $SUSER" test "$(ps -o user= -p "$DPID")" = "$SUSER"
check "sandboxed: no capabilities" grep -q '^CapEff:[[:space:]]*0*$' "/proc/$DPID/status"
check "sandboxed: no new privileges" grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$DPID/status"
check "sandboxed: the softhsm group" \
  bash -c "grep '^Groups:' /proc/$DPID/status | grep -qw $(getent group softhsm | cut -d: -f3)"
check "sandboxed: the hook ran inside" wait_for "$T/state/hook.log" '^reenrolled' 1 10
check "sandboxed: the hook could not write /etc (ProtectSystem=strict)" \
  bash -c "! grep -q 'etc=0' '$T/state/hook.log' && ! test -e /etc/estc-sandbox-probe"
check "sandboxed: the state is the service user's, 0600" \
  test "$(stat -c '%U %a' "$T/state/state")" = "$SUSER 600"
stop_daemon TERM
check "sandboxed: SIGTERM, exit 0 ($RC)" test "$RC" -eq 0
# The token (read with pkcs11-tool, outside) holds one certificate, the
# CA's, and its key pair.
label=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label dev --login --pin "$PIN" \
  --list-objects --type cert 2>/dev/null | sed -n 's/^ *label: *//p')
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label dev --login --pin "$PIN" --read-object \
  --type cert --label "$label" 2>/dev/null | openssl x509 -inform DER -out "$T/held.pem" 2>/dev/null
check "the token holds the renewed certificate ($label), valid" \
  openssl verify -CAfile "$ESTC_SERVER_CA" "$T/held.pem"
check "the token holds one certificate and its key pair ($(count) objects)" test "$(count)" -eq 3
finish
