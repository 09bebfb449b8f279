#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""UDP relay between one DTLS client and a server that loses (or, with
DELAY_SECONDS, holds back) the server's first N application-data records
(DTLS content type 23): the client then retransmits its confirmable request,
as after a lost ACK. With DELAY_SECONDS the records are held back instead:
the first one DELAY_SECONDS, the next ones 0.8 s apart after it, so the client
receives an answer after it has retransmitted and then another one.

usage: lossy-relay.py LISTEN_PORT SERVER_PORT COUNT MAX_SECONDS [DELAY_SECONDS]
Prints "ready" when listening; exits by itself after MAX_SECONDS.
"""
import select
import socket
import sys
import time

listen_port, server_port, drop, max_s = (int(a) for a in sys.argv[1:5])
delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
held = []  # (release time, datagram)
first_release = None
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", listen_port))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.connect(("127.0.0.1", server_port))
client = None
dropped = 0
print("ready", flush=True)
end = time.monotonic() + max_s
while time.monotonic() < end:
    r, _, _ = select.select([front, back], [], [], 0.05)
    now = time.monotonic()
    while held and held[0][0] <= now and client is not None:
        front.sendto(held.pop(0)[1], client)
        print("released", flush=True)
    if front in r:
        data, client = front.recvfrom(65535)
        back.send(data)
    if back in r:
        data = back.recv(65535)
        if data[:1] == b"\x17" and dropped < drop:
            dropped += 1
            if delay > 0:
                # The first held record goes out DELAY after it came, the
                # next ones 0.8 s apart after it.
                if first_release is None:
                    first_release = time.monotonic() + delay
                held.append((first_release + 0.8 * (dropped - 1), data))
                print("held", len(data), flush=True)
            else:
                print("dropped", len(data), flush=True)
            continue
        if client is not None:
            front.sendto(data, client)
