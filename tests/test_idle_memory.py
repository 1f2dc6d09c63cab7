"""Idle connections stay small: what an established server connection holds once it is quiet.

The figures are Python-level allocations counted by tracemalloc (deterministic for a given
workload, unlike RSS); ``bench/idle_memory.py`` reports RSS and the C heap as well.
"""
from __future__ import annotations

import gc
import heapq
import random
import tracemalloc

from dquic._connection import IDLE_RELEASE_AFTER
from dquic._protection import PacketProtection
from dquic.config import Configuration
from dquic.endpoint import ConnectionAccepted, Endpoint
from dquic.events import HandshakeCompleted, MessageReceived
from dquic.testing import LinkConfig
from dquic.testing.apps import make_pair
from dquic.testing.apps import test_identity as _identity

SERVER = ("192.0.2.1", 4433)
CLIENT = ("198.51.100.7", 50000)
ONE_WAY = 0.005
#: An idle, established, encrypted server connection holds about 7.1 KB of Python allocations
#: in this workload, its endpoint's routing entries included (21 KB before connections released
#: their handshake state, queues, scratch buffers and idle buffers): fail at 1.5 times that.
MAX_IDLE_BYTES = 10_700


def _exchange(server: Endpoint, client: Endpoint, count: int, now: float):
    """``count`` client connections to ``server``: each completes the handshake, sends one
    message and reads the server's answer; then everything is left to go quiet. Only the
    public endpoint API is used (every call visits every connection: keep ``count`` small).
    Returns (server connections, the time when all is quiet)."""
    wire = []          # (arrival, seq, to_server, data)
    seq = 0
    sconns = []
    replies = 0

    def post(items, to_server, t):
        nonlocal seq
        for data, _addr in items:
            seq += 1
            heapq.heappush(wire, (t + ONE_WAY, seq, to_server, data))

    for _ in range(count):
        client.connect(SERVER, now)
    post(client.datagrams_to_send(now), True, now)
    settle_until = None
    for _ in range(1_000_000):
        for conn, ev in client.take_events():
            if isinstance(ev, HandshakeCompleted):
                conn.send_message(0, b"request" * 8)
            elif isinstance(ev, MessageReceived):
                while conn.read_message(ev.stream_id, 1 << 16) is not None:
                    replies += 1
        for conn, ev in server.take_events():
            if isinstance(ev, ConnectionAccepted):
                sconns.append(conn)
            elif isinstance(ev, MessageReceived):
                while conn.read_message(ev.stream_id, 1 << 16) is not None:
                    conn.send_message(ev.stream_id, b"answer" * 8)
        post(client.datagrams_to_send(now), True, now)
        post(server.datagrams_to_send(now), False, now)
        if settle_until is None and replies == count:
            # past ACK delays and the point where quiet connections release memory
            settle_until = now + IDLE_RELEASE_AFTER + 1.0
        times = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        if wire:
            times.append(wire[0][0])
        nxt = min(times)
        if settle_until is not None and nxt > settle_until:
            return sconns, settle_until
        now = max(now, nxt)
        while wire and wire[0][0] <= now:
            _t, _s, to_server, data = heapq.heappop(wire)
            if to_server:
                server.receive_datagram(data, CLIENT, now)
            else:
                client.receive_datagram(data, SERVER, now)
        for ep in (client, server):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
    raise AssertionError("the exchanges did not complete")


def _endpoints(seed: int):
    rand = random.Random(seed).randbytes
    scfg = Configuration(is_client=False, identity=_identity(), idle_timeout=3600.0)
    server = Endpoint(scfg, accept=True, random_bytes=rand)
    client = Endpoint(Configuration(idle_timeout=3600.0), random_bytes=rand)
    return server, client


def test_idle_server_connection_is_small():
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        server, client = _endpoints(1)
        # first connections: module caches, free lists, table growth
        warm, now = _exchange(server, client, 20, 0.0)
        client = _endpoints(2)[1]
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        conns, now = _exchange(server, client, 100, now)
        del client  # the client side is not the server's to hold
        gc.collect()
        per_conn = (tracemalloc.get_traced_memory()[0] - before) / len(conns)
    finally:
        if not tracing:
            tracemalloc.stop()
    assert len(conns) == 100 and all(c.is_established for c in conns)
    assert per_conn < MAX_IDLE_BYTES, f"{per_conn:.0f} bytes per idle server connection"


def _idle_state(conn):
    hs = conn._spaces[0]
    assert conn.handshake_confirmed and conn._handshake is None
    assert hs.discarded and hs.rx is None and hs.crypto_send is None and hs.crypto_recv is None
    assert conn._seal[0] is None and conn._open[0] is None
    assert conn._local_params is None and conn._peer_params is None
    assert conn._sbuf is None  # the send buffer is only borrowed while packets are built
    assert conn._send_queue is None and conn._datagrams is None and conn._path_responses is None
    for sid in conn.streams():
        s = conn._streams[sid]
        # emptied stream buffers were given back
        assert s.recv.allocated == 0
        assert s.send.buffered == 0 and s.send.__sizeof__() == type(s.send).__basicsize__
    if isinstance(conn._app_seal, PacketProtection):
        assert conn._app_seal.keys.contexts == 0


def test_quiet_connections_release_and_recover():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=3)
    for round_ in range(3):
        msg = bytes([round_]) * 3000
        conn.send_message(4, msg)
        net.run(until=lambda: server.count(4) == round_ + 1, max_time=net.now + 5)
        sconn = server.endpoint.connections[0]
        sconn.send_message(4, msg[::-1])
        net.run(until=lambda: client.count(4) == round_ + 1, max_time=net.now + 5)
        if isinstance(sconn._app_seal, PacketProtection):
            assert sconn._app_seal.keys.contexts > 0
        net.run_for(IDLE_RELEASE_AFTER + 1.0)
        for c in (conn, sconn):
            _idle_state(c)
    assert server.stream_messages(4) == [bytes([r]) * 3000 for r in range(3)]
    assert client.stream_messages(4) == [(bytes([r]) * 3000)[::-1] for r in range(3)]
    assert conn.is_established and not client.terminated() and not server.terminated()
