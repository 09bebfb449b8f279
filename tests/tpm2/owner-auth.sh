#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tpm2 suite, owner and parent passwords: a swtpm whose owner hierarchy
# has a password (set with tpm2_changeauth from a file). Checks that:
#   - without the password, or with a wrong one, key creation fails with
#     ESTC_ERR_AUTH and the TPM's persistent handles stay as they were;
#   - owner-auth-source= and ESTC_TPM2_OWNER_AUTH_FILE give it, one trailing
#     newline stripped; a file open to others or too long is refused;
#   - the conformance suite passes with the password, for persistent keys
#     and for key files (key-dir=);
#   - parent-auth-source= opens a storage key that has a password, for
#     persistent keys and for a key file under it; a wrong one is
#     ESTC_ERR_AUTH and changes nothing;
#   - no password ever appears in an error message.
#
#   owner-auth.sh FIXTURE TEST_TPM2 [ESTC_ENGINE_TEST]
set -u

fixture=$1
test_tpm2=$2
engine_test=${3:-}
wrap=${ESTC_TEST_WRAPPER:-}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tpm2_lib_start "$fixture" tpm2-auth tpm2_changeauth tpm2_createprimary tpm2_evictcontrol openssl

owner_pw='owner-Pw.4711'
printf '%s' "$owner_pw" >"$work/owner"
chmod 600 "$work/owner"
printf '%s\n' "$owner_pw" >"$work/owner-nl"
chmod 600 "$work/owner-nl"
printf '%s' 'wrong-Pw.0815' >"$work/wrong"
chmod 600 "$work/wrong"
swtpm_set_owner_auth "$work/owner" || { fail "tpm2_changeauth -c owner"; exit 1; }

tcti="swtpm:host%3D127.0.0.1,port%3D$SWTPM_PORT"
persistent() { tpm2_persistent; }

# run_err WANT WHAT ARGS...: the test tool fails with error WANT (never a
# crash) and the message holds no password.
run_err() {
    local want=$1 what=$2
    shift 2
    local rc=0
    $wrap "$test_tpm2" "$@" >"$work/out" 2>"$work/err" </dev/null || rc=$?
    if [ "$rc" -ne 1 ] || ! grep -q "$want" "$work/err"; then
        fail "$what: rc $rc, want $want: $(cat "$work/err")"
    elif grep -q -F -e "$owner_pw" -e 'wrong-Pw' -e 'parent-Pw' "$work/err"; then
        fail "$what: a password in the message: $(cat "$work/err")"
    else
        pass "$what: $want"
    fi
}

before=$(persistent)

# 1. No password, a wrong one: ESTC_ERR_AUTH, nothing made.
key="tpm2:handle=0x81000300"
run_err ESTC_ERR_AUTH "keygen without owner password" keygen "$key" p256
ESTC_TPM2_OWNER_AUTH_FILE=$work/wrong run_err ESTC_ERR_AUTH "keygen with a wrong owner password" \
    keygen "$key" p256
run_err ESTC_ERR_AUTH "keygen with a wrong owner-auth-source" \
    keygen "$key?owner-auth-source=$work/wrong" p256
mkdir -m 700 "$work/kf"
run_err ESTC_ERR_AUTH "key file without owner password" keygen "tpm2:key-file=$work/kf/k.pem" p256
if [ -e "$work/kf/k.pem" ] || [ -n "$(ls -A "$work/kf")" ]; then
    fail "a key file (or a temporary file) left after a failed generation: $(ls -A "$work/kf")"
fi
[ "$(persistent)" = "$before" ] && pass "persistent handles unchanged by the refused keygens" ||
    fail "persistent handles changed: before [$before] after [$(persistent)]"

# 2. Files refused (the one rule for files holding secrets: a regular
# file, not a symbolic link, no access for others, not writable by its
# group): open to others, group-writable, a symbolic link, a FIFO (refused
# without waiting for a writer: timeout makes a hang a failure), too long,
# missing.
cp "$work/owner" "$work/owner-bad"
for mode in 644 604 601; do
    chmod "$mode" "$work/owner-bad"
    run_err "owner-bad is open to others (mode 0$mode)" "owner-auth-source of mode 0$mode" \
        keygen "$key?owner-auth-source=$work/owner-bad" p256
done
chmod 620 "$work/owner-bad"
run_err "owner-bad is writable by its group (mode 0620)" "group-writable owner-auth-source" \
    keygen "$key?owner-auth-source=$work/owner-bad" p256
ESTC_TPM2_OWNER_AUTH_FILE=$work/owner-bad run_err \
    "ESTC_TPM2_OWNER_AUTH_FILE $work/owner-bad is writable by its group" \
    "group-writable ESTC_TPM2_OWNER_AUTH_FILE" keygen "$key" p256
ln -s "$work/owner" "$work/owner-link"
run_err "owner-link is a symbolic link" "owner-auth-source a symbolic link" \
    keygen "$key?owner-auth-source=$work/owner-link" p256
mkfifo -m 600 "$work/owner-fifo"
wrap_saved=$wrap
wrap="timeout 60 $wrap"
run_err "owner-fifo is not a regular file (a FIFO)" "owner-auth-source a FIFO" \
    keygen "$key?owner-auth-source=$work/owner-fifo" p256
ESTC_TPM2_OWNER_AUTH_FILE=$work/owner run_err "owner-fifo is not a regular file (a FIFO)" \
    "parent-auth-source a FIFO" keygen "$key?parent-auth-source=$work/owner-fifo" p256
wrap=$wrap_saved
ESTC_TPM2_OWNER_AUTH_FILE=$work/owner run_err "owner-bad is writable by its group" \
    "group-writable parent-auth-source" keygen "$key?parent-auth-source=$work/owner-bad" p256
head -c 65 /dev/zero | tr '\0' x >"$work/long"
chmod 600 "$work/long"
run_err "too long" "65-byte owner-auth-source" keygen "$key?owner-auth-source=$work/long" p256
run_err ESTC_ERR_AUTH "missing owner-auth-source" \
    keygen "$key?owner-auth-source=$work/nonexistent" p256
[ "$(persistent)" = "$before" ] && pass "persistent handles unchanged by the refused files" ||
    fail "persistent handles changed: before [$before] after [$(persistent)]"

# 3. The right password: attribute (a trailing newline stripped), group-
# readable file, environment.
chmod 640 "$work/owner-nl"
if $wrap "$test_tpm2" keygen "$key?owner-auth-source=$work/owner-nl" p256 &&
    $wrap "$test_tpm2" remove "$key?owner-auth-source=$work/owner-nl"; then
    pass "owner-auth-source with a trailing newline, mode 0640"
else
    fail "owner-auth-source with a trailing newline"
fi
if ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" keygen "$key" p256 &&
    ESTC_TPM2_OWNER_AUTH_FILE=file://$work/owner $wrap "$test_tpm2" remove "$key"; then
    pass "ESTC_TPM2_OWNER_AUTH_FILE"
else
    fail "ESTC_TPM2_OWNER_AUTH_FILE"
fi
# The attribute wins over the environment.
ESTC_TPM2_OWNER_AUTH_FILE=$work/owner run_err ESTC_ERR_AUTH "attribute over environment" \
    keygen "$key?owner-auth-source=$work/wrong" p256
# Removal needs the owner too: a wrong password keeps the key.
if ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" keygen "$key" p256; then
    ESTC_TPM2_OWNER_AUTH_FILE=$work/wrong run_err ESTC_ERR_AUTH "remove with a wrong password" \
        remove "$key"
    tpm2_getcap handles-persistent | grep -q -i 0x81000300 && pass "key kept" ||
        fail "key removed with a wrong password"
    ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" remove "$key" || fail "remove"
else
    fail "keygen with ESTC_TPM2_OWNER_AUTH_FILE"
fi

# The password of one address does not stay on the connection for the next
# one in the same context.
run_err "keygen-pair tpm2:handle=0x81000302: ESTC_ERR_AUTH" "owner password not kept for the next address" \
    keygen-pair "$key?owner-auth-source=$work/owner" tpm2:handle=0x81000302
if tpm2_getcap handles-persistent | grep -q -i 0x81000302; then
    fail "0x81000302 made without the owner password"
    ESTC_TPM2_OWNER_AUTH_FILE=$work/owner "$test_tpm2" remove tpm2:handle=0x81000302
fi
ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" remove "$key" || fail "remove $key"

# 4. The conformance suite with the owner password: persistent keys (the
# password in the address) and key files (in the environment).
if [ -n "$engine_test" ]; then
    for prefix in "tpm2:?tcti=$tcti&owner-auth-source=$work/owner" \
        "tpm2:key-dir=$work/kf?tcti=$tcti"; do
        if ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$engine_test" "$prefix" \
            >"$work/conformance.txt" 2>&1 && grep -q ' 0 failed' "$work/conformance.txt"; then
            pass "estc-engine-test '$prefix' with an owner password"
        else
            cat "$work/conformance.txt"
            fail "estc-engine-test '$prefix' with an owner password"
        fi
    done
    [ -z "$(ls -A "$work/kf")" ] && pass "key-dir empty after the conformance suite" ||
        fail "key-dir not empty: $(ls -A "$work/kf")"
else
    echo "SKIP: estc-engine-test not built; conformance part not run"
fi

# 5. A storage key with a password as parent (srk=, parent-auth-source=).
printf '%s' 'parent-Pw.42' >"$work/parent"
chmod 600 "$work/parent"
if tpm2_createprimary -Q -C o -P "file:$work/owner" -p "file:$work/parent" -g sha256 \
    -G ecc256:aes128cfb -c "$work/parent.ctx" &&
    tpm2_evictcontrol -Q -C o -P "file:$work/owner" -c "$work/parent.ctx" 0x81000007 &&
    tpm2_flushcontext -t >/dev/null 2>&1; then
    pk="tpm2:handle=0x81000301?srk=0x81000007"
    ESTC_TPM2_OWNER_AUTH_FILE=$work/owner run_err ESTC_ERR_AUTH "keygen without parent password" \
        keygen "$pk" p256
    if ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" keygen \
        "$pk&parent-auth-source=$work/parent" p256 &&
        echo -n "x" | openssl dgst -sha256 -binary >"$work/digest" &&
        $wrap "$test_tpm2" sign "$pk" <"$work/digest" >/dev/null &&
        ESTC_TPM2_OWNER_AUTH_FILE=$work/owner $wrap "$test_tpm2" remove "$pk"; then
        pass "parent-auth-source opens a parent with a password"
    else
        fail "parent-auth-source"
    fi
    tpm2_evictcontrol -Q -C o -P "file:$work/owner" -c 0x81000007 || fail "evict 0x81000007"
else
    fail "making a parent with a password"
fi

# 6. A key file whose parent is a persistent storage key with a password
# (0x81000008; noDA, so that the wrong passwords below do not count towards
# the TPM's lockout): parent-auth-source= gives it; a wrong one fails with
# ESTC_ERR_AUTH and a message that names parent-auth-source, and leaves the
# TPM's handles and the key file as they were.
printf '%s' 'wrong-Pw.0815' >"$work/parent-wrong"
chmod 600 "$work/parent-wrong"
mkdir -m 700 "$work/kfp"
# The key file of kfp.pub/kfp.priv with emptyAuth TRUE (the key has no
# password). Some tpm2_encodeobject versions write the flag inverted: the
# result is checked, and made again with -p (--key-auth) when it is FALSE.
encode_kfp() {
    local p
    for p in "" -p; do
        rm -f "$work/kfp/k.pem"
        # shellcheck disable=SC2086
        tpm2_encodeobject -Q -C 0x81000008 -P "file:$work/parent" -u "$work/kfp.pub" \
            -r "$work/kfp.priv" $p -o "$work/kfp/k.pem" || return 1
        openssl asn1parse -in "$work/kfp/k.pem" | grep -m1 BOOLEAN | grep -q ':1$' && return 0
    done
    return 1
}
if tpm2_createprimary -Q -C o -P "file:$work/owner" -p "file:$work/parent" -g sha256 \
    -G ecc256:aes128cfb -c "$work/kfp-parent.ctx" \
    -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' &&
    tpm2_evictcontrol -Q -C o -P "file:$work/owner" -c "$work/kfp-parent.ctx" 0x81000008 &&
    tpm2_flushcontext -t >/dev/null 2>&1 &&
    tpm2_create -Q -C 0x81000008 -P "file:$work/parent" -G ecc256 -u "$work/kfp.pub" \
        -r "$work/kfp.priv" -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' &&
    encode_kfp && chmod 600 "$work/kfp/k.pem"; then
    kf="tpm2:key-file=$work/kfp/k.pem"
    echo -n "y" | openssl dgst -sha256 -binary >"$work/digest"
    handles_before=$(tpm2_handles)
    files_before=$(cd "$work/kfp" && ls -la --time-style=+%s . && sha256sum k.pem)
    if $wrap "$test_tpm2" sign "$kf?parent-auth-source=$work/parent" <"$work/digest" \
        >/dev/null; then
        pass "key file under a parent with a password: parent-auth-source"
    else
        fail "key file under a parent with a password: sign with parent-auth-source"
    fi
    # sign_err WHAT ADDR: signing fails with ESTC_ERR_AUTH, a message that
    # points at the password, and no password in it.
    sign_err() {
        local rc=0
        $wrap "$test_tpm2" sign "$2" <"$work/digest" >/dev/null 2>"$work/err" || rc=$?
        if [ "$rc" -ne 1 ] || ! grep -q ESTC_ERR_AUTH "$work/err" ||
            ! grep -q 'wrong or missing owner or parent password' "$work/err"; then
            fail "$1: rc $rc: $(cat "$work/err")"
        elif grep -q -F -e "$owner_pw" -e 'wrong-Pw' -e 'parent-Pw' "$work/err"; then
            fail "$1: a password in the message: $(cat "$work/err")"
        else
            pass "$1: ESTC_ERR_AUTH, the message points at the password"
        fi
    }
    sign_err "key file sign, wrong parent-auth-source" \
        "$kf?parent-auth-source=$work/parent-wrong"
    sign_err "key file sign without parent-auth-source" "$kf"
    run_err ESTC_ERR_AUTH "key file public key, wrong parent-auth-source" \
        public "$kf?parent-auth-source=$work/parent-wrong"
    [ "$(tpm2_handles)" = "$handles_before" ] &&
        pass "handles unchanged by the refused key file uses" ||
        fail "handles changed: before [$handles_before] after [$(tpm2_handles)]"
    [ "$(cd "$work/kfp" && ls -la --time-style=+%s . && sha256sum k.pem)" = "$files_before" ] &&
        pass "key folder unchanged by the refused key file uses" ||
        fail "key folder changed: $(ls -la "$work/kfp")"
    [ -z "$(tpm2_transient)" ] && pass "no transient object after the refused uses" ||
        fail "transient objects left: $(tpm2_transient)"
    tpm2_evictcontrol -Q -C o -P "file:$work/owner" -c 0x81000008 || fail "evict 0x81000008"
else
    fail "making a key file under a parent with a password"
fi

# The engine's storage primary key (0x81000001) stays: infrastructure.
after=$(tpm2_persistent 0x81000001)
if [ "$before" = "$after" ]; then
    pass "persistent handles as before"
else
    fail "handles differ: before [$before] after [$after]"
fi
transient=$(tpm2_transient)
[ -z "$transient" ] && pass "no transient object left loaded" ||
    fail "transient objects left: $transient"

echo "tpm2 owner-auth: $failures failure(s)"
[ "$failures" -eq 0 ]
