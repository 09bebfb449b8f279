#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The provider module with real OpenSSL programs and libcoap as peers, for
# keys in a fresh swtpm TPM 2.0 simulator (tests/fixtures/swtpm.sh):
#
#   run-openssl-tpm2.sh csr  MODULE_DIR KEYTOOL [TEST_PROVIDER]
#       openssl req -new with the reference PEM and with the tpm2: address
#       (TCTI from the environment and from the address) for EC P-256, P-384
#       and RSA 2048 keys, checked by openssl req -verify; the CSR holds the
#       TPM's key; private export refused; the in-process tests against a TPM
#       key; errors are clear and leave the TPM unchanged.
#   run-openssl-tpm2.sh dtls MODULE_DIR KEYTOOL
#       DTLS 1.2 client authentication (ECDHE-ECDSA-AES128-CCM8) with the
#       client key in the TPM against openssl s_server -dtls1_2 -Verify 1 on
#       loopback, through openssl s_client and through libcoap's client.
#
# swtpm has no resource manager here: it serves one connection at a time, so
# every program that talks to the TPM (keytool, openssl, tpm2_getcap) runs
# alone and has exited before the next one starts.
#
# Persistent handles and NV indices are listed before and after: nothing is
# left behind except the storage primary key the engine provisions
# (0x81000001), which is the engine's infrastructure, not a test object.
set -euo pipefail

mode=$1
moddir=$2
keytool=$3
inproc=${4:-}
here=$(cd "$(dirname "$0")" && pwd)

# shellcheck source=../fixtures/swtpm.sh
. "$here/../fixtures/swtpm.sh"
swtpm_require 77 swtpm tpm2_getcap openssl || exit $?
# shellcheck source=../fixtures/openssl-provider.sh
. "$here/../fixtures/openssl-provider.sh"
SWTPM_LIFETIME=${SWTPM_LIFETIME:-280}

work=
# Stops what is still running, by PID; the exit status stays the script's.
cleanup() {
    local rc=$?
    set +e
    s_server_stop
    [ -z "$work" ] || [ -n "${KEEP:-}" ] || rm -rf "$work"
    swtpm_stop
    exit "$rc"
}
trap cleanup EXIT
swtpm_start || exit $?

provider_init "$moddir"
work=$(mktemp -d "${TMPDIR:-/tmp}/estc-provider-tpm2.XXXXXX")
cd "$work"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# tpm2-tools, without the sanitizer runtimes meant for the module.
getcap() {
    env -u LD_PRELOAD timeout 20 tpm2_getcap "$@"
}
# Test objects on the TPM: persistent handles other than the engine's SRK,
# and NV indices.
handles() {
    local p nv
    p=$(getcap handles-persistent) || return 1
    nv=$(getcap handles-nv-index) || return 1
    grep -v -i -e 0x81000001 -e "^$" <<<"$p" || true
    echo "--"
    echo "$nv"
}
count_keys() {
    local p
    p=$(getcap handles-persistent) || return 1
    grep -v -i -c -e 0x81000001 -e "^$" <<<"$p" || true
}

before=$(handles) || fail "tpm2_getcap"
echo "TPM objects before: [$before]"

# Key handles of this test, one per key type.
addr_of() {
    case "$1" in
    ec256) echo "tpm2:handle=0x81000320" ;;
    ec384) echo "tpm2:handle=0x81000321" ;;
    rsa2048) echo "tpm2:handle=0x81000322" ;;
    esac
}
# The same key, with the TCTI in the address instead of the environment.
with_tcti() {
    echo "$1?tcti=swtpm:host%3D127.0.0.1,port%3D$SWTPM_PORT"
}
provider_write_cnf openssl.cnf

case "$mode" in
csr)
    n=0
    for kt in ec256 ec384 rsa2048; do
        addr=$(addr_of "$kt")
        provider_new_key "$keytool" "$addr" "$kt" "ref-$kt.pem"
        n=$((n + 1))

        # Every way of naming the key makes a CSR that openssl accepts.
        provider_csr_pair "$kt" "$addr"
        provider_csr "$(with_tcti "$addr")" "/CN=tcti-$kt" "tcti-$kt.csr" ||
            fail "$kt: CSR from the address with tcti= does not verify"

        # The CSRs carry the TPM's key.
        for c in ref addr tcti; do
            provider_same_pub "ref-$kt.pem" "$c-$kt.csr" ||
                fail "$kt: the $c CSR holds another public key"
        done
        if command -v tpm2_readpublic >/dev/null 2>&1; then
            env -u LD_PRELOAD timeout 20 tpm2_readpublic -c "${addr#tpm2:handle=}" -f pem -o "tpmpub-$kt.pem" \
                >/dev/null
            ossl pkey -pubin -in "tpmpub-$kt.pem" -out "tpmpub2-$kt.pem"
            cmp -s "ref-$kt.pem.pub.pem" "tpmpub2-$kt.pem" ||
                fail "$kt: the provider's public key is not the TPM's"
        fi

        # No private key comes out, through any output format.
        provider_no_private_export "ref-$kt.pem" "priv-$kt" \
            "private key material cannot leave its engine"
        if ossl pkey "${P[@]}" -in "$addr" -out "priv-addr-$kt" 2>/dev/null; then
            fail "$kt: openssl pkey wrote the private key from the address"
        fi
        [ ! -s "priv-addr-$kt" ] || fail "$kt: private key bytes written from the address"
        provider_no_pkcs8 "ref-$kt.pem" "p8-$kt"
    done
    [ "$(count_keys)" = "$n" ] || fail "expected $n test keys on the TPM"

    # The configuration file alone is enough.
    OPENSSL_CONF=$work/openssl.cnf ossl req -new -key ref-ec256.pem -subj /CN=conf -out conf.csr
    ossl req -verify -noout -in conf.csr 2>&1 | grep -q "verify OK" || fail "openssl.cnf CSR"

    # The in-process suite with a TPM key too.
    if [ -n "$inproc" ]; then
        ESTC_TEST_KEY_ADDR=$(addr_of ec256) timeout 120 "$inproc"
    fi

    # Bad input: clear failures, the TPM unchanged.
    keys_now=$(handles)
    missing=tpm2:handle=0x81000329
    if ossl req -new "${P[@]}" -key "$missing" -subj /CN=x -out bad.csr 2>err-missing; then
        fail "a CSR from a missing key"
    fi
    # An absent object is an empty store: openssl says it found no key.
    grep -q "Could not read private key" err-missing ||
        fail "no clear error for a missing key: $(cat err-missing)"
    "$keytool" ref "$missing" ref-missing.pem
    if ossl req -new "${P[@]}" -key ref-missing.pem -subj /CN=x -out bad.csr 2>err-refmissing; then
        fail "a CSR from a reference to a missing key"
    fi
    # An NV index is not a key; a handle outside the persistent range is
    # refused before the TPM is asked.
    if ossl req -new "${P[@]}" -key tpm2:nv=0x01000320 -subj /CN=x -out bad.csr 2>/dev/null; then
        fail "a CSR from an NV address"
    fi
    if ossl req -new "${P[@]}" -key tpm2:handle=0x80000001 -subj /CN=x -out bad.csr \
        2>/dev/null; then
        fail "a CSR from a transient handle"
    fi
    # A TCTI where no TPM listens fails, and promptly.
    deadport=$(free_udp_port)
    if ossl req -new "${P[@]}" -key "tpm2:handle=0x81000320?tcti=swtpm:host%3D127.0.0.1,port%3D$deadport" \
        -subj /CN=x -out bad.csr 2>err-tcti; then
        fail "a CSR through a TCTI without a TPM"
    fi
    grep -q "estc:.*ESTC_ERR_ENGINE.*Tss2_TctiLdr_Initialize" err-tcti ||
        fail "no clear error for a TCTI without a TPM: $(cat err-tcti)"
    printf '%s\n' '-----BEGIN ESTC KEY REFERENCE-----' 'bm90IGFuIGFkZHJlc3M=' \
        '-----END ESTC KEY REFERENCE-----' >ref-garbage.pem
    if ossl req -new "${P[@]}" -key ref-garbage.pem -subj /CN=x -out bad.csr 2>/dev/null; then
        fail "a CSR from a malformed reference"
    fi
    [ ! -s bad.csr ] || fail "a failed request wrote a CSR"
    [ "$(handles)" = "$keys_now" ] || fail "errors changed the TPM"

    for kt in ec256 ec384 rsa2048; do
        "$keytool" remove "$(addr_of "$kt")"
    done
    if "$keytool" remove "$(addr_of ec256)" 2>err-remove; then
        fail "removing a removed key succeeded"
    fi
    grep -q "ESTC_ERR_NOT_FOUND" err-remove || fail "no NOT_FOUND for a removed key"
    ;;

dtls)
    addr=$(addr_of ec256)
    timeout 60 "$keytool" gen "$addr" ec256
    "$keytool" ref "$addr" client-ref.pem

    # A software CA and server; the client's certificate is issued for the
    # TPM key from a CSR the provider signed.
    dtls_client_pki client-ref.pem

    # 1. openssl s_client with the provider module and the reference PEM.
    s_server_start s_server-1.log
    s_client_hello s_client-1.log client-ref.pem
    s_server_check s_server-1.log "s_client (reference)"
    grep -q "Verification: OK" s_client-1.log || fail "s_client did not verify the server"
    grep -q hello s_server-1.log || fail "s_server did not receive the application data"

    # 2. openssl s_client with the key named by its tpm2: address.
    s_server_start s_server-2.log
    s_client_hello s_client-2.log "$addr"
    s_server_check s_server-2.log "s_client (address)"

    # 3. A client certificate for another key: the provider's key does not
    #    match it, and no handshake happens.
    openssl ecparam -name prime256v1 -genkey -noout -out other.key
    openssl req -new -key other.key -subj /CN=estc-client -out other.csr
    dtls_issue other.csr other.pem
    s_server_start s_server-3.log
    if echo hello | timeout 20 openssl s_client -dtls1_2 -connect "127.0.0.1:$S_SERVER_PORT" "${P[@]}" \
        -key client-ref.pem -cert other.pem -CAfile ca.pem \
        -cipher ECDHE-ECDSA-AES128-CCM8 >s_client-3.log 2>&1; then
        fail "s_client accepted a certificate for another key"
    fi
    s_server_stop
    grep -q "key values mismatch" s_client-3.log || {
        cat s_client-3.log
        fail "no key mismatch reported for a certificate of another key"
    }
    if grep -q "CIPHER is" s_server-3.log; then
        fail "a handshake with a certificate that does not match the TPM key"
    fi

    # 4. libcoap's client: it loads the key from PEM, so the reference PEM,
    #    with the provider from openssl.cnf.
    if command -v coap-client-openssl >/dev/null 2>&1; then
        s_server_start s_server-4.log
        coap_client_hello coap-client.log client-ref.pem "$work/openssl.cnf"
        s_server_check s_server-4.log "libcoap client"
    else
        echo "note: coap-client-openssl not installed; libcoap client part not run"
    fi

    "$keytool" remove "$addr"
    ;;
*)
    fail "unknown mode $mode"
    ;;
esac

after=$(handles)
echo "TPM objects after: [$after]"
[ "$after" = "$before" ] || fail "TPM objects differ: before [$before] after [$after]"
transient=$(getcap handles-transient)
[ -z "$transient" ] || fail "transient objects left loaded: $transient"
echo "PASS: $mode"
