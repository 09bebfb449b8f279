#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks the layering rules of the source tree.

1. No scheme literal ("mem:", "file:", "pkcs11:", "tpm2:", "psa:") in core/,
   providers/ or tools/: they ask the framework for capabilities.
2. No include of an engine's private header outside engines/, by any path.
3. With the very compiler command each layer is built with (read from
   compile_commands.json), a file that includes an engine's private header
   does not compile, while one that includes the public API does (so the
   probe itself is known to work).

Usage: check_layers.py SOURCE_ROOT BUILD_ROOT
Prints one line per check and 'N passed, N failed'; exits 1 on any failure.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

src, build = sys.argv[1], sys.argv[2]
passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok    " if ok else "FAIL  ") + what)
    if ok:
        passed += 1
    else:
        failed += 1


def sources(layer):
    for root, _, files in os.walk(os.path.join(src, layer)):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                yield os.path.join(root, f)


# Engine-private headers, by the paths a file elsewhere might use.
engine_private = []
for path in sources("engines"):
    rel = os.path.relpath(path, os.path.join(src, "engines"))
    if path.endswith(".h"):
        engine_private.append(rel)
engine_private.append("engines_config.h")

# 1 and 2: what the files say.
scheme_re = re.compile(r'"(mem|file|pkcs11|tpm2|psa):"')
for layer in ("core", "providers", "tools"):
    bad_scheme, bad_include = [], []
    for path in sources(layer):
        text = open(path, encoding="utf-8").read()
        for n, line in enumerate(text.splitlines(), 1):
            where = "%s:%d" % (os.path.relpath(path, src), n)
            if scheme_re.search(line):
                bad_scheme.append(where)
            m = re.match(r'\s*#\s*include\s*"([^"]+)"', line)
            if m:
                inc = m.group(1)
                target = os.path.normpath(os.path.join(os.path.dirname(path), inc))
                if target.startswith(os.path.join(src, "engines") + os.sep) or \
                        inc.startswith("engines/") or inc == "engines_config.h":
                    bad_include.append(where + " " + inc)
    check(not bad_scheme, "%s: no scheme literal %s" % (layer, " ".join(bad_scheme)))
    check(not bad_include, "%s: no engine-private include %s" % (layer, " ".join(bad_include)))

# Every source file states its licence (SPDX), in its first lines.
unlabelled = []
for top in ("include", "engines", "providers", "core", "tools", "examples", "tests", "bench",
            "scripts"):
    for root, _, files in os.walk(os.path.join(src, top)):
        for f in sorted(files):
            if f.endswith((".c", ".h", ".sh", ".py")) or f == "meson.build":
                path = os.path.join(root, f)
                with open(path, encoding="utf-8") as fh:
                    head = fh.read(400)
                if "SPDX-License-Identifier: Apache-2.0" not in head:
                    unlabelled.append(os.path.relpath(path, src))
check(not unlabelled, "every source file has an SPDX licence line %s" % " ".join(unlabelled[:10]))

# 3: the compilers' view.
db = json.load(open(os.path.join(build, "compile_commands.json")))


def layer_command(layer_file):
    for e in db:
        if os.path.normpath(os.path.join(e["directory"], e["file"])) == layer_file:
            return e
    return None


def compiles(entry, body):
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write(body)
        out = os.path.join(tmp, "probe.o")
        cmd = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a in ("-o", "-MF", "-MQ", "-c"):
                skip = True
                continue
            if a.endswith(".c") and os.path.basename(a) == os.path.basename(entry["file"]):
                continue
            cmd.append(a)
        cmd += ["-c", probe, "-o", out]
        r = subprocess.run(cmd, cwd=entry["directory"], capture_output=True)
        return r.returncode == 0


for layer, sample in (("core", "core/client.c"), ("providers", "providers/store.c"),
                      ("tools", "tools/estc/main.c")):
    entry = layer_command(os.path.join(src, sample))
    if entry is None:
        check(False, "%s: no compile command for %s" % (layer, sample))
        continue
    check(compiles(entry, "#include <estc/engine.h>\nint probe_ok;\n"),
          "%s: the probe compiles with the public API" % layer)
    reached = [h for h in engine_private
               if not (layer == "providers" and h == "internal.h")
               and compiles(entry, '#include "%s"\nint probe;\n' % h)]
    check(not reached, "%s: engine-private headers unreachable %s" % (layer, " ".join(reached)))

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
