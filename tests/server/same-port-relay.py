#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""UDP relay that sends the datagrams of every DTLS client to the server from
one socket: the server sees a client that comes after another at the address
and port of the one before, as a client restarted on a reused source port.
MODE says how the client before leaves its session on the server:
  alerts     the clients' alerts (DTLS content type 21, the close_notify) are
             dropped: a finished client's session stays open on the server
  handshake  the first client's datagrams other than ClientHellos are
             dropped: its handshake stops half way, the server's session
             waits for the rest
The server's datagrams go to the latest client.

usage: same-port-relay.py LISTEN_PORT SERVER_PORT MODE MAX_SECONDS
Prints "ready" when listening, "client N" for each new client and "dropped
TYPE" for each datagram dropped; exits by itself after MAX_SECONDS.
"""
import select
import socket
import sys
import time

listen_port, server_port = int(sys.argv[1]), int(sys.argv[2])
mode, max_s = sys.argv[3], float(sys.argv[4])
if mode not in ("alerts", "handshake"):
    sys.exit("unknown mode " + mode)
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", listen_port))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.connect(("127.0.0.1", server_port))
clients = []
print("ready", flush=True)
end = time.monotonic() + max_s
while time.monotonic() < end:
    r, _, _ = select.select([front, back], [], [], 0.05)
    if front in r:
        data, addr = front.recvfrom(65535)
        if addr not in clients:
            clients.append(addr)
            print("client", len(clients), flush=True)
        content = data[0] if data else -1
        hello = content == 22 and len(data) > 13 and data[13] == 1
        if mode == "alerts" and content == 21:
            print("dropped alert", flush=True)
            continue
        if mode == "handshake" and addr == clients[0] and not hello:
            print("dropped", content, flush=True)
            continue
        back.send(data)
    if back in r:
        try:
            data = back.recv(65535)
        except ConnectionRefusedError:
            continue
        if clients:
            front.sendto(data, clients[-1])
