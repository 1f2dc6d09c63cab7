"""Idle connections stay small: what an established server connection holds once it is quiet.

The figures are Python-level allocations counted by tracemalloc (deterministic for a given
workload, unlike RSS); ``bench/idle_memory.py`` reports RSS and the C heap as well.
"""
from __future__ import annotations

import gc
import random
import sys
import tracemalloc

import pytest

from dquic._connection import IDLE_RELEASE_AFTER
from dquic._protection import AVAILABLE_BACKENDS, OneRttKeys, PacketProtection
from dquic._ranges import RangeSet
from dquic._streams import RecvStream, SendStream
from dquic.config import Configuration
from dquic.endpoint import ConnectionAccepted, Endpoint
from dquic.events import HandshakeCompleted, MessageReceived
from dquic.testing import EVENT_SEND, LinkConfig
from dquic.testing.apps import make_pair
from dquic.testing.apps import shared_identity as _identity
from dquic.testing.pairs import Wire

SERVER = ("192.0.2.1", 4433)
CLIENT = ("198.51.100.7", 50000)
ONE_WAY = 0.005
#: An idle, established, encrypted server connection holds about 7.6 KB of Python allocations
#: in this workload, its endpoint's routing and timer entries included (22.6 KB before
#: connections released their handshake state, queues, scratch buffers and idle buffers): fail
#: at 1.5 times that.
MAX_IDLE_BYTES = 11_500


def _exchange(server: Endpoint, client: Endpoint, count: int, now: float):
    """``count`` client connections to ``server``: each completes the handshake, sends one
    message and reads the server's answer; then everything is left to go quiet. Only the
    public endpoint API is used. Returns (server connections, the time when all is quiet)."""
    wire = Wire(client, CLIENT, server, SERVER, ONE_WAY)
    sconns = []
    replies = 0
    for _ in range(count):
        client.connect(SERVER, now)
    wire.collect(now)
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
        wire.collect(now)
        if settle_until is None and replies == count:
            # past ACK delays and the point where quiet connections release memory
            settle_until = now + IDLE_RELEASE_AFTER + 1.0
        nxt = wire.next_time()
        if settle_until is not None and nxt > settle_until:
            return sconns, settle_until
        now = max(now, nxt)
        wire.advance(now)
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
    assert conn._tx.sbuf is None  # the send buffer is only borrowed while packets are built
    assert conn._sset.send_queue is None and conn._tx.datagrams is None and not conn._owed
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


# --- the pieces a quiet connection releases, one by one ------------------------------------
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_released_cipher_contexts_come_back_with_the_same_packets(backend, cipher):
    a_to_b, b_to_a = bytes(range(32)), bytes(range(32, 64))
    pairs = [(OneRttKeys(a_to_b, b_to_a, cipher, backend=backend, key_update_interval=4),
              OneRttKeys(b_to_a, a_to_b, cipher, backend=backend, key_update_interval=4))
             for _ in range(2)]
    released, kept = pairs
    for pn in range(12):  # across key updates
        header = bytes([0x40]) + bytes(8) + bytes([pn])
        payload = bytes([pn]) * 40
        if pn % 3 == 0:
            for k in released:
                k.release_contexts()
                assert k.contexts == 0
        for direction in (0, 1):  # both ways: a key update needs a packet from the peer
            packets = [pair[direction].sender.encrypt_packet(header, payload, pn)
                       for pair in pairs]
            assert packets[0] == packets[1]
            for pair, packet in zip(pairs, packets):
                assert pair[1 - direction].receiver.decrypt_packet(packet, 9, pn)[1] == payload
    assert released[0].generation == kept[0].generation > 0
    if backend == "openssl":
        assert released[0].contexts > 0  # made again on use


def test_range_set_shrink_keeps_the_ranges():
    r = RangeSet()
    for i in range(0, 40, 2):
        r.add(i, i + 1)
    r.subtract(0, 30)
    before = sys.getsizeof(r)
    r.shrink()
    assert list(r) == [(30, 31), (32, 33), (34, 35), (36, 37), (38, 39)]
    assert sys.getsizeof(r) < before
    r.add(100, 101)
    assert list(r)[-1] == (100, 101)
    r.subtract(0, 200)
    r.shrink()
    assert sys.getsizeof(r) == sys.getsizeof(RangeSet())


def test_stream_buffers_are_released_only_when_empty():
    s = SendStream(0)
    s.write_message(b"x" * 500)
    chunk = s.next_chunk(1000, 1 << 20)
    s.release_idle()
    assert s.__sizeof__() > type(s).__basicsize__  # unacknowledged bytes stay
    s.on_acked(chunk[0], len(chunk[1]))
    s.release_idle()
    assert s.__sizeof__() == type(s).__basicsize__
    s.write_message(b"y" * 10)
    assert s.next_chunk(1000, 1 << 20)[1] == b"\x0a" + b"y" * 10

    r = RecvStream(0, 1 << 20)
    r.insert(0, b"\x03abc\x02d")
    assert r.read_message(100) == (b"abc", True)
    r.release_idle()
    assert r.allocated > 0  # half a message is still buffered
    r.insert(6, b"e")
    assert r.read_message(100) == (b"de", True)
    r.release_idle()
    assert r.allocated == 0
    r.insert(7, b"\x01f")
    assert r.read_message(100) == (b"f", True)


def test_shared_send_buffers_respect_each_connections_datagram_size():
    # two connections with different datagram sizes build packets in turn from the shared
    # send buffers: each stays within its own limit
    sizes = (1200, 9000)
    pairs = []
    largest = [0, 0]
    for i, mds in enumerate(sizes):
        cfg = dict(max_datagram_size=mds, mtu_discovery=False)  # (each its size throughout)
        net, client, server, conn = make_pair(
            LinkConfig(delay=0.005, mtu=65535), seed=10 + i, client_config=Configuration(**cfg),
            server_config=Configuration(is_client=False, **cfg))

        def sent(now, kind, src, dst, size, i=i):
            if kind == EVENT_SEND:
                largest[i] = max(largest[i], size)
        net.on_event(sent)
        pairs.append((net, client, server, conn))
    payload = bytes(range(256)) * 400
    for net, client, server, conn in pairs:
        conn.send_message(0, payload)
    for _ in range(2000):
        for net, client, server, conn in pairs:
            net.run_for(0.002)
            assert conn._tx.sbuf is None
        if all(p[2].count(0) for p in pairs):
            break
    assert all(p[2].stream_messages(0) == [payload] for p in pairs)
    assert largest[0] == 1200 and 1200 < largest[1] <= 9000
