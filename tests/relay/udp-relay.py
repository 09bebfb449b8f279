#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A UDP relay on loopback between CoAP/DTLS clients and one server, which
drops a seeded share of the datagrams each way and counts what passes.

usage: udp-relay.py --server HOST:PORT [--listen HOST:PORT] [--loss 0.2]
                    [--seed N] [--max-seconds S] [--stats FILE]
                    [--drop-app-data N] [--drop-handshake N]

Each client address gets its own socket towards the server, as behind a NAT,
so every DTLS session of a client is relayed apart. Drops are decided by two
random generators seeded with --seed (client to server) and --seed + 1
(server to client), one draw per datagram. --drop-app-data N drops, on top,
the first N client datagrams that carry DTLS application data (record type
23: a CoAP message once the handshake is done), so that the client's first
request is lost N times whatever the seed: N CoAP retransmissions.
--drop-handshake N likewise drops the first N client datagrams that start
with a DTLS handshake record (type 22): N DTLS retransmissions.

Prints "listening PORT" on stdout once ready. Stops by itself after
--max-seconds (default 120), or on SIGTERM / SIGINT. The counts go to --stats
as JSON at exit and whenever the relay gets SIGUSR1:
  up / down: datagrams and bytes forwarded and dropped, client to server and
  back; round_trips: server flights that answer a client flight (a forwarded
  server datagram after a client datagram of the same session, not counting
  DTLS alerts such as the closing close_notify); sessions: client addresses
  seen.
"""
import argparse
import json
import os
import random
import select
import signal
import socket
import sys
import time


def addr(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", type=addr, required=True)
    ap.add_argument("--listen", type=addr, default=("127.0.0.1", 0))
    ap.add_argument("--loss", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--stats")
    ap.add_argument("--drop-app-data", type=int, default=0)
    ap.add_argument("--drop-handshake", type=int, default=0)
    ap.add_argument("--trace", action="store_true",
                    help="one line per datagram on stderr: direction, DTLS record types, length")
    args = ap.parse_args()
    if not 0 <= args.loss < 1:
        ap.error("--loss must be in [0, 1)")
    for host in (args.listen[0], args.server[0]):
        if host not in ("127.0.0.1", "::1", "localhost"):
            ap.error("loopback addresses only")

    fam = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    front = socket.socket(fam, socket.SOCK_DGRAM)
    front.bind(args.listen)
    rng_up = random.Random(args.seed)
    rng_down = random.Random(args.seed + 1)
    zero = {"datagrams": 0, "bytes": 0, "dropped": 0, "dropped_bytes": 0}
    stats = {"up": dict(zero), "down": dict(zero), "round_trips": 0, "sessions": 0,
             "loss": args.loss, "seed": args.seed}
    back = {}  # client address -> socket towards the server
    client_of = {}  # that socket -> client address
    last_dir = {}  # client address -> "up" / "down"
    state = {"stop": False, "dump": False}

    def write_stats():
        if args.stats:
            tmp = args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, args.stats)

    def on_term(signum, frame):
        state["stop"] = True

    def on_usr1(signum, frame):
        state["dump"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)

    app_drops = {"left": args.drop_app_data}
    hs_drops = {"left": args.drop_handshake}

    def count(way, data, rng):
        if args.trace:
            print(way, data[0] if data else "-", len(data), file=sys.stderr, flush=True)
        forced = way == "up" and app_drops["left"] > 0 and data[:1] == b"\x17"
        if forced:
            app_drops["left"] -= 1
        elif way == "up" and hs_drops["left"] > 0 and data[:1] == b"\x16":
            hs_drops["left"] -= 1
            forced = True
        if forced or (args.loss > 0 and rng.random() < args.loss):
            stats[way]["dropped"] += 1
            stats[way]["dropped_bytes"] += len(data)
            return False
        stats[way]["datagrams"] += 1
        stats[way]["bytes"] += len(data)
        return True

    write_stats()
    print("listening", front.getsockname()[1], flush=True)
    end = time.monotonic() + args.max_seconds
    while not state["stop"] and time.monotonic() < end:
        if state["dump"]:
            state["dump"] = False
            write_stats()
        try:
            ready, _, _ = select.select([front] + list(client_of), [], [], 0.1)
        except InterruptedError:
            continue
        for s in ready:
            if s is front:
                data, client = front.recvfrom(65535)
                if client not in back:
                    b = socket.socket(fam, socket.SOCK_DGRAM)
                    b.connect(args.server)
                    back[client] = b
                    client_of[b] = client
                    stats["sessions"] += 1
                if count("up", data, rng_up):
                    last_dir[client] = "up"
                    back[client].send(data)
            else:
                client = client_of[s]
                try:
                    data = s.recv(65535)
                except ConnectionRefusedError:
                    continue
                if count("down", data, rng_down):
                    # DTLS alerts (record type 21, e.g. close_notify) end a
                    # session; they are no request and answer.
                    if last_dir.get(client) == "up" and data[:1] != b"\x15":
                        stats["round_trips"] += 1
                    last_dir[client] = "down"
                    front.sendto(data, client)
    write_stats()
    for s in client_of:
        s.close()
    front.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
