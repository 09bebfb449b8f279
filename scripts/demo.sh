#!/usr/bin/env bash
# The main job, end to end, on this machine: installs what is needed, builds,
# then makes a device key in an engine, signs with it, and checks every
# engine operation against the conformance suite. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ -d build ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
ninja -C build >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

echo "== engines built into this library"
build/tools/estc-engine-test/estc-engine-test --list

echo
echo "== the conformance suite against the file: engine in $work"
build/tools/estc-engine-test/estc-engine-test "file:$work/"

echo
echo "== a driver the application brings (examples/custom-driver)"
build/examples/custom-driver/custom-driver-app
