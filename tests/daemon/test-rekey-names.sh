#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Repeated `estc reenroll --rekey` with the key at the address the last one
# reported: the new key's name derives from a stable base, so it does not
# grow (it used to gain "estc-key-<hex>.key.pem" per rekey and fail with
# "File name too long" at the eighth), and the old key is removed each time:
# ten rekeys with file: keys and ten with a SoftHSM2 token.
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
finish
