#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs a PSA engine test program in a fresh private (0700) folder, since
# mbed TLS keeps its key and ITS files in the current folder, and checks
# that the folder holds nothing afterwards: every key and ITS entry the
# test created is gone.
#
# usage: run-psa.sh PROGRAM [ARG...]
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 PROGRAM [ARG...]" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/estc-psa.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
cd "$work"

# A file that is not ours stays untouched.
echo "not a PSA file" > sentinel.txt
before=$(ls -A)

status=0
"$@" || status=$?

after=$(ls -A)
if [ "$before" != "$after" ]; then
    echo "FAIL: files left in the PSA folder:" >&2
    ls -la >&2
    exit 1
fi
if [ "$(cat sentinel.txt)" != "not a PSA file" ]; then
    echo "FAIL: a foreign file changed" >&2
    exit 1
fi
exit "$status"
