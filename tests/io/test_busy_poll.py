"""Busy polling in the drivers, over real sockets on loopback: a waiting call polls the socket
for the budget before it sleeps (``DQUIC`` in ``Drive._busy_wait``, ``dquic.aio`` in its offload
transport), the budget learns from how waits end, and ``busy_poll=0`` turns it off. The policy
itself is tested in ``tests/test_busypoll.py``."""
from __future__ import annotations

import asyncio
import threading

import pytest

import dquic.aio as aio
from dquic._busypoll import BusyPoll
from dquic.sync import DQUIC

pytestmark = pytest.mark.timeout(60)

ROUND_TRIPS = 20


class _Counting(BusyPoll):
    """A BusyPoll that counts how the waits it was told of ended."""

    __slots__ = ("log",)

    def __init__(self, limit: float) -> None:
        super().__init__(limit)
        self.log = []

    def caught(self) -> None:
        self.log.append("caught")
        super().caught()

    def contended(self) -> None:
        self.log.append("contended")
        super().contended()

    def slept(self, waited) -> None:
        self.log.append(waited)
        super().slept(waited)


def _echo_thread(server: DQUIC, count: int) -> threading.Thread:
    def run():
        for _ in range(count):
            peer, data = server.receive_from(1 << 16)
            server.send_to(peer, data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sync_waiting_call_catches_answers_by_polling(make_dquic):
    server = make_dquic(busy_poll=0)
    client = make_dquic(bind=None)
    # a budget no loopback answer needs more than: every wait of the client polls until the
    # answer is there
    client._drive.busy = bp = _Counting(0.01)  # noqa: SLF001 - white-box
    echo = _echo_thread(server, ROUND_TRIPS + 1)
    addr = server.local_address
    client.send_to(addr, {0: b"hello"})  # the handshake first
    assert client.receive_from(100)[1] == {0: b"hello"}
    del bp.log[:]
    for i in range(ROUND_TRIPS):
        msg = {i % 3: b"x" * (i + 1)}
        client.send_to(addr, msg)
        assert client.receive_from(100)[1] == msg
    echo.join(10)
    # every wait polls until the answer is there, unless the machine is so busy that a yield
    # let another task run (then the budget drops to 0 and grows back over the next waits)
    polled = bp.log.count("caught") + bp.log.count("contended")
    assert polled >= ROUND_TRIPS // 4, bp.log


def test_sync_polling_stops_when_nothing_answers(make_dquic):
    import socket

    d = make_dquic(busy_poll=0.0005, timeout=0.003)
    bp = d._drive.busy  # noqa: SLF001 - white-box
    assert bp.budget == 0.0005
    # waits after nothing was sent do not poll: the budget is untouched
    for _ in range(3):
        with pytest.raises(TimeoutError):
            d.receive_from(100)
    assert bp.budget == 0.0005
    # each wait after a handshake's first datagram to a socket that never answers polls for
    # nothing, and halves the budget
    holes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(6)]
    try:
        for hole in holes:
            hole.bind(("127.0.0.1", 0))
            with pytest.raises(TimeoutError):  # (it waits for the handshake)
                d.send_to(hole.getsockname(), {0: b"anyone?"})
    finally:
        for hole in holes:
            hole.close()
    assert bp.budget == 0.0


def test_sync_busy_poll_off(make_dquic):
    server = make_dquic(busy_poll=0)
    client = make_dquic(bind=None, busy_poll=None)
    assert client._drive.busy.limit == 0.0 and client._drive.busy.budget == 0.0  # noqa: SLF001
    echo = _echo_thread(server, 3)
    for i in range(3):
        client.send_to(server.local_address, {1: b"%d" % i})
        assert client.receive_from(100)[1] == {1: b"%d" % i}
    echo.join(10)


def test_busy_poll_option_is_checked():
    with pytest.raises(ValueError):
        DQUIC(busy_poll=-1)
    with pytest.raises(TypeError):
        DQUIC(busy_poll="1ms")

    async def main():
        with pytest.raises(ValueError):
            await aio.connect("127.0.0.1", 9, busy_poll=1.0)

    asyncio.run(main())


try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None,
                                                                    reason="uvloop not installed"))]


def _run_on(kind, coroutine):
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coroutine, 30))
    finally:
        loop.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_aio_waits_poll_and_learn(kind):
    async def echo(conn):
        while True:
            sid, data = await conn.receive_message()
            await conn.send_message(sid, data)

    async def main():
        async with await aio.serve("127.0.0.1", 0, echo, busy_poll=0) as server:
            async with await aio.connect(*server.address, server_key=server.identity.public,
                                         busy_poll=0.01) as conn:
                transport = conn._driver.transport  # noqa: SLF001 - white-box
                if not hasattr(transport, "_busy"):
                    pytest.skip("the loop has no add_reader: no offload transport, no polling")
                transport._busy = bp = _Counting(0.01)
                for i in range(ROUND_TRIPS):
                    await conn.send_message(i % 4, b"y" * (i + 1))
                    assert await conn.receive_message(i % 4) == b"y" * (i + 1)
                polled = bp.log.count("caught") + bp.log.count("contended")
                assert polled >= ROUND_TRIPS // 4, bp.log

    _run_on(kind, main())


class _Quiet:
    """The least a protocol needs to own an offload transport; nothing ever arrives."""

    def __init__(self, busy_poll):
        self.options = {"busy_poll": busy_poll}
        self.received = 0

    def connection_made(self, transport):
        self.transport = transport

    def segments_received(self, batch):
        self.received += len(batch)

    def unreachable(self, items):
        pass

    def connection_lost(self, exc):
        pass


@pytest.mark.parametrize("kind", LOOPS)
def test_aio_polling_stops_when_nothing_answers(kind):
    import socket

    from dquic._socket import UDPSocket
    from dquic.aio._driver import _OffloadTransport

    async def main():
        loop = asyncio.get_running_loop()
        sock = UDPSocket(socket.AF_INET, 1 << 16)
        sock.bind(("127.0.0.1", 0))
        proto = _Quiet(0.0005)
        transport = _OffloadTransport(loop, sock, proto)
        try:
            bp = transport._busy  # noqa: SLF001 - white-box
            assert bp.budget == 0.0005
            for _ in range(6):
                transport._begin_wait()  # (what a send does)
                await asyncio.sleep(0.003)  # polling ends, then the wait sleeps
                assert not transport._polling
            assert bp.budget == 0.0
            # off: a send starts no polling at all
            off = _Quiet(0)
            sock2 = UDPSocket(socket.AF_INET, 1 << 16)
            sock2.bind(("127.0.0.1", 0))
            t2 = _OffloadTransport(loop, sock2, off)
            t2.sendto(b"z", sock.local_address)
            assert not t2._polling and t2._busy.limit == 0.0
            t2.close()
            await asyncio.sleep(0.01)
            assert proto.received == 1  # the datagram arrived, while nothing polled for it
        finally:
            transport.close()
            await asyncio.sleep(0)

    _run_on(kind, main())
