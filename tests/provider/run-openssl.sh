#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The provider module with real OpenSSL programs and libcoap as peers, for
# keys on a fresh SoftHSM2 token (tests/fixtures/softhsm.sh):
#
#   run-openssl.sh csr  MODULE_DIR KEYTOOL TEST_PROVIDER
#       openssl req -new with the reference PEM and with the engine address
#       for EC P-256, P-384 and RSA 2048 keys, checked by openssl req -verify;
#       without -provider default a hint to load it (not a wrong-PIN error);
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
moddir=$2
keytool=$3
inproc=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../fixtures/softhsm.sh"
. "$here/../fixtures/openssl-provider.sh"
. "$here/../fixtures/processes.sh"

softhsm_start || exit $?

provider_init "$moddir"
work=$(mktemp -d "${TMPDIR:-/tmp}/estc-provider.XXXXXX")
pids=()
cleanup() {
    stop_pids "${pids[@]}"
    s_server_stop
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

provider_write_cnf openssl.cnf

case "$mode" in
csr)
    n=0
    for kt in ec256 ec384 rsa2048; do
        addr=$(addr_of "$kt")
        provider_new_key "$keytool" "$addr" "$kt" "ref-$kt.pem"
        n=$((n + 2))

        # Both ways of naming the key make a CSR that openssl accepts.
        provider_csr_pair "$kt" "$addr"

        # The CSR carries the token's key.
        provider_same_pub "ref-$kt.pem" "ref-$kt.csr" || fail "$kt: the CSR holds another public key"

        # No private key comes out, through any output format.
        provider_no_private_export "ref-$kt.pem" "priv-$kt"
        provider_no_pkcs8 "ref-$kt.pem" "p8-$kt"
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
    # The module without OpenSSL's default provider: SoftHSM2 cannot hash
    # the PIN in this process and would report CKR_PIN_INCORRECT; the
    # module says to load the default provider before touching the token.
    if openssl req -new -provider-path "$PROVIDER_DIR" -provider estc -key "$(addr_of ec256)" \
        -subj /CN=x -out bad.csr 2>err-nodefault; then
        fail "a CSR without the default provider"
    fi
    grep -q -- "-provider default" err-nodefault ||
        { cat err-nodefault >&2; fail "no hint at -provider default"; }
    if grep -q "CKR_PIN_INCORRECT" err-nodefault; then
        fail "a wrong PIN reported without the default provider"
    fi
    if openssl pkey -provider-path "$PROVIDER_DIR" -provider estc -in "$(addr_of ec256)" \
        -pubout -out bad.pub 2>err-nodefault; then
        fail "a public key without the default provider"
    fi
    grep -q -- "-provider default" err-nodefault || fail "pkey: no hint at -provider default"
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
    dtls_client_pki client-ref.pem

    # 1. openssl s_client with the provider module.
    s_server_start s_server-1.log
    s_client_hello s_client.log client-ref.pem
    s_server_check s_server-1.log "s_client"
    grep -q "Verification: OK" s_client.log || fail "s_client did not verify the server"

    # 2. libcoap's client: it loads the key from PEM, so the reference PEM,
    #    with the provider from openssl.cnf.
    s_server_start s_server-2.log
    coap_client_hello coap-client-1.log client-ref.pem "$work/openssl.cnf"
    s_server_check s_server-2.log "libcoap client"

    # 3. libcoap's client against libcoap's server, which checks the
    #    client certificate against the CA.
    cport=$(free_udp_port)
    timeout 30 coap-server-openssl -A 127.0.0.1 -p "$((cport - 1))" -c server.pem \
        -j server.key -R ca.pem -v 7 >coap-server.log 2>&1 </dev/null &
    cpid=$!
    pids+=("$cpid")
    sleep 1
    OPENSSL_CONF=$work/openssl.cnf timeout 20 coap-client-openssl -B 5 -v 6 \
        -c client.pem -j client-ref.pem -R ca.pem "coaps://127.0.0.1:$cport/" \
        >coap-client-2.log 2>&1 || true
    stop_pids "$cpid"
    grep -q "This is a test server" coap-client-2.log || {
        cat coap-client-2.log coap-server.log
        fail "libcoap client got no answer from coap-server-openssl"
    }
    if ! grep -q "CN 'estc-client' presented by client" coap-server.log ||
        ! grep -q "read certificate verify" coap-server.log; then
        fail "coap-server-openssl saw no signed client certificate"
    fi

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
