#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tpm2 suite, TSS2 PRIVATE KEY files (tpm2:key-file=PATH) on a swtpm:
#   - a key file made by the engine is 0600, loads in tpm2-openssl
#     (`openssl pkey -provider tpm2`), signs there, and both sides agree on
#     its public key;
#   - a key file made by tpm2-openssl (`openssl genpkey -provider tpm2`)
#     signs through the engine and verifies with openssl;
#   - bad files (truncated, wrong OID, wrong parent, garbage PEM, another
#     PEM type, empty) give ESTC_ERR_FORMAT or ESTC_ERR_NOT_FOUND, never a
#     crash, and are never deleted by key_remove;
#   - generation never replaces a file and leaves nothing on failure;
#   - no TPM object is left behind.
#
#   keyfile.sh FIXTURE TEST_TPM2
set -u

fixture=$1
test_tpm2=$2
wrap=${ESTC_TEST_WRAPPER:-}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tpm2_lib_start "$fixture" tpm2-keyfile openssl python3
export TPM2OPENSSL_TCTI=$ESTC_TEST_TCTI
# The provider connects to the TPM when it loads: asked after swtpm_start.
if ! openssl list -providers -provider tpm2 >/dev/null 2>&1; then
    echo "SKIP: the tpm2-openssl provider (Debian: tpm2-openssl) is not installed" >&2
    exit 77
fi

ossl() { openssl "$@" -provider tpm2 -provider default -propquery '?provider=tpm2'; }

handles() { tpm2_handles; }
before=$(handles)

echo -n "estc key file test message" >"$work/msg"
openssl dgst -sha256 -binary "$work/msg" >"$work/digest"

# 1. Engine-made key files, EC and RSA, in tpm2-openssl.
for type in p256 rsa2048; do
    scheme=
    [ "$type" = rsa2048 ] && scheme=pkcs1
    k=$work/estc-$type.pem
    addr="tpm2:key-file=$k"
    if ! $wrap "$test_tpm2" keygen "$addr" "$type"; then
        fail "keygen $addr"
        continue
    fi
    mode=$(stat -c %a "$k")
    [ "$mode" = 600 ] && pass "$type key file mode 0600" || fail "$type key file mode $mode"
    head -1 "$k" | grep -q -- '-----BEGIN TSS2 PRIVATE KEY-----' ||
        fail "$type key file is not PEM TSS2 PRIVATE KEY"
    $wrap "$test_tpm2" public "$addr" >"$work/spki.der" || fail "public $addr"
    openssl pkey -pubin -inform DER -in "$work/spki.der" -out "$work/estc.pub" || fail "spki"
    if ossl pkey -in "$k" -pubout -out "$work/ossl.pub" && cmp -s "$work/estc.pub" "$work/ossl.pub"
    then
        pass "$type: tpm2-openssl loads the engine's key file, same public key"
    else
        fail "$type: tpm2-openssl public key differs or does not load"
    fi
    if ossl pkeyutl -sign -inkey "$k" -in "$work/digest" -out "$work/ossl.sig" \
        -pkeyopt digest:sha256 &&
        openssl pkeyutl -verify -pubin -inkey "$work/estc.pub" -in "$work/digest" \
            -sigfile "$work/ossl.sig" -pkeyopt digest:sha256 >/dev/null; then
        pass "$type: tpm2-openssl signs with the engine's key file"
    else
        fail "$type: tpm2-openssl cannot sign with the engine's key file"
    fi
    if $wrap "$test_tpm2" sign "$addr" $scheme <"$work/digest" >"$work/estc.sig" &&
        openssl pkeyutl -verify -pubin -inkey "$work/estc.pub" -in "$work/digest" \
            -sigfile "$work/estc.sig" -pkeyopt digest:sha256 >/dev/null; then
        pass "$type: engine signature with its key file verifies"
    else
        fail "$type: engine signature with its key file"
    fi
done

# 2. A tpm2-openssl key file through the engine.
o=$work/ossl-ec.pem
if ossl genpkey -algorithm EC -pkeyopt group:P-256 -out "$o" 2>/dev/null &&
    ossl pkey -in "$o" -pubout -out "$work/o.pub"; then
    if $wrap "$test_tpm2" public "tpm2:key-file=$o" >"$work/o.spki" &&
        openssl pkey -pubin -inform DER -in "$work/o.spki" | cmp -s - "$work/o.pub"; then
        pass "engine reads the public key of a tpm2-openssl key file"
    else
        fail "public key of a tpm2-openssl key file"
    fi
    if $wrap "$test_tpm2" sign "tpm2:key-file=$o" <"$work/digest" >"$work/o.sig" &&
        openssl pkeyutl -verify -pubin -inkey "$work/o.pub" -in "$work/digest" \
            -sigfile "$work/o.sig" -pkeyopt digest:sha256 >/dev/null; then
        pass "engine signs with a tpm2-openssl key file; openssl verifies"
    else
        fail "engine signature with a tpm2-openssl key file"
    fi
    # and a changed digest does not verify (the check can fail)
    echo -n "other" | openssl dgst -sha256 -binary >"$work/digest2"
    if openssl pkeyutl -verify -pubin -inkey "$work/o.pub" -in "$work/digest2" \
        -sigfile "$work/o.sig" -pkeyopt digest:sha256 >/dev/null 2>&1; then
        fail "signature verifies over another digest"
    fi
else
    fail "openssl genpkey -provider tpm2"
fi

# 3. Bad files.
# run_err WANT WHAT ARGS...: fails with exit status 1 (an error, not a
# crash) and WANT in the message.
run_err() {
    local want=$1 what=$2
    shift 2
    local rc=0
    $wrap "$test_tpm2" "$@" >/dev/null 2>"$work/err" <"$work/digest" || rc=$?
    if [ "$rc" -eq 1 ] && grep -q -- "$want" "$work/err"; then
        pass "$what: $want"
    else
        fail "$what: rc $rc, want $want: $(cat "$work/err")"
    fi
}
# Rewrites the DER inside a key file: the fields of TSSPrivKey re-encoded
# with one changed.
mutate() {
    python3 - "$@" <<'PY'
import base64, sys
src, dst, what = sys.argv[1], sys.argv[2], sys.argv[3]
lines = open(src).read().split("\n")
der = base64.b64decode("".join(l for l in lines if l and not l.startswith("-----")))
def tlv(d, i):
    tag = d[i]; n = d[i + 1]; i += 2
    if n & 0x80:
        k = n & 0x7F; n = int.from_bytes(d[i:i + k], "big"); i += k
    return tag, d[i:i + n], i + n
def enc(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big"); ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + body
_, body, _ = tlv(der, 0)
fields, i = [], 0
while i < len(body):
    t, v, i = tlv(body, i)
    fields.append([t, v])
if what == "oid":
    fields[0][1] = bytes.fromhex("678105 0a0104".replace(" ", ""))  # importable key
elif what == "parent-null":
    fields[2][1] = bytes.fromhex("40000007")
elif what == "parent-srk":
    fields[2][1] = bytes.fromhex("0081000001")
elif what == "parent-missing":
    fields[2][1] = bytes.fromhex("0081000077")
elif what == "pub-trunc":
    fields[3][1] = fields[3][1][:-3]
elif what == "priv-byte":
    v = bytearray(fields[4][1]); v[len(v) // 2] ^= 1; fields[4][1] = bytes(v)
out = enc(0x30, b"".join(enc(t, v) for t, v in fields))
if what == "der-trunc":
    out = der[: len(der) - 9]
b64 = base64.b64encode(out).decode()
with open(dst, "w") as f:
    f.write("-----BEGIN TSS2 PRIVATE KEY-----\n")
    for j in range(0, len(b64), 64):
        f.write(b64[j:j + 64] + "\n")
    f.write("-----END TSS2 PRIVATE KEY-----\n")
PY
}
good=$work/estc-p256.pem
if [ -f "$good" ]; then
    # The SRK at 0x81000001 exists for the wrong-parent check.
    $wrap "$test_tpm2" keygen tpm2:handle=0x81000300 p256 &&
        $wrap "$test_tpm2" remove tpm2:handle=0x81000300 || fail "SRK setup"
    head -c 200 "$good" >"$work/bad-trunc.pem"
    run_err "not a PEM file" "truncated PEM" public "tpm2:key-file=$work/bad-trunc.pem"
    mutate "$good" "$work/bad-der.pem" der-trunc
    run_err "malformed TSSPrivKey" "truncated DER" public "tpm2:key-file=$work/bad-der.pem"
    mutate "$good" "$work/bad-oid.pem" oid
    run_err "not a loadable key" "wrong OID" sign "tpm2:key-file=$work/bad-oid.pem"
    mutate "$good" "$work/bad-parent.pem" parent-null
    run_err "unsupported parent" "parent TPM2_RH_NULL" public "tpm2:key-file=$work/bad-parent.pem"
    mutate "$good" "$work/bad-srk.pem" parent-srk
    run_err "the TPM refuses the key file" "wrong parent (the SRK)" \
        sign "tpm2:key-file=$work/bad-srk.pem"
    mutate "$good" "$work/bad-missing.pem" parent-missing
    run_err "parent 0x81000077 is not in the TPM" "missing parent" \
        public "tpm2:key-file=$work/bad-missing.pem"
    mutate "$good" "$work/bad-pub.pem" pub-trunc
    run_err "malformed public part" "truncated TPM2B_PUBLIC" public "tpm2:key-file=$work/bad-pub.pem"
    mutate "$good" "$work/bad-priv.pem" priv-byte
    run_err "ESTC_ERR_FORMAT" "changed private blob" sign "tpm2:key-file=$work/bad-priv.pem"
    printf -- '-----BEGIN TSS2 PRIVATE KEY-----\n!!garbage??\n-----END TSS2 PRIVATE KEY-----\n' \
        >"$work/bad-garbage.pem"
    run_err "not a PEM file" "garbage PEM" public "tpm2:key-file=$work/bad-garbage.pem"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/bad-plain.pem"
    run_err "another PEM type" "an ordinary private key" public "tpm2:key-file=$work/bad-plain.pem"
    head -c 300 /dev/urandom >"$work/bad-random.pem"
    run_err "ESTC_ERR_FORMAT" "random bytes" sign "tpm2:key-file=$work/bad-random.pem"
    : >"$work/bad-empty.pem"
    run_err "empty file" "empty file" public "tpm2:key-file=$work/bad-empty.pem"
    run_err "ESTC_ERR_NOT_FOUND" "missing file" public "tpm2:key-file=$work/nonexistent.pem"
    run_err "ESTC_ERR_FORMAT" "a folder" public "tpm2:key-file=$work"
    # key_remove deletes only TSS2 key files.
    run_err "ESTC_ERR_FORMAT" "remove an ordinary key" remove "tpm2:key-file=$work/bad-plain.pem"
    [ -f "$work/bad-plain.pem" ] && pass "an ordinary file survives remove" ||
        fail "remove deleted a file that is no TSS2 key"
else
    fail "no engine key file for the bad-file checks"
fi

# 4. Generation never replaces and leaves nothing on failure; remove.
cp "$good" "$work/copy.pem"
run_err ESTC_ERR_EXISTS "keygen over an existing file" keygen "tpm2:key-file=$good" p256
cmp -s "$good" "$work/copy.pem" && pass "existing key file unchanged" || fail "key file replaced"
mkdir -m 777 "$work/open"
run_err "writable by group or others" "keygen into a world-writable folder" \
    keygen "tpm2:key-file=$work/open/k.pem" p256
run_err ESTC_ERR_NOT_FOUND "keygen into a missing folder" \
    keygen "tpm2:key-file=$work/missing/k.pem" p256
mkdir -m 700 "$work/ro"
chmod 500 "$work/ro"
if [ "$(id -u)" != 0 ]; then
    run_err ESTC_ERR_AUTH "keygen into a read-only folder" keygen "tpm2:key-file=$work/ro/k.pem" p256
fi
# A write that fails half-way (the file size limit, its signal ignored so
# that write() fails with EFBIG) leaves neither the file nor a temporary one.
mkdir -m 700 "$work/full"
# (Its messages go through a pipe, which the limit does not touch.)
rc=0
msg=$(
    trap '' XFSZ
    ulimit -f 0
    exec $wrap "$test_tpm2" keygen "tpm2:key-file=$work/full/k.pem" p256 2>&1
) || rc=$?
if [ "$rc" -eq 1 ] && grep -q "ESTC_ERR_IO" <<<"$msg" && [ -z "$(ls -A "$work/full")" ]; then
    pass "a failed write leaves no file: $msg"
else
    fail "failed write: rc $rc, $msg, left: $(ls -A "$work/full")"
fi
left=$(find "$work/open" "$work/ro" "$work" -mindepth 1 -maxdepth 1 -name '*tmp*')
left+=$(find "$work/open" "$work/ro" -mindepth 1)
[ -z "$left" ] && pass "nothing left in the refused folders" || fail "files left: $left"
for k in "$work"/estc-*.pem; do
    $wrap "$test_tpm2" remove "tpm2:key-file=$k" || fail "remove $k"
    [ -e "$k" ] && fail "$k still there after remove"
done
run_err ESTC_ERR_NOT_FOUND "remove twice" remove "tpm2:key-file=$work/estc-p256.pem"

# 5. Import (PKCS#8) into a key file, read back by tpm2-openssl.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$work/p8.pem"
openssl pkcs8 -topk8 -nocrypt -in "$work/p8.pem" -outform DER -out "$work/p8.der"
openssl pkey -in "$work/p8.pem" -pubout -out "$work/p8.pub"
if $wrap "$test_tpm2" import "tpm2:key-file=$work/imported.pem" <"$work/p8.der" &&
    ossl pkey -in "$work/imported.pem" -pubout | cmp -s - "$work/p8.pub"; then
    pass "imported key file loads in tpm2-openssl with the key's public key"
else
    fail "import into a key file"
fi
[ "$(stat -c %a "$work/imported.pem" 2>/dev/null)" = 600 ] || fail "imported key file mode"

after=$(handles | grep -v -i 0x81000001)
before_nosrk=$(grep -v -i 0x81000001 <<<"$before")
if [ "$before_nosrk" = "$after" ]; then
    pass "persistent handles and NV indices as before"
else
    fail "handles differ: before [$before_nosrk] after [$after]"
fi
transient=$(tpm2_transient)
[ -z "$transient" ] && pass "no transient object left loaded" ||
    fail "transient objects left: $transient"

echo "tpm2 key files: $failures failure(s)"
[ "$failures" -eq 0 ]
