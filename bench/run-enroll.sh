#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Cost of an EST-coaps enrollment, in one run against estc-server on loopback:
#  1. datagrams, bytes each way and round trips of a first enrollment
#     (handshake + /crts + /sen) and of a re-enrollment (handshake + /sren),
#     counted by tests/relay/udp-relay.py at 0 % loss, for the library and for
#     libcoap's coap-client-openssl doing the same exchanges, next to the
#     minimum the protocol allows;
#  2. the time of an enrollment through the library (estc-bench-enroll, one
#     process per enrollment) against coap-client-openssl doing GET /crts and
#     POST /sen with a CSR prepared beforehand (two processes), as a ratio;
#  3. with perf (linux-perf): CPU (task-clock) and wall (duration_time) of
#     `estc enroll` (explicit trust, file: key) against coap-client-openssl
#     POSTing a CSR prepared beforehand to /sen, and of `estc --version`
#     against `coap-client-openssl -h`: RUNS runs each, the two sides
#     interleaved, medians; with valgrind, the instructions of one run of
#     each (callgrind), which the machine's load does not change.
#
#   bench/run-enroll.sh [BUILD_DIR]          (default: build)
# Environment: ROUNDS (timed enrollments per side, default 10), RUNS (perf
# runs per side, default 20), CALLGRIND=0 to skip the instruction counts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
rounds=${ROUNDS:-10}
bench=$build/bench/enroll/estc-bench-enroll
estc=$build/tools/estc/estc
runs=${RUNS:-20}
export ESTC_BUILD_ROOT=$build ESTC_SOURCE_ROOT=$src
export ESTC_SERVER_BIN=${ESTC_SERVER_BIN:-$build/tools/estc-server/estc-server}
for p in "$bench" "$ESTC_SERVER_BIN"; do
  [ -x "$p" ] || { echo "build first (with the server): ninja -C $build ($p missing)" >&2; exit 1; }
done
command -v coap-client-openssl >/dev/null || { echo "coap-client-openssl is missing" >&2; exit 1; }

. "$src/tests/fixtures/estc-server.sh"
. "$src/tests/fixtures/pki.sh"
. "$src/tests/fixtures/relay.sh"
tmp=$(mktemp -d)
cleanup() {
  relay_stop
  estc_server_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

# Device (IDevID) credentials from a CA the server accepts with --client-ca.
pki_idevid "$tmp" "/CN=Bench IDevID CA" "/CN=bench-idevid"
# Prepared CSRs for coap-client (one per timed round, so the server's
# duplicate-request memory never answers from its cache).
for i in $(seq 0 "$rounds"); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/csr$i.key" \
    -outform DER -out "$tmp/csr$i.der" -subj "/CN=bench-device" \
    -addext "subjectAltName=DNS:bench-device.example" 2>>"$tmp/openssl.log" >/dev/null
done
chmod 600 "$tmp"/*.key

estc_server_start --client-ca "$tmp/idevid-ca.pem" >/dev/null
ca=$ESTC_SERVER_CA

start_relay() { # $1: stats file; sets relay_port
  relay_start "$tmp/relay.out" --server "127.0.0.1:$ESTC_SERVER_PORT" --loss 0 \
    --max-seconds 120 --stats "$1" ${RELAY_TRACE:+--trace} || exit 1
  relay_port=$RELAY_PORT
}
stop_relay() { relay_stop; }

cc() { # coap-client-openssl with the answer's code checked (it exits 0 on 4.xx)
  local out=$1
  shift
  coap-client-openssl -v 6 -o "$out" "$@" >"$tmp/cc.log" 2>&1 || true
  grep -q 'c:2\.0[45]' "$tmp/cc.log" && [ -s "$out" ] || {
    echo "coap-client-openssl $*: no 2.0x answer" >&2
    tail -5 "$tmp/cc.log" >&2
    exit 1
  }
}

# ---- 1. counts at the relay ----------------------------------------------------
mkdir "$tmp/lib"
start_relay "$tmp/lib-first.json"
"$bench" first "coaps://127.0.0.1:$relay_port" "$ca" "$tmp/device.pem" "$tmp/device.key" \
  "$tmp/lib" >/dev/null
stop_relay
start_relay "$tmp/lib-re.json"
"$bench" re "coaps://127.0.0.1:$relay_port" "$ca" "$tmp/device.pem" "$tmp/device.key" \
  "$tmp/lib" >/dev/null
stop_relay

start_relay "$tmp/cc-first.json"
cc "$tmp/crts.p7" -C "$ca" -c "$tmp/device.pem" -j "$tmp/device.key" -A 281 \
  "coaps://127.0.0.1:$relay_port/est/crts"
cc "$tmp/cert0.p7" -C "$ca" -c "$tmp/device.pem" -j "$tmp/device.key" -m post -t 286 -A 281 \
  -f "$tmp/csr0.der" "coaps://127.0.0.1:$relay_port/est/sen"
stop_relay
openssl pkcs7 -inform DER -in "$tmp/cert0.p7" -print_certs -out "$tmp/enrolled0.pem" 2>/dev/null
start_relay "$tmp/cc-re.json"
cc "$tmp/recert0.p7" -C "$ca" -c "$tmp/enrolled0.pem" -j "$tmp/csr0.key" -m post -t 286 -A 281 \
  -f "$tmp/csr0.der" "coaps://127.0.0.1:$relay_port/est/sren"
stop_relay
csr_len=$(stat -c %s "$tmp/csr0.der")
crts_len=$(stat -c %s "$tmp/crts.p7")
cert_len=$(stat -c %s "$tmp/cert0.p7")

# ---- 2. time, directly against the server ------------------------------------------
ns() { date +%s%N; }
lib_ns=0
cc_ns=0
inlib_ms=0
for i in $(seq 1 "$rounds"); do
  mkdir "$tmp/lib$i"
  t0=$(ns)
  out=$("$bench" first "$ESTC_SERVER_URI" "$ca" "$tmp/device.pem" "$tmp/device.key" "$tmp/lib$i")
  t1=$(ns)
  cc "$tmp/t-crts.p7" -C "$ca" -c "$tmp/device.pem" -j "$tmp/device.key" -A 281 \
    "$ESTC_SERVER_URI/est/crts"
  cc "$tmp/t-cert.p7" -C "$ca" -c "$tmp/device.pem" -j "$tmp/device.key" -m post -t 286 -A 281 \
    -f "$tmp/csr$i.der" "$ESTC_SERVER_URI/est/sen"
  t2=$(ns)
  lib_ns=$((lib_ns + t1 - t0))
  cc_ns=$((cc_ns + t2 - t1))
  inlib_ms=$(python3 -c "print($inlib_ms + ${out#first })")
done

python3 - "$tmp" "$rounds" "$lib_ns" "$cc_ns" "$inlib_ms" "$csr_len" "$crts_len" "$cert_len" <<'PY'
import json, sys
tmp, rounds, lib_ns, cc_ns, inlib_ms, csr, crts, cert = sys.argv[1:]
rounds = int(rounds)
def load(name):
    with open(f"{tmp}/{name}.json") as f:
        return json.load(f)
rows = [("first enrollment", "estc library", load("lib-first")),
        ("first enrollment", "coap-client x2", load("cc-first")),
        ("re-enrollment", "estc library", load("lib-re")),
        ("re-enrollment", "coap-client", load("cc-re"))]
mins = {"first enrollment": (5, 10, int(csr), int(crts) + int(cert)),
        "re-enrollment": (4, 8, int(csr), int(cert))}
print("EST-coaps enrollment against estc-server on loopback (relay at 0 % loss)")
print()
hdr = f"{'phase':<17} {'client':<15} {'rtt':>4} {'dgrams up':>9} {'bytes up':>9} {'dgrams dn':>9} {'bytes dn':>9} {'sessions':>8}"
print(hdr)
print("-" * len(hdr))
for phase, who, s in rows:
    print(f"{phase:<17} {who:<15} {s['round_trips']:>4} {s['up']['datagrams']:>9} {s['up']['bytes']:>9} "
          f"{s['down']['datagrams']:>9} {s['down']['bytes']:>9} {s['sessions']:>8}")
for phase, (rt, dg, up, dn) in mins.items():
    print(f"{phase:<17} {'minimum':<15} {rt:>4} {dg // 2:>9} {'>' + str(up):>9} {dg // 2:>9} {'>' + str(dn):>9} {1:>8}")
print()
print("Minimum: one DTLS 1.2 full handshake with a cookie exchange is 3 round trips")
print("  (ClientHello / HelloVerifyRequest, ClientHello+cookie / ServerHello..Done,")
print("  Certificate..Finished / ChangeCipherSpec+Finished), one datagram per flight when")
print("  each flight fits the path MTU; then one round trip per EST request whose")
print("  request and answer fit one block (CON request, piggybacked answer):")
print("  first enrollment = handshake + GET /crts + POST /sen = 5 round trips, 10 datagrams;")
print("  re-enrollment = a new handshake (the client certificate changes to the enrolled")
print("  one, so the session cannot be kept) + POST /sren = 4 round trips, 8 datagrams.")
print(f"  Bytes: at least the payloads (CSR {csr} B up; /crts {crts} B and the issued")
print(f"  certificate {cert} B down, as PKCS#7) plus the handshake's certificates and the")
print("  CoAP/DTLS headers; coap-client's rows show what one libcoap session costs.")
print("Measured datagrams and bytes include the closing close_notify alert each way of")
print("every session (not counted as a round trip).")
print("The library checks the server against the /crts answer before trusting it by")
print("verifying the open session's server chain again in memory (no second handshake).")
print()
lib_ms = int(lib_ns) / 1e6 / rounds
cc_ms = int(cc_ns) / 1e6 / rounds
print(f"Time per first enrollment, mean of {rounds}, process start included on both sides:")
print(f"  estc library (estc-bench-enroll)         {lib_ms:8.1f} ms  (inside the library: {float(inlib_ms) / rounds:.1f} ms)")
print(f"  coap-client-openssl crts + sen (2 runs)  {cc_ms:8.1f} ms  (CSR prepared beforehand)")
print(f"  ratio estc / coap-client                 {lib_ms / cc_ms:8.2f}")
PY

# ---- 3. perf: estc enroll against coap-client POST /sen --------------------------
if ! perf stat -x, -e task-clock,duration_time -- true >/dev/null 2>&1; then
  echo
  echo "perf stat is not usable here (install linux-perf, check perf_event_paranoid): no CPU table"
  exit 0
fi
for i in $(seq 1 "$runs"); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/p$i.key" \
    -outform DER -out "$tmp/p$i.der" -subj "/CN=bench-device" \
    -addext "subjectAltName=DNS:bench-device.example" 2>>"$tmp/openssl.log" >/dev/null
done
mkdir "$tmp/perf"
# One command line per side and run, in the order they run: interleaved.
{
  for i in $(seq 1 "$runs"); do
    printf 'enroll\testc\t%s\n' "$estc enroll --server $ESTC_SERVER_URI/est --trust $ca \
--cert $tmp/device.pem --key $tmp/device.key --subject /CN=bench-device \
--san DNS:bench-device.example --new-key file:$tmp/perf/k$i.pem --new-cert file:$tmp/perf/c$i.pem"
    printf 'enroll\tcc\t%s\n' "coap-client-openssl -v 6 -o $tmp/perf/cc$i.p7 -C $ca \
-c $tmp/device.pem -j $tmp/device.key -m post -t 286 -A 281 -f $tmp/p$i.der $ESTC_SERVER_URI/est/sen"
    printf 'version\testc\t%s\n' "$estc --version"
    printf 'version\tcc\t%s\n' "coap-client-openssl -h"
  done
} >"$tmp/perf/plan"
cg=${CALLGRIND:-1}
command -v valgrind >/dev/null || cg=0
python3 - "$tmp/perf/plan" "$tmp/perf" "$runs" "$cg" <<'PY'
import shlex, statistics, subprocess, sys
plan, out, runs, cg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
res = {}
for n, line in enumerate(open(plan)):
    what, who, cmd = line.rstrip("\n").split("\t")
    stat = f"{out}/stat{n}"
    r = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock,duration_time", "-o", stat, "--"]
                       + shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cpu = wall = None
    for l in open(stat):
        f = l.strip().split(",")
        if len(f) > 2 and f[2] == "task-clock":
            cpu = float(f[0])
        elif len(f) > 2 and f[2] == "duration_time":
            wall = float(f[0]) / 1e6
    # coap-client -h exits with 1 after its help.
    if (r.returncode != 0 and (what, who) != ("version", "cc")) or cpu is None or wall is None:
        sys.exit(f"run failed: {cmd}\n{r.stderr.decode(errors='replace')[-500:]}")
    if what == "enroll" and who == "cc":
        # coap-client exits 0 on 4.xx too: the answer must be there.
        args = shlex.split(cmd)
        answer = args[args.index("-o") + 1]
        try:
            ok = open(answer, "rb").read(1) != b""
        except OSError:
            ok = False
        if not ok:
            sys.exit(f"coap-client got no answer: {cmd}")
    res.setdefault((what, who), []).append((cpu, wall))
ir = {}
if cg:
    # One more run of each under callgrind: instructions executed, user space.
    lines = open(plan).read().splitlines()[:4]
    for n, line in enumerate(lines):
        what, who, cmd = line.split("\t")
        cmd = cmd.replace("k1.pem", "kcg.pem").replace("c1.pem", "ccg.pem").replace("cc1.p7", "cccg.p7")
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg{n}"]
                           + shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for l in r.stderr.decode(errors="replace").splitlines():
            if "Collected :" in l:
                ir[(what, who)] = int(l.split(":")[-1].replace(",", "").strip())
names = {"enroll": ("estc enroll (file: key)", "coap-client POST /sen"),
         "version": ("estc --version", "coap-client -h")}
print()
print(f"perf stat, {runs} runs per side, the sides interleaved; medians (min-max)")
print(f"{'':<26} {'CPU ms':>22} {'wall ms':>24} {'instructions':>14}")
for what in ("enroll", "version"):
    for who, label in zip(("estc", "cc"), names[what]):
        v = res[(what, who)]
        c = [x[0] for x in v]
        w = [x[1] for x in v]
        i = ir.get((what, who))
        print(f"{label:<26} {statistics.median(c):8.2f} ({min(c):5.1f}-{max(c):5.1f})"
              f" {statistics.median(w):9.2f} ({min(w):5.1f}-{max(w):6.1f})"
              f" {('%14d' % i) if i else '%14s' % '-'}")
    e = res[(what, "estc")]
    k = res[(what, "cc")]
    rc = statistics.median([x[0] for x in e]) / statistics.median([x[0] for x in k])
    rw = statistics.median([x[1] for x in e]) / statistics.median([x[1] for x in k])
    ri = (ir[(what, "estc")] / ir[(what, "cc")]) if (what, "estc") in ir and (what, "cc") in ir else None
    print(f"{'  ratio estc / coap-client':<26} {rc:8.2f}{'':14} {rw:9.2f}{'':15}"
          f" {('%14.2f' % ri) if ri else '%14s' % '-'}")
print("estc enroll also makes the key pair, writes it and the certificate as PEM files and")
print("checks the answer; coap-client posts a CSR made beforehand and writes the raw answer.")
PY
