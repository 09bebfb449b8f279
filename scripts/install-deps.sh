#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian 12 package that the build, the tests and the demo need.
# Idempotent. As root it installs with apt-get; otherwise it prints the exact
# missing packages and exits non-zero.
set -euo pipefail

packages=(
  # build
  build-essential pkg-config meson ninja-build clang libclang-rt-14-dev
  libssl-dev openssl libcoap3-dev libcoap3-bin
  libp11-kit-dev libtss2-dev libmbedtls-dev
  check
  # the units' checks (systemd-analyze, tests/systemd) and the sandboxed
  # run (unshare, setpriv: util-linux)
  systemd util-linux
  # test peers and tools
  softhsm2 opensc p11-kit swtpm swtpm-tools tpm2-tools valgrind
  # the OpenSSL 3 TPM provider: tests/tpm2/keyfile.sh checks that TSS2 key
  # files move between it and the tpm2: engine both ways
  tpm2-openssl
  python3 procps iproute2 ca-certificates
  # PKCS#11 modules besides SoftHSM2 that the conformance suite runs on
  # (tests/pkcs11): tpm2-pkcs11 behind tpm2-abrmd on a private D-Bus
  # session bus, and NSS softokn with its certutil
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd dbus-daemon dbus-bin
  # the TCTI that reaches tpm2-abrmd (tpm2-abrmd does not pull it in); the
  # tpm2 suite's tpm2-cache test puts tpm2-abrmd before swtpm as well
  libtss2-tcti-tabrmd0
  libnss3 libnss3-tools
  # Debian packages: build, check, install (tests/package)
  debhelper dpkg-dev fakeroot lintian git make
  # manual pages: rendered and checked by tests/man
  man-db groff-base
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (run as root to install them):" >&2
  echo "  apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
