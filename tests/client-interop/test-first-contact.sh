#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A new user's first contact with the estc programs, against a real
# estc-server on loopback: discovery without credentials prints the links;
# unreadable files are named with the system's reason; a key that does not
# belong to its certificate is caught before any network traffic (exit 1);
# a missing required option names what it takes (exit 2); every program
# answers --version; the bash completion offers what --help lists.
. "$(dirname "$0")/lib.sh"

make_pki || { echo "FAIL: cannot make the test PKI"; exit 1; }
# A second device of the same CA: a key that is valid, just not dev.crt's.
pki_issue "$T/mca.key" "$T/mca.crt" "$T/dev2.key" "$T/dev2.crt" "/CN=idevid-2" 1 ||
  { echo "FAIL: cannot make the second device"; exit 1; }
start_server
mkdir -m 700 "$T/f"
issued() { wc -l <"$ESTC_SERVER_STATE/state/index.txt" 2>/dev/null || echo 0; }
empty_dir() { [ -z "$(ls -A "$T/f")" ]; }
ENROLL=(--subject /CN=device-x --new-key "file:$T/f/key.pem" --new-cert "file:$T/f/cert.pem")

# ---- --version on every program, in one format --------------------------
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$SRC/meson.build" | head -1)
[ -n "$version" ] || version=$("$ESTC" --version | awk '{print $2}')
for prog in "$ESTC" "$ESTC_BUILD_ROOT/tools/estc-server/estc-server" \
  "$ESTC_BUILD_ROOT/tools/estc-engine-test/estc-engine-test"; do
  name=$(basename "$prog")
  if [ ! -x "$prog" ]; then
    echo "skip - $name is not built"
    continue
  fi
  run_cmd "$prog" --version
  check "$name --version: exit 0, '$name $version'" \
    bash -c "[ $RC -eq 0 ] && [ \"\$(cat '$T/stdout')\" = '$name $version' ] && [ ! -s '$T/stderr' ]"
  run_cmd "$prog" --help
  check "$name --help lists --version" grep -q -- "--version" "$T/stdout"
done

# ---- discovery without client credentials --------------------------------
run_estc discover "${NET[@]}"
expect_ok "discover without --cert/--key"
check "discover: stdout has the /crts link" grep -qE '^<[^>]*/crts>;rt="ace\.est\.crts"$' "$T/stdout"
check "discover: stdout has the /sen link" grep -qE '^<[^>]*/sen>;rt="ace\.est\.sen"$' "$T/stdout"
check "discover: no mem: object was needed" bash -c "! grep -q 'mem:' '$T/stderr'"
run_estc discover "${NET[@]}" -q
check "discover -q: the links, nothing on stderr" \
  bash -c "[ $RC -eq 0 ] && grep -q 'ace.est.sen' '$T/stdout' && [ ! -s '$T/stderr' ]"
# With credentials the same links.
run_estc discover "${NET[@]}" "${BOOT[@]}"
check "discover with --cert/--key: the links" bash -c "[ $RC -eq 0 ] && grep -q 'ace.est.sen' '$T/stdout'"

# A server that takes no anonymous client (libcoap's coap-server-openssl
# with -C: it asks for a certificate and fails the handshake without one):
# one line that says so, exit 4 (a refusal), and no retries of the handshake.
. "$SRC/tests/fixtures/processes.sh"
pki_issue "$T/mca.key" "$T/mca.crt" "$T/cs.key" "$T/cs.crt" "/CN=coap-server" 1 \
  "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth" || fail "a certificate for coap-server-openssl"
cs_port=$(estc__server_free_port 127.0.0.1)
cs_port=$((cs_port & ~1))
timeout 60 coap-server-openssl -A 127.0.0.1 -p "$cs_port" -c "$T/cs.crt" -j "$T/cs.key" \
  -C "$T/mca.crt" -v 4 >"$T/cs.log" 2>&1 &
cs_pid=$!
CLEANUPS+=("stop_pids $cs_pid")
for _ in $(seq 50); do
  ss -Hluan | awk '{print $4}' | grep -Eq "[:.]$((cs_port + 1))\$" && break
  sleep 0.1
done
run_estc discover --server "coaps://127.0.0.1:$((cs_port + 1))" --trust "$T/mca.crt" --timeout 10000
expect_fail "discover without --cert, the server wants one" 4 \
  "the server requires a client certificate and none was given$"
check "refused anonymous client: one handshake, not retried" \
  test "$(grep -c 'peer did not return a certificate' "$T/cs.log")" -eq 1
stop_pids "$cs_pid"

# ---- unreadable files: the option, the path and the system's reason ------
run_estc enroll "${NET[@]}" --cert "$T/dev.crt" --key "$T/no-such.key" "${ENROLL[@]}"
expect_fail "missing --key file" 1 "^estc: enroll: --key $T/no-such.key: No such file or directory$"
run_estc enroll "${NET[@]}" --cert "$T/no-such.crt" --key "$T/dev.key" "${ENROLL[@]}"
expect_fail "missing --cert file" 1 "^estc: enroll: --cert $T/no-such.crt: No such file or directory$"
run_estc discover --server "$ESTC_SERVER_URI" --trust "$T/no-such-ca.pem"
expect_fail "missing --trust file" 1 "^estc: discover: --trust $T/no-such-ca.pem: No such file or directory$"
run_estc cacerts --server "$ESTC_SERVER_URI" --implicit-trust "$T/f"
expect_fail "a folder as --implicit-trust" 1 "^estc: cacerts: --implicit-trust $T/f: Is a directory$"
run_estc discover "${NET[@]}" --cert "$T/dev.crt" --key "$T/dev.crt/x"
expect_fail "a path through a file as --key" 1 "--key $T/dev.crt/x: Not a directory$"
run_estc discover "${NET[@]}" --cert "file:$T/no-such.crt" --key "$T/dev.key"
expect_fail "missing file: certificate" 1 "^estc: discover: --cert file:$T/no-such.crt: not found"
check "unreadable files: nothing created" empty_dir

# ---- a key that is not the certificate's: local, exit 1 -----------------
before=$(issued)
run_estc enroll "${NET[@]}" --cert "$T/dev.crt" --key "$T/dev2.key" "${ENROLL[@]}"
expect_fail "enroll: key of another certificate" 1 \
  "the key at --key $T/dev2.key does not belong to the certificate at --cert $T/dev.crt"
check "mismatch: nothing created" empty_dir
check "mismatch: nothing issued" test "$(issued)" = "$before"
run_estc discover "${NET[@]}" --cert "$T/dev.crt" --key "$T/other.key"
expect_fail "discover: key of another CA" 1 "does not belong to the certificate"
# Before any network traffic: the same with nothing listening at the port
# (a network attempt would end in exit 3).
dead=$(estc__server_free_port 127.0.0.1)
run_estc enroll --server "coaps://127.0.0.1:$dead" --trust "$ESTC_SERVER_CA" --timeout 2000 \
  --cert "$T/dev.crt" --key "$T/dev2.key" "${ENROLL[@]}"
expect_fail "mismatch, no server: still exit 1" 1 "does not belong to the certificate"
# reenroll: the enrolled certificate with a key that is not its own.
run_estc enroll "${NET[@]}" "${BOOT[@]}" "${ENROLL[@]}" -q
check "enroll (for reenroll)" test "$RC" -eq 0
cp "$T/f/cert.pem" "$T/cert.before"
before=$(issued)
run_estc reenroll "${NET[@]}" --cert "file:$T/f/cert.pem" --key "file:$T/dev2.key"
expect_fail "reenroll: key of another certificate" 1 "does not belong to the certificate"
check "reenroll mismatch: nothing issued" test "$(issued)" = "$before"
check "reenroll mismatch: certificate unchanged" cmp -s "$T/f/cert.pem" "$T/cert.before"
rm -f "$T/f/"*

# ---- missing required options: exit 2, what each takes -------------------
run_estc enroll
expect_fail "enroll without options" 2 \
  "--server is required: coaps://HOST.*--trust or --implicit-trust is required.*PEM file or an engine address.*--subject is required: /CN="
run_estc discover --trust "$ESTC_SERVER_CA"
expect_fail "discover without --server" 2 "^estc: discover: --server is required: coaps://HOST\[:PORT\]\[/ROOT\] \(see estc discover --help\)$"
run_estc enroll "${NET[@]}" "${BOOT[@]}" --new-key "file:$T/f/key.pem" --new-cert "file:$T/f/cert.pem"
expect_fail "enroll without --subject" 2 "--subject is required: /CN=NAME"
run_estc serverkeygen "${NET[@]}" "${BOOT[@]}"
expect_fail "serverkeygen without --subject" 2 "--subject is required"
run_estc enroll "${NET[@]}" --key-type p521
expect_fail "bad --key-type names the valid ones" 2 "--key-type: .*p256.*p384.*rsa2048.*rsa3072"
run_estc enroll "${NET[@]}" --accept 999
expect_fail "bad --accept names the valid ones" 2 "--accept: .*281.*287.*none"
check "usage errors: nothing created" empty_dir

# ---- bash completion -----------------------------------------------------
COMPLETION=$SRC/tools/estc/completion/estc.bash
if [ ! -f "$COMPLETION" ]; then
  fail "bash completion file exists"
else
  # The option lists that --help prints (Options: section), independently.
  help_opts() { "$ESTC" "$1" --help | awk '/^Options:/{on=1;next} on&&/^$/{on=0} on' |
    grep -oE -- '--[a-z][a-z0-9-]*' | awk '!seen[$0]++' | sort; }
  help_subs() { "$ESTC" --help | awk '/^Subcommands:/{on=1;next} on&&/^$/{on=0} on{print $1}' | sort; }
  complete_words() { # WORDS...: what completing the last word offers, sorted
    bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _estc
      printf "%s\n" "${COMPREPLY[@]}"' _ "$COMPLETION" "$@" | sort; }
  subs=$(help_subs)
  check "completion: the subcommands of --help ($(tr '\n' ' ' <<<"$subs"))" \
    test "$(complete_words "$ESTC" "")" = "$(printf '%s\nhelp\n' "$subs" | sort)"
  check "completion: 'enr' -> enroll" test "$(complete_words "$ESTC" enr)" = enroll
  for sub in $subs; do
    check "completion: $sub's options are those of its --help" \
      test "$(complete_words "$ESTC" "$sub" --)" = "$(help_opts "$sub")"
  done
  check "completion: discover offers no --rekey" test -z "$(complete_words "$ESTC" discover --rek)"
  # The fixed values it offers are those the option's help line lists.
  for pair in key-type:enroll accept:enroll block-size:enroll cacerts-policy:run; do
    opt=${pair%%:*}
    line=$("$ESTC" "${pair#*:}" --help | grep -E -- "--$opt ")
    vals=$(complete_words "$ESTC" "${pair#*:}" "--$opt" "")
    ok=1
    for v in $vals; do
      case $opt in
      block-size) [ $((v & (v - 1))) -eq 0 ] && [ "$v" -ge 16 ] && [ "$v" -le 1024 ] || ok=0 ;;
      *) grep -qw -- "$v" <<<"$line" || ok=0 ;;
      esac
    done
    check "completion: --$opt values ($(tr '\n' ' ' <<<"$vals")) match its help" test "$ok" = 1 -a -n "$vals"
  done
  mkdir "$T/comp" && touch "$T/comp/ca-1.pem" "$T/comp/ca-2.pem" "$T/comp/key.pem"
  check "completion: --trust completes file names" \
    test "$(cd "$T/comp" && complete_words "$ESTC" enroll --trust ca | tr '\n' ' ')" = "ca-1.pem ca-2.pem "
  installed=$ESTC_BUILD_ROOT/meson-info/intro-installed.json
  check "completion: installed as share/bash-completion/completions/estc" \
    grep -q 'share/bash-completion/completions/estc"' "$installed"
  check "completion: in the Debian package" grep -qx 'usr/share/bash-completion/completions/estc' \
    "$SRC/debian/estc.install"
fi

finish
