#!/usr/bin/env python3
"""UDP relay between one DTLS client and a server that loses the server's
first N application-data records (DTLS content type 23): the client then
retransmits its confirmable request, as after a lost ACK.

usage: lossy-relay.py LISTEN_PORT SERVER_PORT DROP_COUNT MAX_SECONDS
Prints "ready" when listening; exits by itself after MAX_SECONDS.
"""
import select
import socket
import sys
import time

listen_port, server_port, drop, max_s = (int(a) for a in sys.argv[1:5])
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", listen_port))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.connect(("127.0.0.1", server_port))
client = None
dropped = 0
print("ready", flush=True)
end = time.monotonic() + max_s
while time.monotonic() < end:
    r, _, _ = select.select([front, back], [], [], 0.2)
    if front in r:
        data, client = front.recvfrom(65535)
        back.send(data)
    if back in r:
        data = back.recv(65535)
        if data[:1] == b"\x17" and dropped < drop:
            dropped += 1
            print("dropped", len(data), flush=True)
            continue
        if client is not None:
            front.sendto(data, client)
