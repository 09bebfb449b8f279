#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what is needed, configures, builds and runs the whole test suite:
# a normal build, then an AddressSanitizer + UndefinedBehaviorSanitizer build,
# then the library's unit and software-engine suites under valgrind.
# Exits non-zero on any failure. Build folders: build/, build-asan/, build-vg/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

passed=0
failed=0
skipped=0
# Sanitizer findings must fail the run, not scroll by.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

# run_suite NAME BUILDDIR [meson setup args...] -- [meson test args...]
run_suite() {
  local name=$1 dir=$2; shift 2
  local setup=() testargs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do setup+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  testargs=("$@")
  echo "=== $name ==="
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "${setup[@]}" >/dev/null
  else
    meson setup "$dir" "${setup[@]}" >/dev/null
  fi
  ninja -C "$dir"
  local rc=0
  meson test -C "$dir" --print-errorlogs --num-processes 2 "${testargs[@]}" || rc=$?
  # Count from meson's own record of this run.
  local counts
  counts=$(python3 - "$(ls -t "$dir"/meson-logs/testlog*.json | head -1)" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("result") in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r.get("result") == "SKIP":
        skip += 1
    else:
        bad += 1
print(ok, bad, skip)
PY
)
  local ok bad skip
  read -r ok bad skip <<<"$counts"
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
  [ "$rc" -eq 0 ] || echo "$name: meson test failed (rc=$rc)"
}

run_suite "build" build -Dbuildtype=debugoptimized
run_suite "asan+ubsan" build-asan -Dbuildtype=debug -Db_sanitize=address,undefined \
  -Db_lundef=false -- --suite unit --suite conformance --suite software --suite server \
  --suite provider --suite client --suite psa --suite tpm2 \
  --suite client-hostile --suite persist
# libFuzzer harnesses of every parser of server data: a short smoke run each.
CC=clang run_suite "fuzz" build-fuzz -Dbuildtype=debug -Dfuzz=true -Dpkcs11=disabled \
  -Dtpm2=disabled -Dpsa=disabled -Dserver=disabled -- --suite fuzz
# Check's per-test time-outs assume native speed. The suppressions are the
# dynamic loader's (mapping an engine plug-in), not estc's.
export CK_TIMEOUT_MULTIPLIER=10
run_suite "valgrind" build-vg -Dbuildtype=debug -- --suite unit --suite conformance \
  --suite software \
  --wrapper "valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$PWD/tests/fixtures/valgrind-ld.supp"

# The Debian packages: built, checked with lintian, installed with apt,
# used, removed (needs root; skipped with a note otherwise).
echo "=== package ==="
if [ "$(id -u)" -eq 0 ]; then
  pkg_out=$(mktemp)
  rc=0
  bash tests/package/run.sh | tee "$pkg_out" || rc=$?
  read -r ok bad < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$pkg_out" | tail -1)
  rm -f "$pkg_out"
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${bad:-0}))
  if [ "$rc" -ne 0 ] && [ "${bad:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
else
  echo "package: not root, the Debian package stage is skipped"
  skipped=$((skipped + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
