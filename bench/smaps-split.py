#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Where a process's resident pages come from, from a copy of its
/proc/PID/smaps (estc-bench-* write one with ESTC_BENCH_SMAPS=FILE).

    bench/smaps-split.py SMAPS [SMAPS ...]

Prints, in KiB, per file: the resident pages shared with other processes
(Shared_Clean + Shared_Dirty), the private clean pages (file pages only this
process has mapped), the private dirty pages (relocated data, .data/.bss
written), then the anonymous memory: [heap], [stack] and other anonymous
mappings (malloc's mmap arenas, thread stacks). With several files, the
columns are side by side; the last lines are the totals.
"""
import os
import re
import sys


def parse(path):
    rows = {}
    name = None
    head = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
    for line in open(path):
        m = head.match(line)
        if m:
            name = m.group(1).strip() or "[anon]"
            if name.startswith("/"):
                name = os.path.basename(name)
                # libfoo.so.1.2.3 -> libfoo.so
                name = re.sub(r"\.so(\.[0-9.]+)?$", ".so", name)
            rows.setdefault(name, {"shared": 0, "pclean": 0, "pdirty": 0, "rss": 0})
            continue
        k, _, v = line.partition(":")
        if name is None or not v.strip().endswith("kB"):
            continue
        kb = int(v.split()[0])
        r = rows[name]
        if k in ("Shared_Clean", "Shared_Dirty"):
            r["shared"] += kb
        elif k == "Private_Clean":
            r["pclean"] += kb
        elif k == "Private_Dirty":
            r["pdirty"] += kb
        elif k == "Rss":
            r["rss"] += kb
    return rows


def main():
    files = sys.argv[1:]
    if not files:
        print(__doc__, file=sys.stderr)
        return 2
    data = [parse(f) for f in files]
    names = sorted({n for d in data for n in d},
                   key=lambda n: -max(d.get(n, {"rss": 0})["rss"] for d in data))
    anon = ("[heap]", "[stack]", "[anon]")
    cols = "rss shared pclean pdirty"
    print(f"{'mapping':<28}" + "".join(f" | {cols:>26}" for _ in files))
    tot = [{"files": [0, 0, 0, 0], "anon": [0, 0, 0, 0]} for _ in files]
    for n in names:
        cells = []
        for i, d in enumerate(data):
            r = d.get(n)
            if r is None or r["rss"] == 0:
                cells.append(f" | {'-':>26}")
                continue
            v = [r["rss"], r["shared"], r["pclean"], r["pdirty"]]
            t = tot[i]["anon" if n in anon or n.startswith("[") else "files"]
            for j in range(4):
                t[j] += v[j]
            cells.append(" | " + " ".join(f"{x:>6}" for x in v))
        if all(c.strip() == "| -" for c in cells):
            continue
        print(f"{n[:28]:<28}" + "".join(cells))
    for what in ("files", "anon"):
        print(f"{'total ' + what:<28}" + "".join(" | " + " ".join(f"{x:>6}" for x in t[what]) for t in tot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
