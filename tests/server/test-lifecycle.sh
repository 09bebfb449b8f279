#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server as a program: options and --help, the CA kept across restarts or
# given as files, extra CA certificates, a busy port, IPv6, many clients at
# once, --max-runtime, and clear errors for bad start-up input.
. "$(dirname "$0")/lib.sh"

BIN=${ESTC_SERVER_BIN:-${ESTC_BUILD_ROOT:-}/tools/estc-server/estc-server}
make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }

# --- help and bad options --------------------------------------------------------------
"$BIN" --help >"$T/help" 2>&1
check "--help exits 0" test $? -eq 0
for o in --listen --state-dir --cert --key --ca-cert --ca-key --client-ca --extra-ca \
  --csr-attrs --validity --block-size --delay-first --max-age --root --pop --dedup-window \
  --max-runtime -v; do
  check "--help documents $o" grep -q -- "$o" "$T/help"
done
bad_start() { # DESCRIPTION ARGS...: must fail fast with a message
  local what=$1; shift
  timeout 10 "$BIN" "$@" >"$T/bad.out" 2>"$T/bad.err"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ -s "$T/bad.err" ]; then pass "$what"; else
    fail "$what (rc=$rc)"; cat "$T/bad.err"
  fi
}
bad_start "unknown option" --nope
bad_start "block size not a power of two" --block-size 100 --state-dir "$T/s0"
bad_start "zero validity" --validity 0 --state-dir "$T/s0"
bad_start "bad listen address" --listen nowhere --state-dir "$T/s0"
bad_start "no state folder and no CA" --listen 127.0.0.1:0
bad_start "missing client CA file" --state-dir "$T/s0" --client-ca "$T/absent.pem" \
  --listen 127.0.0.1:0
bad_start "CSR attributes that are not DER" --state-dir "$T/s0" --csr-attrs "$T/mca.crt" \
  --listen 127.0.0.1:0
bad_start "--cert without --key" --state-dir "$T/s0" --cert "$T/dev.crt" --listen 127.0.0.1:0
bad_start "--cert and a --key that does not match" --state-dir "$T/s0" --cert "$T/dev.crt" \
  --key "$T/rogue.key" --listen 127.0.0.1:0
bad_start "--ca-key that does not match --ca-cert" --ca-cert "$T/mca.crt" --ca-key "$T/dev.key" \
  --listen 127.0.0.1:0

# --- the CA is created once and reused ------------------------------------------------
ESTC_SERVER_STATE=$T/keep
mkdir -p "$ESTC_SERVER_STATE"
estc_server_start --client-ca "$T/mca.crt" || exit 1
ca1=$(fingerprint "$ESTC_SERVER_CA" PEM)
new_csr a "/CN=device-1"
coap -m post -t 286 -f "$T/a.csr" /est/sen
expect_code 2.04 "sen on the first run"
lines=$(index_lines)
head -n "$lines" "$ESTC_SERVER_STATE/state/index.txt" >"$T/index.before"
stop_server "first run"
estc_server_start --client-ca "$T/mca.crt" || exit 1
check "CA reused after a restart" test "$(fingerprint "$ESTC_SERVER_CA" PEM)" = "$ca1"
check "index kept after a restart" cmp -s "$T/index.before" \
  <(head -n "$lines" "$ESTC_SERVER_STATE/state/index.txt")

# A busy port is refused, not shared (libcoap binds with SO_REUSEADDR).
timeout 10 "$BIN" --listen "127.0.0.1:$ESTC_SERVER_PORT" --state-dir "$T/s1" \
  --max-runtime 5 >"$T/busy.out" 2>"$T/busy.err"
rc=$?
check "second server on a busy port fails" test "$rc" -ne 0 -a "$rc" -ne 124
check "busy port message" grep -q "in use" "$T/busy.err"

# --- many clients at once -----------------------------------------------------------------
pids=()
for i in 1 2 3 4 5 6 7 8; do
  new_csr "m$i" "/CN=many-$i"
  coap-client-openssl -B 20 -C "$ESTC_SERVER_CA" -c "$T/dev.crt" -j "$T/dev.key" -m post -t 286 \
    -A 287 -f "$T/m$i.csr" -o "$T/m$i.der" "$ESTC_SERVER_URI/est/sen" >/dev/null 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
ok=0
for i in 1 2 3 4 5 6 7 8; do
  openssl x509 -inform DER -in "$T/m$i.der" -out "$T/m$i.pem" 2>/dev/null && verifies "$T/m$i.pem" &&
    ok=$((ok + 1))
done
check "8 parallel clients all enrolled ($ok)" test "$ok" -eq 8
serials=$(for i in 1 2 3 4 5 6 7 8; do openssl x509 -in "$T/m$i.pem" -noout -serial 2>/dev/null; done |
  sort -u | wc -l)
check "8 distinct serial numbers" test "$serials" -eq 8
estc_server_stop_keep_state
check "SIGTERM after many clients: exit 0" test "${ESTC_SERVER_STATUS:-1}" -eq 0

# --- CA, server credentials and extra CAs given as files ----------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/own.key" \
  -out "$T/own.crt" -subj "/CN=Given CA" -days 2 -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/srv.key" \
  -out "$T/srv.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$T/srv.ext"
openssl x509 -req -in "$T/srv.csr" -CA "$T/own.crt" -CAkey "$T/own.key" -CAcreateserial \
  -extfile "$T/srv.ext" -out "$T/srv.crt" -days 1 2>/dev/null
ESTC_SERVER_STATE=$T/given
mkdir -p "$ESTC_SERVER_STATE"
estc_server_start --ca-cert "$T/own.crt" --ca-key "$T/own.key" --cert "$T/srv.crt" \
  --key "$T/srv.key" --client-ca "$T/mca.crt" --extra-ca "$T/mca.crt" --validity 120 || exit 1
check "given CA path printed and used" test "$ESTC_SERVER_CA" = "$T/own.crt"
coap -A 281 /est/crts
expect_code 2.05 "crts with a given CA"
check "crts 281 holds the CA and the extra CA" test \
  "$(openssl pkcs7 -inform DER -in "$T/out" -print_certs 2>/dev/null | grep -c '^subject=')" -eq 2
new_csr v "/CN=short-lived"
coap -m post -t 286 -A 287 -f "$T/v.csr" /est/sen
expect_code 2.04 "sen with a given CA"
openssl x509 -inform DER -in "$T/out" -out "$T/v.pem" 2>/dev/null
check "issued by the given CA" verifies "$T/v.pem"
nb=$(date -d "$(openssl x509 -in "$T/v.pem" -noout -startdate | cut -d= -f2)" +%s)
na=$(date -d "$(openssl x509 -in "$T/v.pem" -noout -enddate | cut -d= -f2)" +%s)
now=$(date +%s)
check "validity in seconds (notAfter about now + 120)" test $((na - now)) -le 121 -a $((na - now)) -ge 100
check "notBefore not in the future" test "$nb" -le "$now"
stop_server "given CA"

# --- IPv6 and --max-runtime -------------------------------------------------------------------
if python3 -c "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::1', 0))" 2>/dev/null; then
  ESTC_SERVER_STATE=$T/v6
  mkdir -p "$ESTC_SERVER_STATE"
  ESTC_SERVER_ADDR=::1 ESTC_SERVER_RUNTIME=4 estc_server_start --client-ca "$T/mca.crt" || exit 1
  coap -m post -t 286 -f "$T/a.csr" /est/sen
  expect_code 2.04 "sen over IPv6 ([::1])"
  check "IPv6 server certificate names ::1" grep -q "IP Address:0:0:0:0:0:0:0:1" \
    <(openssl x509 -in "$ESTC_SERVER_STATE/state/server.crt" -noout -ext subjectAltName)
  sleep 5
  if kill -0 "$ESTC_SERVER_PID" 2>/dev/null; then
    fail "--max-runtime 4 stopped the server"
  else
    wait "$ESTC_SERVER_PID"
    check "--max-runtime: stopped by itself with status 0" test $? -eq 0
    ESTC_SERVER_PID=
  fi
else
  echo "skip - no IPv6 loopback here"
fi
ESTC_SERVER_STATE=

finish
