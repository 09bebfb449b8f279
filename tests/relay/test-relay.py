#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Self-test of udp-relay.py: a UDP echo server behind the relay at 20 %
loss each way; the client's own counts must match the relay's statistics,
the loss must be near 20 %, the same seed must drop the same datagrams, and
the relay must stop by itself."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp-relay.py")


def run(seed, tmp):
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    stats = os.path.join(tmp, "stats-%d.json" % seed)
    relay = subprocess.Popen(
        [sys.executable, RELAY, "--server", "127.0.0.1:%d" % echo.getsockname()[1],
         "--loss", "0.2", "--seed", str(seed), "--max-seconds", "4", "--stats", stats],
        stdout=subprocess.PIPE, text=True)
    try:
        line = relay.stdout.readline().split()
        assert line[0] == "listening", line
        port = int(line[1])
        stop = threading.Event()

        def echo_loop():
            echo.settimeout(0.1)
            while not stop.is_set():
                try:
                    data, peer = echo.recvfrom(2048)
                    echo.sendto(data, peer)
                except socket.timeout:
                    pass

        th = threading.Thread(target=echo_loop)
        th.start()
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = []
        for i in range(400):
            cli.sendto(b"%d" % i + b"x" * (i % 50), ("127.0.0.1", port))
            time.sleep(0.001)
        cli.settimeout(0.5)
        try:
            while True:
                got.append(cli.recv(2048))
        except socket.timeout:
            pass
        stop.set()
        th.join()
        # Stops by itself, and writes the statistics.
        t0 = time.monotonic()
        assert relay.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 10
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    with open(stats) as f:
        st = json.load(f)
    assert st["up"]["datagrams"] + st["up"]["dropped"] == 400, st
    assert st["down"]["datagrams"] == len(got), (st, len(got))
    assert st["down"]["datagrams"] + st["down"]["dropped"] == st["up"]["datagrams"], st
    for way in ("up", "down"):
        total = st[way]["datagrams"] + st[way]["dropped"]
        share = st[way]["dropped"] / total
        assert 0.12 < share < 0.28, (way, share)
    assert st["sessions"] == 1, st
    return st, got


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a, got_a = run(7, tmp)
        b, got_b = run(7, tmp)
        c, got_c = run(8, tmp)
    assert got_a == got_b, "the same seed must drop the same datagrams"
    assert got_a != got_c, "another seed should drop other datagrams"
    print("relay: seed 7 dropped %d up, %d down of 400" % (a["up"]["dropped"], a["down"]["dropped"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
