#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# estc-server's enrollment policy against hostile CSRs, on loopback with a
# real coap-client-openssl: sren keeps Subject and SAN byte for byte; no
# control characters or invalid strings in names; SAN count, SAN kinds and
# CSR size limits; never the server's own names; the CN rules. Every refusal
# names its rule, is logged, and issues nothing; valid enrollments still pass.
. "$(dirname "$0")/lib.sh"

FORGE=${ESTC_CSR_FORGE:?the csr-forge test program}

make_pki || { echo "FAIL: cannot make test certificates"; exit 1; }
# A device whose manufacturer certificate carries a serialNumber.
pki_issue "$T/mca.key" "$T/mca.crt" "$T/sn.key" "$T/sn.crt" "/CN=device-9/serialNumber=SN0042" 1 ||
  { echo "FAIL: cannot make the serialNumber device"; exit 1; }

# forge NAME ITEM...: $T/NAME.csr from csr-forge
forge() {
  local n=$1; shift
  "$FORGE" "$T/$n.csr" "$@" || fail "csr-forge could not write $n"
}
# forged_refused CODE RULE DESCRIPTION NAME ITEM...: forge NAME from the
# items, send it to sen, and expect a refusal by RULE
forged_refused() {
  local code=$1 rule=$2 what=$3 n=$4; shift 4
  forge "$n" "$@"
  enroll sen "$T/$n.csr"
  refused "$code" "$rule" "$what"
}
# enroll OP CSR [coap args]: POST the CSR to /est/OP asking for a DER certificate
enroll() {
  local op=$1 csr=$2; shift 2
  coap "$@" -m post -t 286 -A 287 -f "$csr" "/est/$op"
}
# refused CODE RULE DESCRIPTION: the last answer is CODE with "policy RULE: ..."
refused() {
  expect_code "$1" "$3"
  case $(diag) in
    "policy $2:"*) pass "$3: diagnostic names $2" ;;
    *) fail "$3: diagnostic '$(diag)' does not name $2" ;;
  esac
}

estc_server_start --client-ca "$T/mca.crt" --validity 600 || exit 1

# --- sren compares Subject and SAN exactly (RFC 7030 4.2.2) ----------------------
new_csr dev1 "/CN=dev1/O=estc test" -addext subjectAltName=DNS:dev1.example
enroll sen "$T/dev1.csr"
expect_code 2.04 "sen CN=dev1"
openssl x509 -inform DER -in "$T/out" -out "$T/dev1.crt" 2>/dev/null
before=$(index_lines)
new_csr up "/CN=DEV1/O=estc test" -addext subjectAltName=DNS:dev1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/up.csr"
expect_code 4.03 "sren as CN=DEV1 with a CN=dev1 certificate"
new_csr upo "/CN=dev1/O=ESTC test" -addext subjectAltName=DNS:dev1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/upo.csr"
expect_code 4.03 "sren as O=ESTC test with an O=estc test certificate"
new_csr sp "/CN=dev1/O=estc  test" -addext subjectAltName=DNS:dev1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/sp.csr"
expect_code 4.03 "sren with doubled white space in O"
forge pr subjhex:CN:printable:64657631 subj:O="estc test" dns:dev1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/pr.csr"
expect_code 4.03 "sren with the same CN text as a PrintableString"
new_csr sanup "/CN=dev1/O=estc test" -addext subjectAltName=DNS:DEV1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/sanup.csr"
expect_code 4.03 "sren with the SAN in upper case"
check "refused renewals issued nothing" test "$(index_lines)" -eq "$before"
check "refused renewal is logged" grep -q "refused sren" "$ESTC_SERVER_LOG"
new_csr same "/CN=dev1/O=estc test" -addext subjectAltName=DNS:dev1.example
CERT=$T/dev1.crt KEY=$T/dev1.key enroll sren "$T/same.csr"
expect_code 2.04 "sren with the identical Subject and SAN"
check "renewed certificate keeps the subject bytes" cmp -s \
  <(openssl x509 -in "$T/dev1.crt" -noout -subject -nameopt RFC2253) \
  <(openssl x509 -inform DER -in "$T/out" -noout -subject -nameopt RFC2253)

# --- no control characters, valid strings ---------------------------------------
before=$(index_lines)
forged_refused 4.00 control-chars "CN with an embedded NUL" nul subjhex:CN:utf8:6465760031
forged_refused 4.00 control-chars "CN with a newline" nl subjhex:CN:utf8:6465760a31
forged_refused 4.00 control-chars "CN with DEL" del subjhex:CN:utf8:6465767f31
forged_refused 4.00 control-chars "CN with U+0085 (a C1 control)" c1 subjhex:CN:utf8:646576c28531
forged_refused 4.00 control-chars "O with a tab" tab subj:CN=dev subjhex:O:utf8:6573746309
forged_refused 4.00 control-chars "PrintableString CN with a carriage return" pnl subjhex:CN:printable:6465760d31
forged_refused 4.00 control-chars "BMPString CN with a NUL character" bmp subjhex:CN:bmp:006400650076000000310032
# (OpenSSL itself refuses to parse a Subject that is not valid UTF-8; an
# otherName string such as SmtpUTF8Mailbox is not checked by the parser.)
forged_refused 4.00 string-encoding "SmtpUTF8Mailbox that is not valid UTF-8" badutf subj:CN=dev otherhex:1.3.6.1.5.5.7.8.9:utf8:6465c328406578616d706c65
forged_refused 4.00 string-encoding "SmtpUTF8Mailbox with an overlong UTF-8 '/'" overlong subj:CN=dev otherhex:1.3.6.1.5.5.7.8.9:utf8:64c0af406578616d706c65
forged_refused 4.00 control-chars "SmtpUTF8Mailbox with a newline" othernl subj:CN=dev otherhex:1.3.6.1.5.5.7.8.9:utf8:640a406578616d706c65
forged_refused 4.00 control-chars "DNS name with an embedded NUL" dnsnul subj:CN=dev dnshex:646576002e6578616d706c65
forged_refused 4.00 control-chars "URI with a newline" urinl subj:CN=dev "uri:coaps://dev.example/$(printf 'x\ny')"
forged_refused 4.00 san-syntax "wildcard DNS name" wild subj:CN=dev 'dns:*.example'
forged_refused 4.00 san-syntax "two subjectAltName extensions" dup subj:CN=dev dns:a.example newsan dns:b.example
forge skgnl subjhex:CN:utf8:6465760a31
coap -m post -t 286 -f "$T/skgnl.csr" /est/skg
refused 4.00 control-chars "skg with a newline in the CN"
check "refused CSRs issued nothing" test "$(index_lines)" -eq "$before"
check "refusals are logged with their rule" grep -q "refused sen from .*policy control-chars" \
  "$ESTC_SERVER_LOG"
forge utf subj:CN="Gerät-ß-✓"
enroll sen "$T/utf.csr"
expect_code 2.04 "CN with valid non-ASCII UTF-8"
check "non-ASCII CN issued as asked" grep -q 'CN=Gerät-ß-✓' \
  <(openssl x509 -inform DER -in "$T/out" -noout -subject -nameopt RFC2253,-esc_msb,utf8)

# --- SAN count and CSR size -------------------------------------------------------
forge s16 subj:CN=dev dnsmany:16
enroll sen "$T/s16.csr"
expect_code 2.04 "16 SANs (the default limit)"
forged_refused 4.03 max-sans "17 SANs" s17 subj:CN=dev dnsmany:17
forge s2000 subj:CN=dev dnsmany:2000
enroll sen "$T/s2000.csr"
refused 4.13 max-csr-size "2000 SANs ($(stat -c %s "$T/s2000.csr") bytes)"
check "4.13 gives the limit in Size1" grep -qE 'Size1:8192' "$TRACE"

# --- the server's own names ---------------------------------------------------------
for san in DNS:localhost DNS:LocalHost. IP:127.0.0.1 IP:::1; do
  new_csr own "/CN=dev" -addext "subjectAltName=DNS:dev.example,$san"
  enroll sen "$T/own.csr"
  refused 4.03 server-names "SAN $san (the server's own)"
done
forged_refused 4.03 server-names "SAN IP ::ffff:127.0.0.1 (IPv4-mapped server address)" mapped subj:CN=dev ip:::ffff:127.0.0.1
for cn in localhost 127.0.0.1; do
  new_csr owncn "/CN=$cn"
  enroll sen "$T/owncn.csr"
  refused 4.03 server-names "CN=$cn (the server's own)"
done
new_csr other "/CN=dev" -addext "subjectAltName=DNS:dev.example,IP:192.0.2.7,IP:2001:db8::7"
enroll sen "$T/other.csr"
expect_code 2.04 "SANs that are not the server's"
check "every refused CSR issued nothing" test "$(index_lines)" -eq "$((before + 3))"
stop_server "default policy server"
estc_server_stop

# --- the options ----------------------------------------------------------------------
estc_server_start --client-ca "$T/mca.crt" --validity 600 --max-csr-size 65536 --max-sans 4 \
  --allowed-san-types dns,ip --cn-must-match client-cn --allow-server-names || exit 1
enroll sen "$T/s2000.csr"
refused 4.03 max-sans "2000 SANs under --max-csr-size 65536 --max-sans 4"
forge s4 subj:CN=device-1 dnsmany:4
enroll sen "$T/s4.csr"
expect_code 2.04 "--max-sans 4: 4 SANs"
forged_refused 4.03 max-sans "--max-sans 4: 5 SANs" s5 subj:CN=device-1 dnsmany:5
new_csr types "/CN=device-1" -addext "subjectAltName=DNS:d.example,IP:192.0.2.9"
enroll sen "$T/types.csr"
expect_code 2.04 "--allowed-san-types dns,ip: DNS and IP"
printf '[req]\ndistinguished_name=r\n[r]\n[dn]\nCN=x\n' >"$T/req.cnf"
for san in URI:coaps://d.example email:d@example.com RID:1.2.3.4 dirName:dn; do
  new_csr types "/CN=device-1" -config "$T/req.cnf" -addext "subjectAltName=$san"
  enroll sen "$T/types.csr"
  refused 4.03 allowed-san-types "--allowed-san-types dns,ip: ${san%%:*}"
done
new_csr ok "/CN=device-1"
enroll sen "$T/ok.csr"
expect_code 2.04 "--cn-must-match client-cn: CN=device-1 from device-1"
new_csr cn2 "/CN=device-2"
enroll sen "$T/cn2.csr"
refused 4.03 cn-must-match "--cn-must-match client-cn: CN=device-2 from device-1"
new_csr cnup "/CN=DEVICE-1"
enroll sen "$T/cnup.csr"
refused 4.03 cn-must-match "--cn-must-match client-cn: CN=DEVICE-1 from device-1"
new_csr nocn "/O=device-1"
enroll sen "$T/nocn.csr"
refused 4.03 cn-must-match "--cn-must-match client-cn: no CN"
forged_refused 4.03 cn-must-match "--cn-must-match client-cn: two CNs" twocn subj:CN=device-1 subj:CN=device-2
new_csr ownok "/CN=device-1" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
enroll sen "$T/ownok.csr"
expect_code 2.04 "--allow-server-names: the server's own names"
stop_server "options server"
estc_server_stop

estc_server_start --client-ca "$T/mca.crt" --validity 600 --cn-must-match client-serial \
  --max-csr-size 300 || exit 1
new_csr ser "/CN=SN0042"
CERT=$T/sn.crt KEY=$T/sn.key enroll sen "$T/ser.csr"
expect_code 2.04 "--cn-must-match client-serial: CN=SN0042 from serialNumber=SN0042"
new_csr sercn "/CN=device-9"
CERT=$T/sn.crt KEY=$T/sn.key enroll sen "$T/sercn.csr"
refused 4.03 cn-must-match "--cn-must-match client-serial: CN=device-9 (its CN, not its serial)"
new_csr noser "/CN=device-1"
enroll sen "$T/noser.csr"
refused 4.03 cn-must-match "--cn-must-match client-serial: a client certificate without serialNumber"
forge big subj:CN=SN0042 dnsmany:10
CERT=$T/sn.crt KEY=$T/sn.key enroll sen "$T/big.csr"
refused 4.13 max-csr-size "--max-csr-size 300: a $(stat -c %s "$T/big.csr")-byte CSR"
check "4.13 gives --max-csr-size in Size1" grep -qE 'Size1:300' "$TRACE"
stop_server "client-serial server"

# --- bad option values --------------------------------------------------------------
bin=${ESTC_SERVER_BIN:-${ESTC_BUILD_ROOT:-}/tools/estc-server/estc-server}
for bad in "--max-sans -1" "--max-sans x" "--max-csr-size 10" "--cn-must-match CN" \
  "--allowed-san-types dns,foo" "--allowed-san-types dns,"; do
  # On loopback, should a wrong value be taken (the default is every address).
  # shellcheck disable=SC2086 # the option and its value
  check "refuses $bad" bash -c "'$bin' $bad --listen 127.0.0.1:$ESTC_SERVER_PORT --state-dir '$T/none' \
    --max-runtime 1 >/dev/null 2>&1; test \$? -eq 2"
done

check "no sanitizer or leak report" bash -c "! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' '$ESTC_SERVER_LOG'"
finish
