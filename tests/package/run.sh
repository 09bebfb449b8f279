#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Debian packages from the working tree with dpkg-buildpackage,
# checks them with lintian (no errors), installs them with apt, checks what
# a user reaches (pkg-config, man pages, the provider in openssl, the
# programs, the custom driver example built against the installed library)
# and removes them again. Needs root (apt). Prints one line per check and
# 'N passed, N failed'.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
passed=0
failed=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >"$work/check.log" 2>&1; then
    echo "ok    $what"; passed=$((passed + 1))
  else
    echo "FAIL  $what"; sed 's/^/      /' "$work/check.log" | tail -20; failed=$((failed + 1))
  fi
}

work=$(mktemp -d)
installed=()
cleanup() {
  if [ ${#installed[@]} -gt 0 ]; then
    apt-get purge -y -qq "${installed[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The tracked files as they are in the working tree, nothing built.
mkdir "$work/estc"
git -C "$src" ls-files -z | (cd "$src" && tar --null -T - -cf -) | tar -C "$work/estc" -xf -

echo "=== dpkg-buildpackage ==="
if ! (cd "$work/estc" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
  tail -60 "$work/build.log"
  echo "package: dpkg-buildpackage failed"
  echo "0 passed, 1 failed"
  exit 1
fi
debs=()
for d in "$work"/*.deb; do
  case $d in *-dbgsym_*) ;; *) debs+=("$d") ;; esac
done
echo "built: $(cd "$work" && ls -- *.deb | tr '\n' ' ')"

check "lintian reports no errors" lintian --fail-on error --tag-display-limit 0 "$work"/*.changes
for p in libestc0 libestc-dev estc estc-server; do
  check "package $p was built" test -f "$(ls "$work/${p}_"*.deb 2>/dev/null | head -1)"
done

echo "=== apt install ==="
apt-get install -y -qq --no-install-recommends "${debs[@]}" >"$work/install.log" 2>&1 || {
  tail -30 "$work/install.log"; echo "package: apt-get install failed"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
installed=(estc estc-server libestc-dev libestc0)

version=$(sed -n "s/^project('estc', 'c',//; s/^ *version: '\([^']*\)'.*/\1/p" "$src/meson.build" | head -1)
check "pkg-config estc gives version $version" test "$(pkg-config --modversion estc)" = "$version"
check "pkg-config estc gives -lestc" sh -c 'pkg-config --libs estc | grep -q -- -lestc'
check "man estc finds the installed page" sh -c 'man -w estc | grep -q "^/usr/share/man/man1/estc.1"'
check "man estc-server finds the installed page" man -w estc-server
check "man estc-provider finds the installed page" man -w estc-provider
check "openssl list -providers -provider estc shows it active" sh -c \
  'openssl list -providers -provider estc -provider default | grep -A3 "^ *estc" | grep -q "status: active"'
check "estc --version" sh -c "estc --version | grep -qx 'estc $version'"
check "estc-server --help" sh -c 'estc-server --help >/dev/null'
check "estc-server --version" sh -c "estc-server --version | grep -qx 'estc-server $version'"
check "estc-engine-test --version" sh -c "estc-engine-test --version | grep -qx 'estc-engine-test $version'"
completion=/usr/share/bash-completion/completions/estc
check "the bash completion is installed at $completion" test -f "$completion"
check "the installed completion offers the subcommands" bash -c \
  ". '$completion'; COMP_WORDS=(estc enr); COMP_CWORD=1; _estc; [ \"\${COMPREPLY[*]}\" = enroll ]"
check "the installed completion offers every option of the installed estc enroll --help" bash -c \
  ". '$completion'; COMP_WORDS=(estc enroll --); COMP_CWORD=2; _estc
   want=\$(estc enroll --help | awk '/^Options:/{on=1;next} on&&/^\$/{on=0} on' |
     grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
   [ \"\$(printf '%s\\n' \"\${COMPREPLY[@]}\" | sort -u)\" = \"\$want\" ]"
plugins=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/estc/engines
for p in pkcs11 tpm2 psa; do
  check "the $p: engine plug-in is installed in the private folder" test -f "$plugins/estc-$p.so"
done
heavy='libp11-kit|libtss2|libmbedcrypto|estc-(pkcs11|tpm2|psa)\.so'
check "libestc links no engine library (ldd)" sh -c "! ldd /usr/lib/*/libestc.so.0 | grep -E '$heavy'"
check "estc --version loads no engine library (LD_DEBUG=libs)" sh -c \
  "LD_DEBUG=libs estc --version 2>&1 | grep -q 'calling init' && ! LD_DEBUG=libs estc --version 2>&1 | grep -E '$heavy'"
check "the tpm2: engine plug-in loads from the private folder" sh -c \
  "LD_DEBUG=libs estc status --cert 'tpm2:nv=0x1500020' 2>&1 | grep -q 'estc/engines/estc-tpm2.so'"
check "the daemon's unit is installed, not enabled" sh -c \
  'test -f /lib/systemd/system/estc.service && ! test -e /etc/systemd/system/multi-user.target.wants/estc.service'
check "the estc system user exists" getent passwd estc
check "the example configuration is installed" test -f /usr/share/doc/estc/examples/estc.conf
check "the TPM variant of the unit is installed, not enabled" sh -c \
  'test -f /lib/systemd/system/estc-tpm.service && ! test -e /etc/systemd/system/multi-user.target.wants/estc-tpm.service'
# The installed units against the installed program and man page.
verify_units() {
  systemd-analyze verify /lib/systemd/system/estc.service /lib/systemd/system/estc-tpm.service \
    >"$work/verify.out" 2>&1
  local rc=$?
  cat "$work/verify.out"
  [ "$rc" -eq 0 ] && ! [ -s "$work/verify.out" ]
}
exposure_ok() { # UNIT-FILE: systemd-analyze's overall exposure is at most 2.0
  local e
  e=$(systemd-analyze security --offline=true --no-pager "$1" |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "exposure $e"
  awk -v e="$e" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'
}
check "systemd-analyze verify: the installed units are clean" verify_units
for u in estc.service estc-tpm.service; do
  check "systemd-analyze security --offline=true: $u exposure <= 2.0" exposure_ok "/lib/systemd/system/$u"
done
cp -r /usr/share/doc/libestc-dev/examples/custom-driver "$work/custom-driver"
check "the custom driver example builds against the installed library" \
  make -C "$work/custom-driver"
check "the example driver passes the conformance suite" \
  estc-engine-test 'example:bank=conformance' --driver "$work/custom-driver/example-driver.so"

# docs/provider.md's openssl.cnf, verbatim, against a SoftHSM2 token whose
# addresses name no module: the configuration's default module serves them.
awk '/^### openssl.cnf/ {sect = 1} sect && /^```ini/ {copy = 1; next} copy && /^```/ {exit}
     copy {print}' "$src/docs/provider.md" >"$work/openssl.cnf"
check "docs/provider.md holds an openssl.cnf" grep -q '^pkcs11-module-path' "$work/openssl.cnf"
mkdir "$work/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\n' "$work" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label pkgtest --pin 1234 --so-pin 5678 >/dev/null
pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label pkgtest --login --pin 1234 \
  --keypairgen --key-type EC:prime256v1 --label device-key --id 01 >/dev/null 2>&1
# A certificate in the token too, to read back without a PIN.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=pkgtest \
  -keyout "$work/cert-key.pem" -outform DER -out "$work/cert.der" -days 2 >/dev/null 2>&1
pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label pkgtest --login --pin 1234 \
  --write-object "$work/cert.der" --type cert --label device-cert --id 02 >/dev/null 2>&1
check "with that openssl.cnf the provider is active" sh -c \
  "OPENSSL_CONF='$work/openssl.cnf' openssl list -providers | grep -A3 '^ *estc' | grep -q 'status: active'"
check "openssl storeutl lists the token's objects" sh -c \
  "OPENSSL_CONF='$work/openssl.cnf' timeout 30 openssl storeutl 'pkcs11:token=pkgtest;pin-value=1234' </dev/null | grep -q 'object=device-key'"
check "openssl pkey -pubout reads a token key's public half without a PIN" sh -c \
  "OPENSSL_CONF='$work/openssl.cnf' timeout 30 openssl pkey -in 'pkcs11:token=pkgtest;object=device-key' -pubout </dev/null | grep -q 'BEGIN PUBLIC KEY'"
check "openssl storeutl reads a token certificate without a PIN" sh -c \
  "OPENSSL_CONF='$work/openssl.cnf' timeout 30 openssl storeutl -noout -text -certs 'pkcs11:token=pkgtest;object=device-cert' </dev/null | grep -q 'CN *= *pkgtest'"
check "the private key cannot be written out" sh -c \
  "! OPENSSL_CONF='$work/openssl.cnf' timeout 30 openssl pkey -in 'pkcs11:token=pkgtest;object=device-key;pin-value=1234' </dev/null 2>/dev/null | grep -q 'PRIVATE KEY'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
