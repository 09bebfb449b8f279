#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The exported ABI is the public API, nothing more and nothing less.

Compares the functions declared in include/estc/*.h with the symbols that
libestc.so exports, and checks that the provider module exports its OpenSSL
entry point alone.

Usage: check_abi.py SOURCE_ROOT LIBESTC_SO [PROVIDER_MODULE_SO]
Prints one line per check and 'N passed, N failed'; exits 1 on failure.
"""
import glob
import os
import re
import subprocess
import sys

src, lib = sys.argv[1], sys.argv[2]
module = sys.argv[3] if len(sys.argv) > 3 else None
passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok    " if ok else "FAIL  ") + what)
    if ok:
        passed += 1
    else:
        failed += 1


def declared():
    names = set()
    for header in sorted(glob.glob(os.path.join(src, "include", "estc", "*.h"))):
        text = open(header, encoding="utf-8").read()
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        text = re.sub(r"^\s*#[^\n]*(\\\n[^\n]*)*", " ", text, flags=re.M)
        names.update(re.findall(r"\b(estc_[a-z][a-z0-9_]*)\s*\((?!\s*\*)", text))
    return names


def exported(path):
    out = subprocess.run(["nm", "-D", "--defined-only", path], check=True,
                         capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TWDBR":
            syms.add(parts[2].split("@")[0])
    # The version node itself is listed as an absolute symbol.
    return {s for s in syms if not re.fullmatch(r"ESTC_\d+", s)}


api = declared()
syms = exported(lib)
check(len(api) > 100, "the public headers declare %d functions" % len(api))
internal = sorted(s for s in syms if s.startswith("estc__"))
check(not internal, "no internal estc__ symbol exported %s" % " ".join(internal[:20]))
extra = sorted(syms - api)
check(not extra, "every exported symbol is declared in include/estc/ %s" % " ".join(extra[:20]))
missing = sorted(api - syms)
check(not missing, "every declared function is exported %s" % " ".join(missing[:20]))
if module:
    msyms = exported(module)
    check(msyms == {"OSSL_provider_init"},
          "the provider module exports OSSL_provider_init alone (%s)" % " ".join(sorted(msyms)[:20]))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
