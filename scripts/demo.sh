#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job, end to end, on this machine: installs what is needed, builds,
# starts estc-server (the reference EST-coaps server with its test CA) on
# loopback, and enrolls a device whose private key is generated inside a
# SoftHSM2 token: CA certificates from /crts into the token, a key pair in the
# token, a CSR signed there, the issued certificate validated and stored in
# the token. Prints the certificate and the token's objects, then a
# re-enrollment, and stops everything. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

bash scripts/install-deps.sh >/dev/null
if [ -d build ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
ninja -C build >/dev/null

work=$(mktemp -d)
chmod 700 "$work"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

estc=$top/build/tools/estc/estc
say() { printf '\n== %s\n' "$*"; }

# ---- LwM2M bootstrap flow (scripts/demo.sh --lwm2m) --------------------------
# estc-server --lwm2m-bootstrap and the lwm2m-device example: Bootstrap-Request,
# Writes of /0 (Security Mode 4) and /1, Bootstrap-Finish, then /crts and /sen
# on the same DTLS session with the key in a SoftHSM2 token; a second run
# restores the state without enrolling; a bootstrap account in EST mode
# reconnects with the EST certificate. Output of the device is shown with "|".
if [ "${1:-}" = --lwm2m ]; then
  for c in flow bootstrap-est; do
    say "LwM2M: $c"
    ESTC_SOURCE_ROOT=$top ESTC_BUILD_ROOT=$top/build bash tests/lwm2m/run.sh "$c"
  done
  exit
fi
# ------------------------------------------------------------------------------

say "a SoftHSM2 token for the device (in $work)"
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir "$work/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\n' "$work" >"$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label device --pin 1234 --so-pin 5678 >/dev/null
module=/usr/lib/softhsm/libsofthsm2.so
token="pkcs11:token=device;pin-value=1234"
q="?module-path=$module"

say "the manufacturer's bootstrap identity (IDevID) for the device"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=Manufacturer-CA \
  -keyout "$work/mfg.key" -out "$work/mfg.pem" -days 2 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=idevid-0042 \
  -keyout "$work/idevid.key" -out "$work/idevid.csr" 2>/dev/null
openssl x509 -req -in "$work/idevid.csr" -CA "$work/mfg.pem" -CAkey "$work/mfg.key" \
  -CAcreateserial -days 2 -out "$work/idevid.pem" 2>/dev/null
chmod 600 "$work"/*.key

say "estc-server on 127.0.0.1 (stops by itself after 120 s)"
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
build/tools/estc-server/estc-server --listen "127.0.0.1:$port" --state-dir "$work/server" \
  --client-ca "$work/mfg.pem" --validity 86400 --max-runtime 120 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do [ -s "$work/server/ca.crt" ] && break; sleep 0.1; done
sleep 0.5
echo "listening on coaps://127.0.0.1:$port, test CA $work/server/ca.crt"

net=(--server "coaps://127.0.0.1:$port" --implicit-trust "$work/server/ca.crt"
     --cert "$work/idevid.pem" --key "$work/idevid.key")

say "estc enroll: key generated in the token, CA certificates into the token"
"$estc" enroll "${net[@]}" --with-cacerts \
  --new-key "$token;object=device-key$q" --new-cert "$token;object=device-cert$q" \
  --ca-out "$token;object=est-ca-$q" \
  --subject /CN=device-0042/O=Example --san DNS:device-0042.example.net \
  --out "$work/device.pem"

say "the issued certificate"
openssl x509 -in "$work/device.pem" -noout -subject -issuer -dates -ext subjectAltName
openssl verify -CAfile "$work/server/ca.crt" "$work/device.pem"

say "the token's objects (the private key is sensitive and never extractable)"
pkcs11-tool --module "$module" --token-label device --login --pin 1234 --list-objects 2>/dev/null |
  grep -E '^(Private Key|Public Key|Certificate) Object|label:|Access:' | sed 's/^/  /'

say "estc reenroll: /sren authenticated with the enrolled certificate in the token"
"$estc" reenroll --server "coaps://127.0.0.1:$port" --trust "$work/server/ca.crt" \
  --new-key "$token;object=device-key$q" --new-cert "$token;object=device-cert$q" \
  --out "$work/renewed.pem"
openssl x509 -in "$work/renewed.pem" -noout -subject -serial -dates

say "done: stopping the server, removing the token and every file"
