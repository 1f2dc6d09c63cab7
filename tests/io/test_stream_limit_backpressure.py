"""Stream credit over real sockets: a send that needs a new stream half while the peer's
``max_streams`` are all in use blocks (like a full send buffer) and completes once credit comes
back; its timeout raises without queueing anything; a peer that allows no stream at all makes
the send raise at once. Nothing is reported sent that is not delivered (PROTOCOL.md §16.7)."""
from __future__ import annotations

import asyncio
import errno
import threading
import time

import pytest

from dquic import DQUICError, aio

pytestmark = pytest.mark.timeout(60)


class _Reader(threading.Thread):
    """Reads everything the server receives into ``got`` ({stream id: [messages]})."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.got = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        self.server.settimeout(0.1)
        while not self.stop.is_set():
            try:
                _, msgs = self.server.receive_from(1 << 16)
            except TimeoutError:
                continue
            with self.lock:
                for sid, data in msgs.items():
                    self.got.setdefault(sid, []).append(data)

    def count(self):
        with self.lock:
            return sum(len(v) for v in self.got.values())


def test_sync_send_to_blocks_for_stream_credit_then_completes(make_dquic):
    server = make_dquic(max_streams=4)
    client = make_dquic(timeout=0.5)
    addr = server.local_address
    for sid in range(4):
        client.send_to(addr, {sid: b"first %d" % sid})
    # the server reads nothing yet: its 4 halves stay open, a fifth id must wait
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.send_to(addr, {100: b"never queued"})
    assert 0.4 <= time.monotonic() - start < 3.0
    client.settimeout(0)
    with pytest.raises(BlockingIOError) as info:
        client.send_to(addr, {101: b"never queued either"})
    assert info.value.errno == errno.EAGAIN
    # the server reads: credit comes back, blocked sends complete, 300 more ids go through
    reader = _Reader(server)
    reader.start()
    try:
        client.settimeout(10.0)
        client.send_to(addr, {102: b"after credit"})
        for sid in range(1000, 1300):
            client.send_to(addr, {sid: b"id %d" % sid})
        deadline = time.monotonic() + 20
        while reader.count() < 4 + 1 + 300 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reader.stop.set()
        reader.join(5)
    got = reader.got
    assert {sid: got[sid] for sid in range(4)} == {sid: [b"first %d" % sid] for sid in range(4)}
    assert got[102] == [b"after credit"]
    assert all(got[sid] == [b"id %d" % sid] for sid in range(1000, 1300))
    # what timed out was not queued, so it never arrives
    assert 100 not in got and 101 not in got


def test_sync_send_to_raises_when_the_peer_allows_no_streams(make_dquic):
    server = make_dquic(max_streams=0)
    client = make_dquic(timeout=10.0)
    start = time.monotonic()
    with pytest.raises(DQUICError) as info:
        client.send_to(server.local_address, {1: b"no room"})
    assert info.value.errno == errno.ENOBUFS and "max_streams" in str(info.value)
    assert time.monotonic() - start < 5.0


def test_asyncio_send_message_awaits_stream_credit(make_dquic):
    # the server is a sync endpoint: it reads (and so gives stream credit back) only when told
    server = make_dquic(max_streams=4)
    reader = _Reader(server)

    async def main():
        conn = await aio.connect(*server.local_address, server_key=server.identity.public)
        async with conn:
            for sid in range(4):
                await conn.send_message(sid, b"first %d" % sid)
            blocked = asyncio.ensure_future(conn.send_message(100, b"waits for credit"))
            await asyncio.sleep(0.5)
            assert not blocked.done()  # awaiting stream credit
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.send_message(101, b"cancelled"), 0.3)
            reader.start()
            await asyncio.wait_for(blocked, 10)
            for sid in range(1000, 1200):
                await asyncio.wait_for(conn.send_message(sid, b"id %d" % sid), 10)
            for _ in range(400):
                if reader.count() >= 4 + 1 + 200:
                    break
                await asyncio.sleep(0.025)

    try:
        asyncio.run(main())
    finally:
        reader.stop.set()
        if reader.is_alive():
            reader.join(5)
    got = reader.got
    assert got[100] == [b"waits for credit"]
    assert 101 not in got  # cancelled while waiting: never queued
    assert all(got[sid] == [b"id %d" % sid] for sid in range(1000, 1200))
    assert all(got[sid] == [b"first %d" % sid] for sid in range(4))


def test_asyncio_send_message_raises_when_the_peer_allows_no_streams():
    async def main():
        async def handler(conn):
            await asyncio.sleep(30)

        async with await aio.serve("127.0.0.1", 0, handler, max_streams=0) as server:
            conn = await aio.connect(*server.address, server_key=server.identity.public)
            async with conn:
                with pytest.raises(DQUICError) as info:
                    await asyncio.wait_for(conn.send_message(1, b"no room"), 5)
                assert info.value.errno == errno.ENOBUFS

    asyncio.run(main())


def test_asyncio_read_raises_promptly_when_the_server_refuses_the_handshake():
    """XX pattern: the client's side of the handshake completes before the server checks the
    client's key against ``trusted_peers`` and refuses it. The refusal reaches the call that is
    waiting (``connect`` or a read), well within the handshake timeout."""
    from dquic import AuthenticationError, ConnectionClosed, KeyPair

    async def main():
        async def handler(conn):
            await conn.send_message(1, b"never")

        trusted = KeyPair.generate()
        async with await aio.serve("127.0.0.1", 0, handler,
                                   trusted_peers=[trusted.public]) as server:
            start = time.monotonic()
            with pytest.raises((AuthenticationError, ConnectionClosed)):
                conn = await aio.connect(*server.address, identity=KeyPair.generate(),
                                         handshake_timeout=10.0)
                await asyncio.wait_for(conn.receive_message(), 20)
            assert time.monotonic() - start < 5.0

    asyncio.run(main())
