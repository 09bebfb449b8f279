#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A client restarted on the address and port of a session it left behind: a
# new DTLS handshake from there is answered at once, with one worker and
# with two. A relay (same-port-relay.py) sends every client from one source
# port and leaves the session before open: a finished session whose
# close_notify was lost, or a handshake that stopped half way (the client
# killed in it). Without the ClientHello guard's check, the new ClientHello
# went into the old session, which ignored it until it died (its handshake
# retransmissions given up, or --idle-timeout): the new client timed out.
# A ClientHello without our cookie does not disturb a session; a restarted
# client shows with the cookie that it receives at the address.
. "$(dirname "$0")/lib.sh"

RELAY=$HERE/same-port-relay.py

# through_relay MODE: client 1 and then client 2 through a relay in MODE;
# RC1/RC2 are whether each got 2.05 (0 yes), MS2 client 2's time in ms.
through_relay() {
  local mode=$1 rport rpid t0
  rport=$(estc__server_free_port 127.0.0.1)
  python3 "$RELAY" "$rport" "$ESTC_SERVER_PORT" "$mode" 60 >"$T/relay.out" 2>&1 &
  rpid=$!
  for _ in $(seq 1 50); do grep -q ready "$T/relay.out" && break; sleep 0.1; done
  coap-client-openssl -v 6 -B 3 -C "$ESTC_SERVER_CA" "coaps://127.0.0.1:$rport/.well-known/core" \
    >"$T/trace1" 2>&1
  grep -q 'c:2\.05' "$T/trace1"
  RC1=$?
  t0=$(date +%s%N)
  coap-client-openssl -v 6 -B 6 -C "$ESTC_SERVER_CA" "coaps://127.0.0.1:$rport/.well-known/core" \
    >"$T/trace2" 2>&1
  grep -q 'c:2\.05' "$T/trace2"
  RC2=$?
  MS2=$((($(date +%s%N) - t0) / 1000000))
  kill "$rpid" 2>/dev/null
  wait "$rpid" 2>/dev/null
}

for workers in 1 2; do
  estc_server_start --workers "$workers" || exit 1

  # A finished client whose close_notify was lost: its session stays open.
  through_relay alerts
  check "$workers worker(s), session left open: client 1 served" test "$RC1" -eq 0
  check "$workers worker(s), session left open: its close_notify dropped" \
    grep -q 'dropped alert' "$T/relay.out"
  check "$workers worker(s), session left open: client 2 from the same port served" test "$RC2" -eq 0
  check "$workers worker(s), session left open: client 2 within 3 s (${MS2} ms)" test "$MS2" -lt 3000

  # A client whose handshake stopped after its ClientHello: the server's
  # session waits half way.
  through_relay handshake
  check "$workers worker(s), handshake left half way: client 1 not served" test "$RC1" -ne 0
  check "$workers worker(s), handshake left half way: client 2 from the same port served" \
    test "$RC2" -eq 0
  check "$workers worker(s), handshake left half way: client 2 within 3 s (${MS2} ms)" \
    test "$MS2" -lt 3000

  estc_server_stop_keep_state
  check "$workers worker(s): the server stopped cleanly" test "${ESTC_SERVER_STATUS:-1}" -eq 0
  check "$workers worker(s): two sessions replaced by a new handshake" \
    grep -q '^estc-server: 2 session(s) replaced by a new handshake from the same address and port$' \
    "$ESTC_SERVER_LOG"
  estc_server_stop
done

# No session ticket and no session cache: a client that offers the ticket
# extension gets none and no session ID, so it has nothing to resume by
# (OpenSSL would otherwise make and encrypt a ticket at every handshake).
estc_server_start || exit 1
timeout 20 openssl s_client -dtls1_2 -connect "127.0.0.1:$ESTC_SERVER_PORT" \
  -CAfile "$ESTC_SERVER_CA" -sess_out "$T/session.pem" </dev/null >"$T/s_client" 2>&1
check "s_client: the handshake completed" grep -q '^ *Protocol *: DTLSv1.2' "$T/s_client"
check "s_client: no session ticket issued" bash -c "! grep -q 'TLS session ticket' '$T/s_client'"
check "s_client: no session ID to resume by" grep -Eq '^ *Session-ID: *$' "$T/s_client"
estc_server_stop
finish
