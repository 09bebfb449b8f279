#!/usr/bin/env bash
# The provider module with real OpenSSL programs and libcoap as peers, for
# keys on a fresh SoftHSM2 token (tests/fixtures/softhsm.sh):
#
#   run-openssl.sh csr  MODULE_DIR KEYTOOL TEST_PROVIDER
#       openssl req -new with the reference PEM and with the engine address
#       for EC P-256, P-384 and RSA 2048 keys, checked by openssl req -verify;
#       the in-process tests against a token key; private export refused;
#       errors leave the token unchanged; the openssl.cnf snippet of the docs.
#   run-openssl.sh dtls MODULE_DIR KEYTOOL
#       DTLS 1.2 client authentication with the client key on the token
#       against openssl s_server -dtls1_2 -Verify 1 on loopback, through
#       openssl s_client and through libcoap's client, and libcoap's client
#       against coap-server-openssl.
#
# The token's objects are counted before and after: nothing is left behind.
set -euo pipefail

mode=$1
moddir=$(cd "$2" && pwd)
keytool=$3
inproc=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../fixtures/softhsm.sh"

softhsm_start || exit $?

# A sanitizer build of the module runs inside programs that are not: load
# the runtimes first. Leaks are not checked in those foreign programs.
# ldd's output is read whole: under pipefail `ldd | grep -q` can fail when
# grep's early exit breaks the pipe, and the preload would silently be lost.
moddeps=$(ldd "$moddir/estc.so")
if [[ $moddeps == *libasan* ]]; then
    LD_PRELOAD=$(printf '%s\n' "$moddeps" | awk '/libasan|libubsan/ { printf "%s ", $3 }')
    export LD_PRELOAD ASAN_OPTIONS=detect_leaks=0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/estc-provider.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] || rm -rf "$work"
    softhsm_stop
}
trap cleanup EXIT
cd "$work"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

token=estc-prov
pin=1234
softhsm_init_token "$token" "$pin"
before=$(softhsm_count_objects "$token" "$pin")
[ "$before" = 0 ] || fail "a fresh token holds $before objects"

addr_of() {
    echo "pkcs11:token=$token;object=prov-$1;pin-value=$pin?module-path=$SOFTHSM_MODULE"
}
P=(-provider-path "$moddir" -provider estc -provider default -propquery '?provider=default')

# An openssl.cnf that loads the module, as docs/provider.md shows it.
cat >openssl.cnf <<EOF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
default = default_sect
estc = estc_sect

[default_sect]
activate = 1

[estc_sect]
module = $moddir/estc.so
activate = 1

[algorithm_sect]
default_properties = ?provider=default
EOF

free_udp_port() {
    python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

case "$mode" in
csr)
    n=0
    for kt in ec256 ec384 rsa2048; do
        addr=$(addr_of "$kt")
        "$keytool" gen "$addr" "$kt"
        "$keytool" ref "$addr" "ref-$kt.pem"
        n=$((n + 2))
        [ "$(stat -c %a "ref-$kt.pem")" = 600 ] || fail "reference file not 0600"
        grep -q -- "-----BEGIN ESTC KEY REFERENCE-----" "ref-$kt.pem" || fail "no PEM label"

        # Both ways of naming the key make a CSR that openssl accepts.
        openssl req -new "${P[@]}" -key "ref-$kt.pem" -subj "/CN=ref-$kt" -out "ref-$kt.csr"
        openssl req -verify -noout -in "ref-$kt.csr" 2>&1 | grep -q "verify OK" ||
            fail "$kt: CSR from the reference does not verify"
        openssl req -new "${P[@]}" -key "$addr" -subj "/CN=addr-$kt" -out "addr-$kt.csr"
        openssl req -verify -noout -in "addr-$kt.csr" 2>&1 | grep -q "verify OK" ||
            fail "$kt: CSR from the address does not verify"

        # The CSR carries the token's key.
        openssl pkey "${P[@]}" -in "ref-$kt.pem" -pubout -out "pub-$kt.pem"
        openssl req -in "ref-$kt.csr" -pubkey -noout >"csrpub-$kt.pem"
        cmp -s "pub-$kt.pem" "csrpub-$kt.pem" || fail "$kt: the CSR holds another public key"

        # No private key comes out, through any output format.
        for fmt in PEM DER; do
            if openssl pkey "${P[@]}" -in "ref-$kt.pem" -outform "$fmt" -out "priv-$kt" \
                2>"err-$kt"; then
                fail "$kt: openssl pkey wrote the private key ($fmt)"
            fi
            [ ! -s "priv-$kt" ] || fail "$kt: private key bytes written ($fmt)"
        done
        if openssl pkcs8 -topk8 -nocrypt "${P[@]}" -in "ref-$kt.pem" -out "p8-$kt" 2>/dev/null; then
            fail "$kt: openssl pkcs8 wrote the private key"
        fi
        [ ! -s "p8-$kt" ] || fail "$kt: PKCS#8 bytes written"
    done
    [ "$(softhsm_count_objects "$token" "$pin")" = "$n" ] || fail "expected $n objects"

    # The configuration file alone is enough.
    OPENSSL_CONF=$work/openssl.cnf openssl req -new -key ref-ec256.pem -subj /CN=conf -out conf.csr
    openssl req -verify -noout -in conf.csr 2>&1 | grep -q "verify OK" || fail "openssl.cnf CSR"

    # The in-process suite with a token key too.
    if [ -n "$inproc" ]; then
        ESTC_TEST_KEY_ADDR=$(addr_of ec256) "$inproc"
    fi

    # Bad input: clear failures, the token unchanged.
    missing="pkcs11:token=$token;object=missing;pin-value=$pin?module-path=$SOFTHSM_MODULE"
    if openssl req -new "${P[@]}" -key "$missing" -subj /CN=x -out bad.csr 2>err-missing; then
        fail "a CSR from a missing key"
    fi
    "$keytool" ref "$missing" ref-missing.pem
    if openssl req -new "${P[@]}" -key ref-missing.pem -subj /CN=x -out bad.csr 2>err-missing; then
        fail "a CSR from a reference to a missing key"
    fi
    wrongpin="pkcs11:token=$token;object=prov-ec256;pin-value=9999?module-path=$SOFTHSM_MODULE"
    if openssl req -new "${P[@]}" -key "$wrongpin" -subj /CN=x -out bad.csr 2>err-pin; then
        fail "a CSR with a wrong PIN"
    fi
    # openssl itself echoes its -key argument; our own errors must not.
    grep -q "C_Login: CKR_PIN_INCORRECT" err-pin || fail "no clear wrong-PIN error"
    if grep ":estc:" err-pin | grep -q 9999; then
        fail "the PIN appears in an error message"
    fi
    printf '%s\n' '-----BEGIN ESTC KEY REFERENCE-----' 'bm90IGFuIGFkZHJlc3M=' \
        '-----END ESTC KEY REFERENCE-----' >ref-garbage.pem
    if openssl req -new "${P[@]}" -key ref-garbage.pem -subj /CN=x -out bad.csr 2>/dev/null; then
        fail "a CSR from a malformed reference"
    fi
    [ "$(softhsm_count_objects "$token" "$pin")" = "$n" ] || fail "errors changed the token"

    for kt in ec256 ec384 rsa2048; do
        "$keytool" remove "$(addr_of "$kt")"
    done
    ;;

dtls)
    addr=$(addr_of ec256)
    "$keytool" gen "$addr" ec256
    "$keytool" ref "$addr" client-ref.pem

    # A software CA and server; the client's certificate is issued for the
    # token key from a CSR the provider signed.
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=estc-test-ca -days 2 -out ca.pem
    openssl ecparam -name prime256v1 -genkey -noout -out server.key
    openssl req -new -key server.key -subj /CN=127.0.0.1 -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem 2>/dev/null
    openssl req -new "${P[@]}" -key client-ref.pem -subj /CN=estc-client -out client.csr
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out client.pem 2>/dev/null

    # start_s_server LOG: one DTLS 1.2 connection that must present a client
    # certificate; stops by itself after it (or after the time-out).
    start_s_server() {
        port=$(free_udp_port)
        # s_server quits at the end of its input: keep it open a while.
        sleep 25 | timeout 30 openssl s_server -dtls1_2 -Verify 1 -verify_return_error \
            -accept "127.0.0.1:$port" -cert server.pem -key server.key -CAfile ca.pem \
            -cipher ECDHE-ECDSA-AES128-CCM8 -naccept 1 >"$1" 2>&1 &
        spid=$!
        pids+=("$spid")
        for _ in $(seq 50); do
            grep -q ACCEPT "$1" && return 0
            sleep 0.1
        done
        fail "s_server did not start"
    }
    check_s_server() {
        wait "$spid" || true
        grep -q "CIPHER is ECDHE-ECDSA-AES128-CCM8" "$1" || {
            cat "$1"
            fail "$2: no ECDHE-ECDSA-AES128-CCM8 session"
        }
        grep -q "subject=CN = estc-client" "$1" || {
            cat "$1"
            fail "$2: s_server saw no client certificate"
        }
    }

    # 1. openssl s_client with the provider module.
    start_s_server s_server-1.log
    (
        echo hello
        sleep 1
    ) | timeout 20 openssl s_client -dtls1_2 -connect "127.0.0.1:$port" "${P[@]}" \
        -key client-ref.pem -cert client.pem -CAfile ca.pem -verify_return_error \
        -cipher ECDHE-ECDSA-AES128-CCM8 >s_client.log 2>&1 || true
    check_s_server s_server-1.log "s_client"
    grep -q "Verification: OK" s_client.log || fail "s_client did not verify the server"

    # 2. libcoap's client: it loads the key from PEM, so the reference PEM,
    #    with the provider from openssl.cnf.
    start_s_server s_server-2.log
    OPENSSL_CONF=$work/openssl.cnf timeout 20 coap-client-openssl -B 3 -v 6 \
        -c client.pem -j client-ref.pem -R ca.pem "coaps://127.0.0.1:$port/" \
        >coap-client-1.log 2>&1 || true
    check_s_server s_server-2.log "libcoap client"

    # 3. libcoap's client against libcoap's server, which checks the
    #    client certificate against the CA.
    port=$(free_udp_port)
    cport=$port
    timeout 30 coap-server-openssl -A 127.0.0.1 -p "$((cport - 1))" -c server.pem \
        -j server.key -R ca.pem -v 7 >coap-server.log 2>&1 </dev/null &
    cpid=$!
    pids+=("$cpid")
    sleep 1
    OPENSSL_CONF=$work/openssl.cnf timeout 20 coap-client-openssl -B 5 -v 6 \
        -c client.pem -j client-ref.pem -R ca.pem "coaps://127.0.0.1:$cport/" \
        >coap-client-2.log 2>&1 || true
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
    grep -q "This is a test server" coap-client-2.log || {
        cat coap-client-2.log coap-server.log
        fail "libcoap client got no answer from coap-server-openssl"
    }
    grep -q "CN 'estc-client' presented by client" coap-server.log &&
        grep -q "read certificate verify" coap-server.log ||
        fail "coap-server-openssl saw no signed client certificate"

    "$keytool" remove "$addr"
    ;;
*)
    fail "unknown mode $mode"
    ;;
esac

after=$(softhsm_count_objects "$token" "$pin")
echo "objects on the token: $before before, $after after"
[ "$after" = "$before" ] || fail "$((after - before)) objects left behind"
echo "PASS: $mode"
