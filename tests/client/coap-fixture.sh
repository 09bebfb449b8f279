#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs a transport test against libcoap's own coap-server-openssl on loopback.
# Makes a test CA, a server certificate for 127.0.0.1 / localhost and a client
# certificate in a temporary folder, starts the server on a free port, runs
# the test command (the arguments) with ESTC_TEST_DIR and ESTC_TEST_PORT set, and
# stops the server by its PID.
set -euo pipefail

# The test command; relative paths are resolved before changing folder.
cmd=()
for a in "$@"; do
  if [ -e "$a" ]; then cmd+=("$(realpath "$a")"); else cmd+=("$a"); fi
done
server=$(command -v coap-server-openssl || true)
if [ -z "$server" ]; then
  echo "coap-server-openssl not installed (package libcoap3-bin)" >&2
  exit 77
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../fixtures/pki.sh"
. "$here/../fixtures/processes.sh"

dir=$(mktemp -d)
server_pids=()
cleanup() {
  stop_pids "${server_pids[@]}"
  rm -rf "$dir"
}
trap cleanup EXIT

cd "$dir"
mkcert() { # name subject issuer-name ext
  pki_issue "$3.key" "$3.pem" "$1.key" "$1.pem" "$2" 2 "$4"
  chmod 600 "$1.key"
}
mkca() {
  pki_ca "$1.key" "$1.pem" "/CN=$1" 2
  chmod 600 "$1.key"
}
mkca ca
mkca otherca
mkcert server "/CN=estc test server" ca \
  "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
extendedKeyUsage=serverAuth"
mkcert client "/CN=estc test client" ca "extendedKeyUsage=clientAuth"
# A server certificate that names another host only (CN says localhost).
mkcert wrongname "/CN=localhost" ca "subjectAltName=DNS:other.example"
# EST registration authorities (id-kp-cmcRA) naming another host: one from
# the trusted CA, one from a CA the client does not trust.
mkcert ra "/CN=estc test RA" ca "subjectAltName=DNS:other.example
extendedKeyUsage=serverAuth,1.3.6.1.5.5.7.3.28"
mkcert ra-untrusted "/CN=estc test RA" otherca "subjectAltName=DNS:other.example
extendedKeyUsage=serverAuth,1.3.6.1.5.5.7.3.28"

# A free UDP port pair: a server uses P for CoAP and P+1 for DTLS. Servers
# bind with SO_REUSEADDR, so a busy port must be seen before starting.
free_port() {
  for _ in $(seq 1 50); do
    local p=$((20000 + RANDOM % 30000))
    if ! ss -Hluan | awk '{print $4}' | grep -Eq "[:.]($p|$((p + 1)))\$"; then
      echo "$p"
      return 0
    fi
  done
  echo "no free UDP port" >&2
  exit 1
}

start_server() { # cert key port
  "$server" -A 127.0.0.1 -p "$3" -c "$1" -j "$2" -C ca.pem -v 0 >"server-$3.log" 2>&1 &
  server_pids+=($!)
  for _ in $(seq 1 50); do
    if ss -Hluan | awk '{print $4}' | grep -Eq "[:.]$(($3 + 1))\$"; then
      return 0
    fi
    sleep 0.1
  done
  echo "coap-server-openssl did not start" >&2
  cat "server-$3.log" >&2
  exit 1
}
port=$(free_port)
[ -n "$port" ] || exit 1
start_server server.pem server.key "$port"
port2=$(free_port)
[ -n "$port2" ] || exit 1
start_server wrongname.pem wrongname.key "$port2"
port3=$(free_port)
[ -n "$port3" ] || exit 1
start_server ra.pem ra.key "$port3"
port4=$(free_port)
[ -n "$port4" ] || exit 1
start_server ra-untrusted.pem ra-untrusted.key "$port4"

export ESTC_TEST_DIR=$dir ESTC_TEST_PORT=$((port + 1)) ESTC_TEST_PORT_WRONGNAME=$((port2 + 1))
export ESTC_TEST_PORT_RA=$((port3 + 1)) ESTC_TEST_PORT_RA_UNTRUSTED=$((port4 + 1))
rc=0
"${cmd[@]}" || rc=$?
exit $rc
