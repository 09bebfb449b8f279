#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Repeated `estc reenroll --rekey` with the key at the address the last one
# reported: the new key's name derives from a stable base, so it does not
# grow (it used to gain "estc-key-<hex>.key.pem" per rekey and fail with
# "File name too long" at the eighth), and the old key is removed each time:
# ten rekeys with file: keys and ten with a SoftHSM2 token.
# Relative file: addresses work, made absolute once against the folder estc
# started in (also with --psa-dir, which changes the current folder), and
# the state stores the absolute form.
. "$(dirname "$0")/common.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
start_server --validity 600 --dedup-window 0
start_token dev "$PIN"

# rekeys WHAT KEY CERT COUNT-COMMAND: enroll, then ten rekeys, each with the
# key where the previous one put it.
rekeys() {
  local what=$1 key=$2 cert=$3 counter=$4 n0 n1 i max=0 pub old
  run_estc enroll "${NET[@]}" "${BOOT[@]}" --subject "/CN=rekey-$what" --new-key "$key" \
    --new-cert "$cert"
  expect_ok "$what: enroll"
  n0=$($counter)
  for i in $(seq 1 10); do
    old=$key
    run_estc reenroll "${NET[@]}" --rekey --key "$key" --cert "$cert"
    if [ "$RC" -ne 0 ]; then
      fail "$what: rekey $i (exit $RC)"; show_err; return
    fi
    key=$(sed -n 's/.*, key at \(.*\)$/\1/p' "$T/stderr")
    key=${key//pin-value=\*\*\*/pin-value=$PIN}
    [ "${#key}" -gt "$max" ] && max=${#key}
    [ "$key" != "$old" ] || { fail "$what: rekey $i kept the key address"; return; }
  done
  pass "$what: ten rekeys in a row"
  n1=$($counter)
  check "$what: as many objects after as before ($n0 -> $n1)" test "$n0" -eq "$n1"
  check "$what: the key's address stays short (longest ${max}, first ${#2})" \
    test "$max" -le $((${#2} + 40))
}

mkdir -m 700 "$T/f"
files() { find "$T/f" -type f | wc -l; }
rekeys file "file:$T/f/k.pem" "file:$T/f/c.pem" files
check "file: no name holds two generated names" \
  test "$(find "$T/f" -name '*estc-key-*estc-key-*' | wc -l)" -eq 0

rekeys pkcs11 "$(addr k)" "$(addr c)" count
check "pkcs11: no label holds two generated names" \
  test "$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label dev --login --pin "$PIN" -O 2>/dev/null |
    grep -c 'label:.*estc-key-.*estc-key-')" -eq 0

# Relative file: addresses.
mkdir -m 700 "$T/w" "$T/w/dev" "$T/w/d2" "$T/w/d3"
(cd "$T/w" && timeout 150 $WRAP "$ESTC" enroll "${NET[@]}" "${BOOT[@]}" --subject /CN=rel \
  --new-key file:dev/k.pem --new-cert file:dev/c.pem >"$T/stdout" 2>"$T/stderr")
RC=$?
expect_ok "enroll with relative file: addresses"
check "relative: the key and certificate are in the folder estc ran in" \
  openssl verify -CAfile "$ESTC_SERVER_CA" "$T/w/dev/c.pem"
check "relative: reported as absolute" grep -q "key at file:$T/w/dev/k.pem\$" "$T/stderr"
same_key "relative" "$T/w/dev/c.pem" "$(openssl pkey -in "$T/w/dev/k.pem" -pubout 2>/dev/null)"
(cd "$T/w" && timeout 150 $WRAP "$ESTC" run --state state "${NET[@]}" "${BOOT[@]}" \
  --subject /CN=rel-run --new-key file:d2/k.pem --new-cert file:d2/c.pem --ca-out file:d2/ca- \
  --once >"$T/stdout" 2>"$T/stderr")
RC=$?
expect_ok "run --once with relative file: addresses"
check "run: key and certificate made in the folder estc ran in" \
  openssl verify -CAfile "$ESTC_SERVER_CA" "$T/w/d2/c.pem"
check "run: the state stores the absolute key address" grep -qa "file:$T/w/d2/k.pem" "$T/w/state"
check "run: no relative address in the state" test "$(grep -ac 'file:d2/' "$T/w/state")" -eq 0
(cd / && timeout 60 "$ESTC" status --state "$T/w/state" >"$T/stdout" 2>"$T/stderr")
RC=$?
expect_ok "status from another folder"
check "status shows the absolute key address" grep -q "file:$T/w/d2/k.pem" "$T/stdout"
# --psa-dir enters another folder: the addresses still mean the first one.
(cd "$T/w" && timeout 150 $WRAP "$ESTC" run --state st3 --psa-dir psa "${NET[@]}" "${BOOT[@]}" \
  --subject /CN=rel-psa --new-key file:d3/k.pem --new-cert file:d3/c.pem --once \
  >"$T/stdout" 2>"$T/stderr")
RC=$?
expect_ok "run --once --psa-dir with relative file: addresses"
check "--psa-dir: key and certificate in the folder estc ran in, not in psa/" \
  test -s "$T/w/d3/k.pem" -a -s "$T/w/d3/c.pem" -a ! -e "$T/w/psa/d3"
finish
