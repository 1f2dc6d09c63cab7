"""The asyncio API (dquic.aio) over real UDP sockets on loopback, on the default event loop and
on uvloop when it is installed: messages through a lossy relay, several clients, byte streams
with back-pressure, unreliable datagrams, closing, errors."""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time

import pytest

import dquic
import dquic.aio as aio
from dquic import AuthenticationError, ConnectionClosed, ConnectionTimeout
from dquic.keys import KeyPair

from _fixtures import _no_leaked_threads, make_relay  # noqa: F401 (fixtures)
from _net import free_udp_port, ipv6_available

pytestmark = pytest.mark.timeout(120)

#: Upper bound on any single test coroutine (seconds).
TEST_DEADLINE = 40.0

try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None,
                                                                    reason="uvloop not installed"))]


@pytest.fixture(params=LOOPS)
def run(request):
    """``run(coroutine_function, *args)`` on a fresh loop of the parametrised kind, bounded."""
    kind = request.param

    def runner(fn, *args, timeout=TEST_DEADLINE):
        loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(fn(*args), timeout))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    runner.kind = kind
    return runner


def _payloads(rng, streams, count, max_size):
    return {sid: [rng.randbytes(rng.choice([0, 1, 17, 1000, 1200, 5000, max_size]))
                  for _ in range(count)] for sid in streams}


async def _echo(conn):
    while True:
        sid, data = await conn.receive_message()
        await conn.send_message(sid, data)


# ----------------------------------------------------------------------------------------------
def test_messages_byte_exact_through_lossy_relay(run, make_relay):
    rng = random.Random(1)
    sent = _payloads(rng, [0, 1, 5, 1 << 40], 12, 300_000)
    received = {}

    async def collect(conn):
        total = sum(len(v) for v in sent.values())
        for _ in range(total):
            sid, data = await conn.receive_message()
            received.setdefault(sid, []).append(data)
        await conn.send_message(9, b"done")
        await conn.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, collect) as server:
            relay = make_relay(server.address, seed=11, loss=0.03, reorder=0.03, duplicate=0.02, delay=0.001)
            async with await aio.connect(*relay.address, server_key=server.identity.public) as conn:
                assert conn.peer_key == server.identity.public
                assert conn.peer_address == relay.address
                for i in range(12):
                    for sid, msgs in sent.items():
                        await conn.send_message(sid, msgs[i])
                assert await conn.receive_message(9) == b"done"
                stats = conn.stats
                assert stats.smoothed_rtt > 0 and stats.packets_sent > 0
            return relay.counters

    counters = run(main)
    assert received == sent
    assert counters.dropped > 0  # the relay did lose packets


def test_receive_message_per_stream_and_any(run):
    async def handler(conn):
        for sid, data in ((3, b"three-a"), (4, b"four"), (3, b"three-b"), (5, b"")):
            await conn.send_message(sid, data)
        await conn.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            async with await aio.connect(*server.address) as conn:
                assert await conn.receive_message(3) == b"three-a"
                assert await conn.receive_message(3) == b"three-b"
                assert await conn.receive_message() == (4, b"four")
                assert await conn.receive_message() == (5, b"")
                with pytest.raises(TypeError):
                    await conn.receive_message(True)
                with pytest.raises(ValueError):
                    await conn.receive_message(1 << 62)

    run(main)


@pytest.mark.parametrize("offload", [True, False])
def test_a_request_leaves_inside_send_message_and_later_sends_share_a_pass(run, offload):
    """A request/response client: ``send_message`` hands the request to the socket before it
    returns (no loop iteration later); sends made before the loop runs again go together in
    its next pass."""
    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo) as server:
            async with await aio.connect(*server.address, offload=offload) as conn:
                await conn.send_message(1, b"warm-up")
                assert await conn.receive_message(1) == b"warm-up"
                driver = conn._driver
                sent = driver.datagrams_out
                await conn.send_message(1, b"request")  # (nothing in it suspends)
                assert driver.datagrams_out == sent + 1
                await conn.send_message(1, b"two")
                await conn.send_message(1, b"three")
                assert driver.datagrams_out == sent + 1  # not yet: with the next pass
                assert [await conn.receive_message(1) for _ in range(3)] == [
                    b"request", b"two", b"three"]

    run(main)


@pytest.mark.parametrize("offload", [True, False])
def test_a_first_message_leaves_with_the_acknowledgement_that_ends_the_handshake(run, offload):
    """When ``connect()`` returns only the Initial has left (the driver holds the
    acknowledgement of the server's handshake message for one loop iteration, in which the
    caller resumes); the first message then goes in the same datagram as that acknowledgement
    (PROTOCOL.md §6). Without the hold it left first, alone, and the message came after."""
    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo) as server:
            async with await aio.open_client(offload=offload) as client:
                for _ in range(2):  # a fresh connection each time on the one socket
                    driver = client._driver
                    before = driver.datagrams_out
                    conn = await client.connect(*server.address)
                    assert driver.datagrams_out == before + 1  # the Initial
                    await conn.send_message(1, b"first")  # (goes with the pass held)
                    assert await conn.receive_message(1) == b"first"
                    # the Initial, acknowledgement + first 1-RTT frames + message, and at most
                    # the acknowledgement of the reply (it was one more without the hold)
                    assert driver.datagrams_out <= before + 3
                    conn.close()
                    await conn.wait_closed()

    run(main)


def test_server_with_several_clients(run, make_relay):
    keys = [KeyPair.generate() for _ in range(4)]

    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo,
                                   trusted_peers=[k.public for k in keys]) as server:
            relay = make_relay(server.address, seed=11, loss=0.02, delay=0.001)

            async def client(i):
                rng = random.Random(i)
                async with await aio.connect(*relay.address, identity=keys[i],
                                             server_key=server.identity.public) as conn:
                    msgs = [rng.randbytes(rng.randint(0, 100_000)) for _ in range(10)]
                    for m in msgs:
                        await conn.send_message(i, m)
                    back = [await conn.receive_message(i) for _ in msgs]
                    assert back == msgs
                    return conn.local_address

            locals_ = await asyncio.gather(*(client(i) for i in range(4)))
            assert len(set(locals_)) == 4
            peer_keys = {c.peer_key for c in server.connections}
            assert peer_keys <= {k.public for k in keys}

    run(main)


def test_untrusted_client_is_refused(run):
    async def main():
        trusted = KeyPair.generate()
        async with await aio.serve("127.0.0.1", 0, _echo, trusted_peers=[trusted.public]) as server:
            with pytest.raises((AuthenticationError, ConnectionClosed)):
                await aio.connect(*server.address, identity=KeyPair.generate(),
                                  server_key=server.identity.public, handshake_timeout=3.0)

    run(main)


def test_wrong_server_key_fails(run):
    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo) as server:
            with pytest.raises((AuthenticationError, ConnectionClosed, ConnectionTimeout)) as info:
                await aio.connect(*server.address, server_key=KeyPair.generate().public,
                                  handshake_timeout=2.0)
            assert isinstance(info.value, dquic.DQUICError)

    run(main)


def test_byte_streams_with_drain(run, make_relay):
    blob = random.Random(3).randbytes(3 << 20)

    async def handler(conn):
        reader, writer = conn.open_stream(7)
        line = await reader.readline()
        assert line == b"HELLO 7\n"
        size = int((await reader.readexactly(8)).decode())
        h = hashlib.sha256()
        left = size
        while left:
            chunk = await reader.read(min(left, 65536))
            assert chunk
            h.update(chunk)
            left -= len(chunk)
        assert await reader.read() == b""  # the client closed its half
        assert reader.at_eof()
        writer.write(h.hexdigest().encode() + b"\n")
        writer.write(b"bye")
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            relay = make_relay(server.address, seed=11, loss=0.01, delay=0.001)
            async with await aio.connect(*relay.address, send_buffer_limit=256 << 10) as conn:
                reader, writer = conn.open_stream(7)
                writer.write(b"HELLO 7\n")
                writer.write(b"%08d" % len(blob))
                peak = 0
                for i in range(0, len(blob), 100_000):
                    writer.write(blob[i:i + 100_000])
                    await writer.drain()
                    peak = max(peak, conn.send_buffered)
                assert peak <= (256 << 10) + 100_000 + 64  # drain bounded the buffer
                writer.close()
                assert writer.is_closing()
                digest = await reader.readline()
                assert digest == hashlib.sha256(blob).hexdigest().encode() + b"\n"
                assert await reader.read(-1) == b"bye"
                assert reader.at_eof()
                with pytest.raises(asyncio.IncompleteReadError):
                    await reader.readexactly(1)
                await writer.wait_closed()
                with pytest.raises(ConnectionClosed):
                    writer.write(b"more")

    run(main)


def test_messages_before_open_stream_become_reader_bytes(run):
    async def handler(conn):
        await conn.send_message(2, b"abc")
        await conn.send_message(2, b"def\n")
        conn.end_stream(2)
        await conn.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            async with await aio.connect(*server.address) as conn:
                await conn.send_message(1, b"ping")  # something to wait on: the reply arrives
                # wait until both messages are here, then switch the stream to byte mode
                while sum(1 for s, _ in (conn._messages or ()) if s == 2) < 2:
                    await conn._wait_progress()
                reader, _ = conn.open_stream(2)
                assert await reader.readline() == b"abcdef\n"
                assert await reader.read() == b""
                with pytest.raises(RuntimeError):
                    await conn.receive_message(2)

    run(main)


def test_datagrams_acknowledged_and_lost(run, make_relay):
    async def handler(conn):
        while True:
            await conn.receive_datagram()

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            relay = make_relay(server.address, seed=11, loss=0.25, delay=0.002)
            async with await aio.connect(*relay.address, server_key=server.identity.public) as conn:
                futures = []
                for i in range(120):
                    futures.append(conn.send_datagram(b"d%03d" % i + bytes(200)))
                    if i % 10 == 9:
                        # reliable traffic in between keeps acknowledgements and loss detection going
                        await conn.send_message(1, b"x" * 1000)
                results = await asyncio.gather(*futures)
                assert all(isinstance(r, bool) for r in results)
                assert any(results) and not all(results)
                with pytest.raises(ValueError):
                    conn.send_datagram(bytes(5000))
                with pytest.raises(TypeError):
                    conn.send_datagram("text")

    run(main)


def test_datagram_round_trip(run):
    async def handler(conn):
        while True:
            d = await conn.receive_datagram()
            conn.send_datagram(d[::-1])

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            async with await aio.connect(*server.address) as conn:
                ok = await conn.send_datagram(b"abc")
                assert ok is True
                assert await conn.receive_datagram() == b"cba"

    run(main)


def test_wait_closed_waits_for_the_peers_answer_where_the_socket_goes(run):
    # a connect() connection owns its socket: wait_closed returns once the server answered the
    # close (a lost close is sent again until then); a Client's connections return when
    # their close is out, and the Client waits for the answers before releasing its socket
    async def handler(conn):
        await conn.send_message(1, await conn.receive_message(1))
        try:
            await conn.receive_message()
        except ConnectionClosed:
            pass

    async def echoed(conn):
        await conn.send_message(1, b"ping")
        assert await conn.receive_message(1) == b"ping"
        return conn

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            conn = await echoed(await aio.connect(*server.address))
            conn.close()
            await conn.wait_closed()
            assert conn._core.close_settled
            client = await aio.open_client("127.0.0.1")
            shared = await echoed(await client.connect(*server.address))
            client.close()
            await client.wait_closed()
            assert shared._core.close_settled

    run(main)


def test_close_delivers_queued_data_and_wait_closed(run):
    blob = os.urandom(2 << 20)
    got = []
    done = []
    finished = []

    async def handler(conn):
        got.append(await conn.receive_message(1))
        with pytest.raises(ConnectionClosed):
            await conn.receive_message()
        done.append(True)
        finished[0].set()

    async def main():
        finished.append(asyncio.Event())
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            conn = await aio.connect(*server.address)
            await conn.send_message(1, blob)
            conn.close()  # returns at once; the data is flushed first
            conn.close()  # idempotent
            await conn.wait_closed()
            assert conn.is_closed
            with pytest.raises(ConnectionClosed):
                await conn.send_message(1, b"late")
            with pytest.raises(ConnectionClosed):
                await conn.receive_message()
            await finished[0].wait()
            assert server.is_serving()
        assert not server.is_serving()

    run(main)
    assert got == [blob] and done == [True]


def test_close_with_nothing_in_flight_does_not_wait_out_the_closing_period(run):
    """close() + wait_closed() return once our CONNECTION_CLOSE is out: the closing period
    (3 PTO, when stray packets are answered) is kept by the endpoint, not by the caller."""
    server_side = []

    async def handler(conn):
        assert await conn.receive_message(2) == b"bye"
        conn.close()
        await conn.wait_closed()
        server_side.append(conn._core.is_terminated)

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            conn = await aio.connect(*server.address)
            await conn.send_message(1, b"x")
            while conn.send_buffered:  # until the peer acknowledged it: nothing in flight
                await asyncio.sleep(0.001)
            loop = asyncio.get_running_loop()
            start = loop.time()
            conn.close()
            await conn.wait_closed()
            elapsed = loop.time() - start
            # the core is still in its closing period: it was not waited out
            assert conn._core.is_closed and not conn._core.is_terminated, elapsed
            other = await aio.connect(*server.address)
            await other.send_message(2, b"bye")
            with pytest.raises(ConnectionClosed):
                await other.receive_message()
            await other.wait_closed()

    run(main)
    assert server_side == [False]


def test_close_reports_data_linger_could_not_deliver_and_flush(run):
    """A peer that never reads stops the sender at its flow-control window: flush(timeout)
    raises UndeliveredData with the account, and so does wait_closed() after a close()
    whose linger ran out; abort() abandons without the report."""
    release = []

    async def handler(conn):
        await release[0].wait()  # reads nothing until told

    async def main():
        release.append(asyncio.Event())
        # the server keeps at most 64 KiB of whole messages out of its stream buffers
        async with await aio.serve("127.0.0.1", 0, handler, receive_buffer=1 << 16) as server:
            conn = await aio.connect(*server.address, linger=0.3, send_buffer_limit=16 << 20)
            for _ in range(8):  # on one stream: the first message completes, the rest wait
                await conn.send_message(0, bytes(1 << 20))
            with pytest.raises(dquic.UndeliveredData) as info:
                await conn.flush(0.2)
            assert info.value.undelivered[conn.peer_address] > 0
            conn.close()
            with pytest.raises(dquic.UndeliveredData) as info:
                await conn.wait_closed()
            assert 1 << 20 <= info.value.undelivered[conn.peer_address] <= 8 * (1 << 20) + 64

            other = await aio.connect(*server.address)
            await other.send_message(1, bytes(3 << 20))
            other.abort()
            await other.wait_closed()  # abandoned on purpose: no report
            release[0].set()

    run(main)


def test_server_close_ends_client_connection(run):
    async def main():
        server = await aio.serve("127.0.0.1", 0, _echo)
        conn = await aio.connect(*server.address)
        await conn.send_message(1, b"x")
        assert await conn.receive_message(1) == b"x"
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionClosed):
            await conn.receive_message()
        await conn.wait_closed()

    run(main)


def test_client_opens_many_connections_from_one_socket(run):
    # one Client socket: connections one after another to one server and at once to two servers
    # pinned with different keys (per-connection options); every one leaves from the same port
    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo) as a, await aio.serve("127.0.0.1", 0, _echo) as b:
            async with await aio.open_client() as client:
                local = client.local_address
                for i in range(12):
                    conn = await client.connect(*a.address, server_key=a.identity.public)
                    assert conn.local_address == local and conn.peer_key == a.identity.public
                    await conn.send_message(i, b"ping %d" % i)
                    assert await conn.receive_message(i) == b"ping %d" % i
                    conn.close()
                    await conn.wait_closed()
                assert client.connections == []
                ca, cb = await asyncio.gather(client.connect(*a.address, server_key=a.identity.public),
                                              client.connect(*b.address, server_key=b.identity.public))
                assert {ca.peer_key, cb.peer_key} == {a.identity.public, b.identity.public}
                assert len(client.connections) == 2
                await ca.send_message(1, b"to a")
                await cb.send_message(1, b"to b")
                assert (await ca.receive_message(1), await cb.receive_message(1)) == (b"to a", b"to b")
                # a wrong pin fails that connection only; the others and the socket go on
                with pytest.raises(AuthenticationError):
                    await client.connect(*a.address, server_key=b.identity.public)
                await ca.send_message(2, b"still here")
                assert await ca.receive_message(2) == b"still here"
                transport = client._driver.transport
            assert transport.is_closing()  # leaving the block closed both and the socket
            assert ca.is_closed and cb.is_closed
            with pytest.raises(dquic.EndpointClosed):
                await client.connect(*a.address)

    run(main)


def test_client_checks_its_arguments(run):
    async def main():
        async with await aio.open_client() as client:
            with pytest.raises(TypeError):
                await client.connect("127.0.0.1", 9, no_such_option=1)
            with pytest.raises(ValueError):
                await client.connect("::1", 9)  # an IPv4 socket cannot reach an IPv6 address

    run(main)


def test_connect_to_dead_port_times_out(run):
    # the loop's own datagram endpoint (offload=False) does not report ICMP errors: the
    # handshake timeout decides
    port = free_udp_port()

    async def main():
        t0 = time.monotonic()
        with pytest.raises(ConnectionTimeout):
            await aio.connect("127.0.0.1", port, handshake_timeout=0.5, offload=False)
        return time.monotonic() - t0

    elapsed = run(main)
    assert elapsed < 3.0
    assert issubclass(ConnectionTimeout, TimeoutError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ICMP errors read from Linux's error queue")
def test_connect_to_dead_port_is_refused_fast(run):
    from dquic.errors import ConnectionRefused

    port = free_udp_port()

    async def main():
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefused):
            await aio.connect("127.0.0.1", port, handshake_timeout=5.0)
        return time.monotonic() - t0

    assert run(main) < 1.0  # the port-unreachable answer, not the 5 s handshake timeout


def test_back_pressure_waits_for_a_slow_reader(run):
    gate = []

    async def handler(conn):
        await gate[0].wait()
        total = 0
        while total < 40 * 65536:
            total += len(await conn.receive_message(1))
        await conn.send_message(1, b"%d" % total)
        await conn.wait_closed()

    async def main():
        gate.append(asyncio.Event())
        # the server holds at most receive_buffer of unread messages, then flow control stops
        # the client, whose send_message then waits
        async with await aio.serve("127.0.0.1", 0, handler, receive_buffer=64 << 10,
                                   initial_max_data=128 << 10,
                                   max_data_window=256 << 10, initial_max_stream_data=64 << 10,
                                   max_stream_data_window=128 << 10) as server:
            async with await aio.connect(*server.address, send_buffer_limit=256 << 10) as conn:
                async def send_all():
                    for _ in range(40):
                        await conn.send_message(1, bytes(65536))
                task = asyncio.ensure_future(send_all())
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 0.5)
                assert conn.send_buffered <= (256 << 10) + 65536 + 64
                gate[0].set()
                await task
                assert await conn.receive_message(1) == b"%d" % (40 * 65536)

    run(main)


def test_large_message_assembled_and_too_large_rejected(run):
    big = os.urandom(5 << 20)

    async def handler(conn):
        # "after" goes first: it must stay readable when the stream beside it fails
        await conn.send_message(3, b"after")
        await conn.send_message(1, big)
        await conn.send_message(2, bytes(3 << 20))
        await conn.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, handler) as server:
            async with await aio.connect(*server.address, receive_buffer=1 << 20,
                                         max_message_size=(5 << 20) + 10) as conn:
                assert await conn.receive_message(1) == big
                assert await conn.receive_message(3) == b"after"
                assert await conn.receive_message(2) == bytes(3 << 20)
            async with await aio.connect(*server.address, max_message_size=1 << 20) as conn:
                with pytest.raises(aio.MessageTooLarge) as info:
                    await conn.receive_message(1)
                assert info.value.stream_id == 1
                with pytest.raises(aio.MessageTooLarge):
                    await conn.receive_message(1)  # the stream stays failed
                assert await conn.receive_message(3) == b"after"

    run(main)


def test_bad_arguments(run):
    async def main():
        with pytest.raises(TypeError):
            await aio.connect("127.0.0.1", 9, no_such_option=1)
        with pytest.raises(ValueError):
            await aio.connect("127.0.0.1", 70000)
        async with await aio.serve("127.0.0.1", 0, _echo) as server:
            async with await aio.connect(*server.address) as conn:
                with pytest.raises(TypeError):
                    await conn.send_message(1, "str")
                with pytest.raises(TypeError):
                    await conn.send_message("1", b"x")
                with pytest.raises(ValueError):
                    await conn.send_message(-1, b"x")
                assert await conn.send_message(1, memoryview(b"abcd")[::2].tobytes()) == 2
                assert await conn.receive_message(1) == b"ac"

    run(main)


def test_qlog_traces_written(run, tmp_path):
    async def main():
        async with await aio.serve("127.0.0.1", 0, _echo, qlog_dir=str(tmp_path)) as server:
            async with await aio.connect(*server.address, qlog_dir=str(tmp_path)) as conn:
                await conn.send_message(1, b"x")
                assert await conn.receive_message(1) == b"x"

    run(main)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith("_client.sqlog") for n in names)
    assert any(n.endswith("_server.sqlog") for n in names)


def _sink(payload, got):
    """A server handler that reads ``len(payload)`` bytes of messages, keeps them in ``got``
    and answers ``ok`` on stream 1."""
    async def sink(conn):
        buf = bytearray()
        while len(buf) < len(payload):
            _, data = await conn.receive_message()
            buf += data
        got.append(bytes(buf))
        await conn.send_message(1, b"ok")

    return sink


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "loop-endpoint"])
def test_both_transports_carry_a_transfer_byte_exact(run, offload):
    payload = os.urandom(3 << 20)
    got = []

    sink = _sink(payload, got)

    async def main():
        async with await aio.serve("127.0.0.1", 0, sink, offload=offload) as server:
            async with await aio.connect(*server.address, server_key=server.identity.public,
                                         offload=offload) as conn:
                kind = type(conn._driver.transport).__name__
                for i in range(0, len(payload), 1 << 18):
                    await conn.send_message(0, payload[i:i + (1 << 18)])
                assert await conn.receive_message(1) == b"ok"
                return kind, conn._driver.datagrams_out, conn._core.datagram_size

    kind, out, size = run(main)
    assert got == [payload]
    if offload and sys.platform.startswith("linux"):
        assert kind == "_OffloadTransport"
    elif not offload:
        assert kind != "_OffloadTransport"
    assert out >= len(payload) // size  # every datagram of every train counted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the offload transport is used on Linux")
def test_offload_transport_waits_when_the_kernel_is_full(run):
    """The kernel refusing datagrams (EAGAIN) pauses the driver; they go out once the socket
    is writable, and everything arrives."""
    payload = os.urandom(1 << 20)
    got = []
    events = []

    sink = _sink(payload, got)

    async def main():
        async with await aio.serve("127.0.0.1", 0, sink) as server:
            async with await aio.connect(*server.address, server_key=server.identity.public) as conn:
                transport = conn._driver.transport
                sock = transport._sock
                real = sock.send_trains
                refusals = [3]

                def flaky(trains, start=0, offset=0):
                    if refusals[0] > 0 and trains:
                        refusals[0] -= 1
                        events.append("full")
                        return start, offset  # nothing taken: as if EAGAIN
                    return real(trains, start, offset)

                sock.send_trains = flaky
                driver = conn._driver
                orig_pause, orig_resume = driver.pause_writing, driver.resume_writing
                driver.pause_writing = lambda: (events.append("pause"), orig_pause())[1]
                driver.resume_writing = lambda: (events.append("resume"), orig_resume())[1]
                await conn.send_message(0, payload)
                assert await conn.receive_message(1) == b"ok"

    run(main)
    assert got == [payload]
    assert "full" in events and "pause" in events and "resume" in events
    assert events.index("pause") < events.index("resume")


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "loop-endpoint"])
def test_ipv6_and_ipv4_clients_on_a_wildcard_ipv6_server(run, offload):
    async def echo(conn):
        while True:
            sid, data = await conn.receive_message()
            await conn.send_message(sid, data)

    async def main():
        async with await aio.serve("::", 0, echo, offload=offload) as server:
            port = server.address[1]
            out = []
            # the offload transport's IPv6 wildcard socket serves IPv4 clients too
            for host in ("::1", "127.0.0.1") if offload else ("::1",):
                async with await aio.connect(host, port, server_key=server.identity.public,
                                             offload=offload) as conn:
                    await conn.send_message(2, host.encode())
                    out.append(await conn.receive_message(2))
            return out

    assert run(main) == ([b"::1", b"127.0.0.1"] if offload else [b"::1"])


def test_inbox_hands_out_messages_as_one_arrival_ordered_queue_would():
    # every operation against the obvious model: a list in arrival order, searched in full

    from dquic.aio._connection import _Inbox

    rng = random.Random(7)
    inbox, model = _Inbox(), []
    for step in range(20_000):
        op = rng.random()
        if op < 0.45:
            items = [(rng.randrange(6), b"%d" % step) for _ in range(rng.choice((1, 1, 3)))]
            inbox.extend(items) if len(items) > 1 else inbox.append(*items[0])
            model.extend(items)
        elif op < 0.65:
            got = inbox.take_any()
            assert got == (model.pop(0) if model else None)
        elif op < 0.97:
            sid = rng.randrange(6)
            i = next((k for k, item in enumerate(model) if item[0] == sid), None)
            assert inbox.take_stream(sid) == (None if i is None else model.pop(i))
        else:
            sid = rng.randrange(6)
            assert inbox.take_all(sid) == [d for s, d in model if s == sid]
            model = [item for item in model if item[0] != sid]
        assert len(inbox) == len(model) and list(inbox) == model
        # taken entries left behind in arrival order never outnumber the waiting ones much
        assert len(inbox.order) <= 2 * len(model) + 34


def test_inbox_takes_one_streams_message_without_walking_the_others():
    import collections

    from dquic.aio._connection import _Inbox

    class Counting(collections.deque):
        walked = 0

        def __iter__(self):
            for item in super().__iter__():
                Counting.walked += 1
                yield item

    inbox = _Inbox()
    inbox.order = Counting()
    inbox.extend([(1, b"x")] * 10_000 + [(2, b"%d" % i) for i in range(100)])
    for i in range(100):
        assert inbox.take_stream(2) == (2, b"%d" % i)
    # one walk to find the first and index them all; before, each call walked the 10,000
    assert Counting.walked < 2 * 10_100
    assert len(inbox) == 10_000 and inbox.take_any() == (1, b"x")


def test_messages_longer_than_the_windows_and_the_receive_buffer_arrive_whole(run, make_relay):
    # stream windows of 32 KiB and a 64 KiB receive_buffer on both sides, messages from 0 to
    # 100 KB on four streams over a lossy, reordering path, read by stream and from any
    # stream: whole messages that can complete in the core wait there, longer ones are taken
    # in pieces, the budget holds the rest back, and every message arrives whole, in order
    small = dict(initial_max_stream_data=32768, receive_buffer=65536)
    rng = random.Random(5)
    sent = {sid: [rng.randbytes(rng.choice((0, 10, 1500, 20_000, 100_000))) for _ in range(25)]
            for sid in range(4)}

    async def echo_mixed(conn):
        pick = random.Random(6)
        for _ in range(sum(len(v) for v in sent.values())):
            while True:
                if pick.random() < 0.5:
                    sid, data = await conn.receive_message()
                    break
                sid = pick.randrange(4)
                try:
                    data = await asyncio.wait_for(conn.receive_message(sid), 0.05)
                    break
                except asyncio.TimeoutError:
                    continue
            await conn.send_message(sid, data)
        await conn.wait_closed()

    async def main():
        async with await aio.serve("127.0.0.1", 0, echo_mixed, **small) as server:
            relay = make_relay(server.address, seed=3, loss=0.02, reorder=0.05, delay=0.001)
            async with await aio.connect(*relay.address, server_key=server.identity.public,
                                         **small) as conn:
                async def send(sid):
                    for m in sent[sid]:
                        await conn.send_message(sid, m)

                async def check(sid):
                    for m in sent[sid]:
                        assert await conn.receive_message(sid) == m

                await asyncio.wait_for(asyncio.gather(*(send(s) for s in sent),
                                                      *(check(s) for s in sent)), 60)

    run(main)
