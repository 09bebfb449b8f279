#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs a command under the file system, device and privilege restrictions
# of examples/systemd/estc.service, rebuilt with a private mount namespace
# for machines where systemd is not PID 1 (run it with `unshare -m
# --propagation private`, as root). It ends with exec: the caller's PID is
# the command's.
#
#   sandbox.sh TOKENS STATE RUN USER GROUP SUPP-GROUP RW COMMAND...
#
# TOKENS: a SoftHSM2 token folder, seen at /var/lib/softhsm/tokens (the
# tokendir of the system's /etc/softhsm/softhsm2.conf); STATE: the state
# folder, seen at /var/lib/estc (StateDirectory=estc); RUN: a folder whose
# content appears under /run (the credentials at /run/credentials/...);
# RW: "yes" makes the token folder writable (ReadWritePaths=), "no" leaves
# it read-only like the rest. What the unit sets and this does:
#   ProtectSystem=strict   every mount read-only but /proc, /sys and /dev
#   StateDirectory=, ReadWritePaths=  writable again: /var/lib/estc, the tokens
#   PrivateTmp=yes         empty /tmp and /var/tmp
#   ProtectHome=yes        empty, read-only /home and /root
#   PrivateDevices=yes     a /dev with null, zero, full, random, urandom, tty
#   User=, Group=, SupplementaryGroups=, NoNewPrivileges=yes,
#   CapabilityBoundingSet=, AmbientCapabilities=, LimitCORE=0, UMask=0077
# Not rebuilt: the system call filter, the address families, ProtectProc=,
# ProtectKernel*=, the other namespaces.
set -eu
tokens=$1 state=$2 run=$3 user=$4 group=$5 supp=$6 rw=$7
shift 7

# The unit's paths, bound before /tmp (where the sources are) is hidden.
mount -t tmpfs -o mode=755 tmpfs /var/lib
mkdir -p /var/lib/softhsm/tokens /var/lib/estc
chown root:"$supp" /var/lib/softhsm
chmod 2770 /var/lib/softhsm
mount --bind "$tokens" /var/lib/softhsm/tokens
mount --bind "$state" /var/lib/estc
mount -t tmpfs -o mode=755 tmpfs /run
cp -a "$run"/. /run/

# PrivateTmp=yes, ProtectHome=yes.
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
for d in /home /root; do
  [ -d "$d" ] && mount -t tmpfs -o ro,mode=755 tmpfs "$d"
done

# PrivateDevices=yes: the pseudo devices alone.
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mkdir -m 1777 /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# ProtectSystem=strict: every mount read-only, the API file systems aside.
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case $mp in /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | /var/tmp) continue ;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
# ... and writable again what the unit names.
mount --bind /var/lib/estc /var/lib/estc
mount -o remount,bind,rw /var/lib/estc
if [ "$rw" = yes ]; then
  mount --bind /var/lib/softhsm/tokens /var/lib/softhsm/tokens
  mount -o remount,bind,rw /var/lib/softhsm/tokens
fi

umask 0077
ulimit -c 0
exec setpriv --reuid="$user" --regid="$group" --groups="$supp" --no-new-privs \
  --bounding-set=-all --inh-caps=-all --ambient-caps=-all -- "$@"
