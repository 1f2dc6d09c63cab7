"""Loopback comparison, one run: dquic (blocking DQUIC API, encrypted), raw UDP, and the
bench-only QUIC stacks aioquic and qh3 (asyncio API, TLS 1.3, raw streams), client and server in
separate processes on 127.0.0.1.

Run: ``python -m pytest bench/test_bench_loopback_peers.py --benchmark-only -s``. The cases:

* bulk goodput on one connection, handshake done beforehand, timed from the first bulk send
  until the receiver's reply that every byte arrived: ``BULK`` bytes (512 MiB, long enough
  for the steady rate to dominate the start; environment ``DQUIC_BENCH_BULK`` changes it; the
  QUIC stacks, some 25 times slower, move ``LIB_BULK`` = 64 MiB, which takes them longer
  still) on 1 stream (``Mbit_s_1``) and spread over 8 streams
  (``Mbit_s_8``; dquic: 1 MiB messages round-robin over stream ids 0..7, the QUIC stacks: 64 KiB
  writes round-robin over 8 streams);
* 32-byte request / echo round trips per second on 1 stream (``round_trips_s``: dquic's
  client is the blocking ``DQUIC``, ``send_to`` then ``receive_from``; ``round_trips_aio_s``:
  a ``dquic.aio.connect`` client, ``await send_message`` then ``await receive_message`` on
  one stream, against the same ``dquic-echo`` peer; ``RTTS`` = 2,000 of them, environment
  ``DQUIC_BENCH_RTTS`` changes it, and the raw ping-pong makes at least as many), and with
  32 requests in flight (``requests_s_32``: 32 streams, one outstanding request each, every
  reply sends the next request on its stream; completed requests per second);
* new connections per second (``connections_s``) against one long-lived server process: each
  iteration a fresh client that connects, does one 32-byte echo and closes (the QUIC stacks'
  clients send their CONNECTION_CLOSE and do not wait out the closing period; dquic's ``close``
  does not either: it returns once its CONNECTION_CLOSE is sent, and its I/O thread waits for
  the server's answer, so that a lost close is sent again: PROTOCOL.md §19); dquic also from one reused client socket (``connections_reused_s``,
  ``dquic.aio.open_client``: a connection, an echo and a close per iteration);
* new connections per second with ``CONCURRENT`` (32) at once (``connections_concurrent_s``,
  dquic only): 32 ``dquic.aio.open_client`` sockets in this process, each making connection,
  32-byte echo and close in a loop, ``CONCURRENT_CONNECTIONS`` (2,000) in all, against the same
  server process (the handshake rate a server sees from many clients; one socket each, as
  ``DQUIC`` keeps one connection per peer address); ``server_cpu_us`` in its ``extra_info`` is
  the server process's CPU per connection;
* raw UDP, the kernel floor: a ``sendto`` loop of 1200-byte datagrams (sender rate, as
  ``Mbit_s_1``) and a blocking 32-byte ping-pong between two processes (``round_trips_s``).
* the floor of a connection made after another (``test_connection_floor``, rows "floor,
  blocking" and "floor, polling"): the three round trips a dquic connection needs one after the
  other (handshake, request, answered close) and the four X25519 exchanges on that chain, with
  nothing else: raw UDP, a ``udp-handshake-echo`` peer, a fresh socket per connection
  (``connections_s``) and one socket (``connections_reused_s``), both sides sleeping in
  ``recv`` or both spinning on non-blocking sockets. No implementation of this handshake
  makes sequential connections faster than this on the same machine.
  The ping-pong's rate depends mostly on where the scheduler puts the two processes: on one
  CPU a round trip is a pair of direct context switches (over 100,000/s), on two CPUs each
  wake-up crosses cores (about 15,000/s on a 2-core machine); ``last_cpus`` in its
  ``extra_info`` records where they ran. The other cases are subject to the same effect, so
  every case runs with the same placement: ``DQUIC_BENCH_CPUS`` (``split``, the default: this
  process on one CPU and every peer on another; ``shared``; ``free``), as in
  ``test_bench_loopback.py``, recorded as ``cpu_placement``.

Each figure goes into its benchmark's ``extra_info``; one summary table is printed at the end.
aioquic / qh3 cases skip when the package is not importable. Every peer process is killed in a
``finally`` and every wait has a timeout.
"""
from __future__ import annotations

import asyncio
import datetime
import importlib
import os
import socket
import subprocess
import sys
import time

import pytest

import test_bench_loopback as base
from test_bench_loopback import _record_placement, pinned  # noqa: F401 (autouse fixtures)

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_PEER = os.path.join(HERE, "quic_lib_peer.py")
BULK = int(os.environ.get("DQUIC_BENCH_BULK", 512 << 20))
LIB_BULK = min(BULK, 64 << 20)
RTTS = int(os.environ.get("DQUIC_BENCH_RTTS", 2000))  # sequential round trips
REQUESTS = 30_000  # completed requests with 32 in flight
IN_FLIGHT = 32
CONNECTIONS = 200
CONCURRENT = 32  # client sockets making connections at once (connections_concurrent_s)
CONCURRENT_CONNECTIONS = 2000
UDP_DATAGRAMS = BULK // 1200  # the raw loop moves as many bytes as the bulk cases
UDP_PINGS = max(5000, RTTS)
MSG = b"x" * 32
TABLE: dict = {}
COLUMNS = (("Mbit_s_1", "bulk 1 stream Mbit/s", "{:.0f}"), ("Mbit_s_8", "bulk 8 streams", "{:.0f}"),
           ("round_trips_s", "round trips/s", "{:.0f}"),
           ("round_trips_aio_s", "round trips/s asyncio", "{:.0f}"),
           ("requests_s_32", "32 in flight req/s", "{:.0f}"),
           ("connections_s", "connections/s", "{:.0f}"),
           ("connections_reused_s", "conns/s one socket", "{:.0f}"),
           ("connections_concurrent_s", f"conns/s {CONCURRENT} at once", "{:.0f}"))


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    widths = [max(len(title), 8) for _, title, _ in COLUMNS]
    print("\n\n" + f"{'implementation':<16}" + "".join(f"  {t:>{w}}" for (_, t, _), w in zip(COLUMNS, widths)))
    for name in ("dquic", "raw UDP", "floor, blocking", "floor, polling", "aioquic", "qh3"):
        row = TABLE.get(name, {})
        cells = ("-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in COLUMNS)
        print(f"{name:<16}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))


def _note(benchmark, name, key, value):
    benchmark.extra_info[key] = value
    TABLE.setdefault(name, {})[key] = value
    print(f"\n{name} {key}={value:.1f}")


# ----------------------------------------------------------------------------------------------
# dquic
@pytest.mark.parametrize("streams", [1, 8])
def test_dquic_bulk(benchmark, streams):
    res = {}
    benchmark.pedantic(lambda: res.update(base._bulk(False, streams, BULK)), rounds=1, iterations=1)
    benchmark.extra_info.update(packets_lost=res["packets_lost"], seconds=res["seconds"])
    _note(benchmark, "dquic", f"Mbit_s_{streams}", res["goodput_MBps"] * 8)


def _once_against(benchmark, kind, body):
    """The benchmark's one round: a fresh ``kind`` peer process, ``body(peer)`` (which returns
    the figure and, last, tells the peer to end), the peer's exit; the peer is killed whatever
    happens. Returns the figure."""
    res = {}

    def run():
        peer = base.Peer(*kind.split())
        try:
            res["v"] = body(peer)
            peer.finish(30)
        finally:
            peer.kill()

    benchmark.pedantic(run, rounds=1, iterations=1)
    return res["v"]


def _say_bye(d, dest):
    """What ends a ``dquic-echo`` peer: a "bye" message, answered."""
    d.send_to(dest, {0: b"bye"})
    d.receive_from(100)


@pytest.mark.parametrize("in_flight", [1, IN_FLIGHT])
def test_dquic_rtt(benchmark, in_flight):
    from dquic.sync import DQUIC

    def body(peer):
        with DQUIC(linger=5.0) as d:
            d.settimeout(30)
            dest = ("127.0.0.1", peer.port)
            d.send_to(dest, {0: MSG})  # handshake outside the timed region
            d.receive_from(100)
            if in_flight == 1:
                msg = {0: MSG}
                t0 = time.perf_counter()
                for _ in range(RTTS):
                    d.send_to(dest, msg)
                    _, back = d.receive_from(100)
                    assert back == msg, back
                rate = RTTS / (time.perf_counter() - t0)
            else:
                done = 0
                issued = in_flight
                t0 = time.perf_counter()
                d.send_to(dest, {sid: MSG for sid in range(in_flight)})
                while done < REQUESTS:
                    _, back = d.receive_from(1 << 16)
                    nxt = {}
                    for sid, data in back.items():
                        assert data == MSG, (sid, data)
                        done += 1
                        if issued < REQUESTS:
                            nxt[sid] = MSG
                            issued += 1
                    if nxt:
                        d.send_to(dest, nxt)
                rate = REQUESTS / (time.perf_counter() - t0)
            _say_bye(d, dest)
        return rate

    rate = _once_against(benchmark, "dquic-echo", body)
    _note(benchmark, "dquic", "round_trips_s" if in_flight == 1 else "requests_s_32", rate)


def test_dquic_aio_rtt(benchmark):
    """Sequential round trips from a ``dquic.aio`` client, written as its users would: one
    connection, ``await send_message`` then ``await receive_message`` on one stream."""
    import dquic.aio as aio

    async def loop(dest):
        async with await aio.connect(*dest) as conn:
            await conn.send_message(0, MSG)  # handshake outside the timed region
            await conn.receive_message(0)
            t0 = time.perf_counter()
            for _ in range(RTTS):
                await conn.send_message(0, MSG)
                back = await conn.receive_message(0)
                assert back == MSG, back
            rate = RTTS / (time.perf_counter() - t0)
            await conn.send_message(0, b"bye")
            await conn.receive_message(0)
            return rate

    rate = _once_against(benchmark, "dquic-echo",
                         lambda peer: asyncio.run(asyncio.wait_for(loop(("127.0.0.1", peer.port)), 120)))
    _note(benchmark, "dquic", "round_trips_aio_s", rate)


def test_dquic_connections(benchmark):
    from dquic.sync import DQUIC

    def body(peer):
        dest = ("127.0.0.1", peer.port)
        t0 = time.perf_counter()
        for _ in range(CONNECTIONS):
            with DQUIC() as d:
                d.settimeout(10)
                d.send_to(dest, {0: b"x"})
                _, back = d.receive_from(100)
                assert back == {0: b"x"}, back
        rate = CONNECTIONS / (time.perf_counter() - t0)
        with DQUIC(linger=5.0) as d:
            d.settimeout(10)
            _say_bye(d, dest)
        return rate

    _note(benchmark, "dquic", "connections_s", _once_against(benchmark, "dquic-echo", body))


def test_dquic_connections_reused(benchmark):
    """New connections per second from one client socket (``dquic.aio.open_client``): each
    iteration a new connection, one 32-byte echo, close; the socket and driver are reused."""
    import dquic.aio as aio

    async def loop(dest):
        async with await aio.open_client() as client:
            for _ in range(20):  # warm-up
                await _one_connection(client, dest)
            t0 = time.perf_counter()
            for _ in range(CONNECTIONS):
                await _one_connection(client, dest)
            rate = CONNECTIONS / (time.perf_counter() - t0)
            conn = await client.connect(*dest)
            await conn.send_message(0, b"bye")
            await conn.receive_message(0)
            return rate

    async def _one_connection(client, dest):
        conn = await client.connect(*dest)
        await conn.send_message(0, MSG)
        assert await conn.receive_message(0) == MSG
        conn.close()
        await conn.wait_closed()

    rate = _once_against(benchmark, "dquic-echo",
                         lambda peer: asyncio.run(asyncio.wait_for(loop(("127.0.0.1", peer.port)), 120)))
    _note(benchmark, "dquic", "connections_reused_s", rate)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's CPU from /proc")
def test_dquic_connections_concurrent(benchmark):
    """New connections per second with ``CONCURRENT`` client sockets at once, each making a
    connection, an echo and a close in turn; the server process's CPU per connection too."""
    import dquic.aio as aio

    async def loop(peer):
        dest = ("127.0.0.1", peer.port)
        made = 0

        async def client_loop():
            nonlocal made
            async with await aio.open_client() as client:
                while made < CONCURRENT_CONNECTIONS:
                    made += 1
                    conn = await client.connect(*dest)
                    await conn.send_message(0, MSG)
                    assert await conn.receive_message(0) == MSG
                    conn.close()
                    await conn.wait_closed()

        cpu0 = base._cpu_seconds(peer.proc.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(CONCURRENT)))
        rate = made / (time.perf_counter() - t0)
        benchmark.extra_info["server_cpu_us"] = round((base._cpu_seconds(peer.proc.pid) - cpu0) / made * 1e6)
        print(f"\ndquic server CPU per connection, {CONCURRENT} at once: "
              f"{benchmark.extra_info['server_cpu_us']} us")
        async with await aio.open_client() as client:
            conn = await client.connect(*dest)
            await conn.send_message(0, b"bye")
            await conn.receive_message(0)
        return rate

    rate = _once_against(benchmark, "dquic-echo",
                         lambda peer: asyncio.run(asyncio.wait_for(loop(peer), 120)))
    _note(benchmark, "dquic", "connections_concurrent_s", rate)


# ----------------------------------------------------------------------------------------------
# raw UDP
def test_raw_udp_sendto(benchmark):
    res = {}

    def run():
        elapsed, n, _, _ = base.udp_sendto_loop(UDP_DATAGRAMS)
        res["mbit"] = UDP_DATAGRAMS * 1200 * 8 / elapsed / 1e6
        res["received_pct"] = 100.0 * n / UDP_DATAGRAMS

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["received_pct"] = res["received_pct"]
    _note(benchmark, "raw UDP", "Mbit_s_1", res["mbit"])


def _last_cpu(pid: int):
    """The CPU ``pid`` last ran on (Linux ``/proc/<pid>/stat`` field 39), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def test_raw_udp_ping_pong(benchmark):
    res = {}

    def body(peer):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.connect(("127.0.0.1", peer.port))
        send, recv = s.send, s.recv
        lost = 0
        t0 = time.perf_counter()
        for _ in range(UDP_PINGS):
            send(MSG)
            while True:  # loopback rarely drops; resend after a 1 s silence (bounded)
                try:
                    recv(64)
                    break
                except socket.timeout:
                    lost += 1
                    if lost > 10:
                        raise
                    send(MSG)
        rate = UDP_PINGS / (time.perf_counter() - t0)
        res["lost"] = lost
        res["cpus"] = (_last_cpu(os.getpid()), _last_cpu(peer.proc.pid))
        for _ in range(5):
            send(b"E")
        s.close()
        return rate

    rate = _once_against(benchmark, "udp-echo", body)
    benchmark.extra_info["timeouts"] = res["lost"]
    benchmark.extra_info["last_cpus"] = res["cpus"]
    print(f"\nraw UDP ping-pong: client and echo process last ran on CPUs {res['cpus']}")
    _note(benchmark, "raw UDP", "round_trips_s", rate)


@pytest.mark.parametrize("wait", ["blocking", "polling"])
def test_connection_floor(benchmark, wait):
    """The floor of one connection after another, with no protocol work at all: three UDP
    round trips between the two processes (a handshake, one request, a close that is answered)
    and the four X25519 exchanges a handshake needs one after the other (the server's two
    before it answers the first datagram, the client's two before its second; ephemeral keys
    made ahead, as dquic does). ``connections_s``: a fresh socket per connection;
    ``connections_reused_s``: one socket. ``blocking`` sleeps in ``recv`` on both sides;
    ``polling`` spins on non-blocking sockets on both sides, yielding the CPU between tries
    (the most a driver that polls can get)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    poll = wait == "polling"
    name = f"floor, {wait}"
    ephemeral = X25519PrivateKey.generate()
    first = b"I" + ephemeral.public_key().public_bytes_raw()
    server_key = X25519PublicKey.from_public_bytes(X25519PrivateKey.generate().public_key().public_bytes_raw())

    def recv(s):
        if not poll:
            return s.recv(2048)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                return s.recv(2048)
            except BlockingIOError:
                os.sched_yield()  # as dquic's drivers do when they poll
        raise TimeoutError("no answer within 5 s")

    def one(s, dest):
        s.sendto(first, dest)
        answer = recv(s)
        ephemeral.exchange(server_key)  # ee and es, as the client's reply handling does
        ephemeral.exchange(server_key)
        s.sendto(MSG, dest)
        recv(s)
        s.sendto(answer[:30], dest)
        recv(s)

    def new_socket():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.0 if poll else 5.0)
        return s

    def body(peer):
        dest = ("127.0.0.1", peer.port)
        rates = {}
        for _ in range(50):  # warm-up
            with new_socket() as s:
                one(s, dest)
        t0 = time.perf_counter()
        for _ in range(CONNECTIONS * 5):
            with new_socket() as s:
                one(s, dest)
        rates["connections_s"] = CONNECTIONS * 5 / (time.perf_counter() - t0)
        with new_socket() as s:
            t0 = time.perf_counter()
            for _ in range(CONNECTIONS * 5):
                one(s, dest)
            rates["connections_reused_s"] = CONNECTIONS * 5 / (time.perf_counter() - t0)
            for _ in range(5):
                s.sendto(b"E", dest)
        return rates

    rates = _once_against(benchmark, "udp-handshake-echo" + (" --poll" if poll else ""), body)
    for key, rate in rates.items():
        _note(benchmark, name, key, rate)


# ----------------------------------------------------------------------------------------------
# aioquic / qh3
@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
           .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("cert")
    (d / "c.pem").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return str(d / "c.pem"), str(d / "k.pem")


def _lib_peer(lib, mode, cert):
    proc = subprocess.Popen([sys.executable, LIB_PEER, lib, mode, *cert], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=base._pin_peer)
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"{lib} peer failed: {proc.stderr.read()}")
    return proc, int(line[1])


class _Lib:
    """One QUIC stack's client side: configuration, protocol class, connect/close."""

    def __init__(self, lib):
        self.mod = importlib.import_module(f"{lib}.asyncio")
        self.events = importlib.import_module(f"{lib}.quic.events")
        self.connection = importlib.import_module(f"{lib}.quic.connection").QuicConnection
        self.config = importlib.import_module(f"{lib}.quic.configuration").QuicConfiguration(
            is_client=True, alpn_protocols=["bench"], verify_mode=0, server_name="localhost",
            max_data=1 << 30, max_stream_data=1 << 30)
        stream_data = self.events.StreamDataReceived

        class Client(self.mod.QuicConnectionProtocol):
            on_data = None  # (stream_id, data, end_stream) callback, set per case

            def quic_event_received(self, event):
                if isinstance(event, stream_data) and self.on_data is not None:
                    self.on_data(event.stream_id, event.data, event.end_stream)

        self.client_class = Client

    async def connect(self, port):
        """Handshake with 127.0.0.1:port; returns (protocol, transport)."""
        loop = asyncio.get_running_loop()
        quic = self.connection(configuration=self.config)
        transport, proto = await loop.create_datagram_endpoint(
            lambda: self.client_class(quic), local_addr=("127.0.0.1", 0))
        try:
            proto.connect(("127.0.0.1", port))
            await asyncio.wait_for(proto.wait_connected(), 10)
        except BaseException:
            transport.close()
            raise
        return proto, transport

    @staticmethod
    def close(proto, transport):
        """Send CONNECTION_CLOSE and release the socket (no wait for the closing period)."""
        proto.close()
        transport.close()


async def _lib_bulk(lib: _Lib, port: int, streams: int) -> float:
    proto, transport = await lib.connect(port)
    try:
        quic = proto._quic
        replies = []
        arrived = asyncio.Event()

        def on_data(sid, data, end):
            if data:
                replies.append(data)
            if len(replies) == streams:
                arrived.set()

        proto.on_data = on_data
        sids = [4 * i for i in range(streams)]  # client-initiated bidirectional streams
        per_stream = LIB_BULK // streams
        chunk = os.urandom(1 << 16)
        t0 = time.perf_counter()
        for off in range(0, per_stream, len(chunk)):
            n = min(len(chunk), per_stream - off)
            last = off + n >= per_stream
            for sid in sids:
                quic.send_stream_data(sid, chunk[:n] if n < len(chunk) else chunk, end_stream=last)
                proto.transmit()
                await asyncio.sleep(0)
        await asyncio.wait_for(arrived.wait(), 120)
        elapsed = time.perf_counter() - t0
        assert sum(int(r.split()[1]) for r in replies) == per_stream * streams, replies
        return per_stream * streams * 8 / elapsed / 1e6
    finally:
        lib.close(proto, transport)


async def _lib_rtt(lib: _Lib, port: int, in_flight: int) -> float:
    proto, transport = await lib.connect(port)
    try:
        quic = proto._quic
        total = RTTS if in_flight == 1 else REQUESTS
        pending = {}  # stream id -> bytes of the current echo received so far
        state = {"done": 0, "issued": 0}
        finished = asyncio.Event()

        def on_data(sid, data, end):
            pending[sid] += len(data)
            if pending[sid] < len(MSG):
                return
            pending[sid] = 0
            state["done"] += 1
            if state["done"] >= total:
                finished.set()
            elif state["issued"] < total:
                state["issued"] += 1
                quic.send_stream_data(sid, MSG)  # sent by the protocol's transmit after events

        # one echo before timing: the handshake's last packets and the first stream's setup
        first = asyncio.Event()
        proto.on_data = lambda sid, data, end: first.set()
        quic.send_stream_data(0, MSG)
        proto.transmit()
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.sleep(0)
        proto.on_data = on_data
        sids = [4 * i for i in range(1, in_flight + 1)]
        t0 = time.perf_counter()
        for sid in sids:
            pending[sid] = 0
            state["issued"] += 1
            quic.send_stream_data(sid, MSG)
        proto.transmit()
        await asyncio.wait_for(finished.wait(), 60)
        return total / (time.perf_counter() - t0)
    finally:
        lib.close(proto, transport)


async def _lib_connections(lib: _Lib, port: int) -> float:
    t0 = time.perf_counter()
    for _ in range(CONNECTIONS):
        proto, transport = await lib.connect(port)
        try:
            got = []
            echoed = asyncio.Event()

            def on_data(sid, data, end, got=got, echoed=echoed):
                got.append(data)
                if sum(map(len, got)) >= len(MSG):
                    echoed.set()

            proto.on_data = on_data
            proto._quic.send_stream_data(0, MSG)
            proto.transmit()
            await asyncio.wait_for(echoed.wait(), 10)
        finally:
            lib.close(proto, transport)
    return CONNECTIONS / (time.perf_counter() - t0)


LIB_CASES = {
    "bulk1": ("sink", "Mbit_s_1", lambda lib, port: _lib_bulk(lib, port, 1)),
    "bulk8": ("sink", "Mbit_s_8", lambda lib, port: _lib_bulk(lib, port, 8)),
    "rtt1": ("echo", "round_trips_s", lambda lib, port: _lib_rtt(lib, port, 1)),
    "rtt32": ("echo", "requests_s_32", lambda lib, port: _lib_rtt(lib, port, IN_FLIGHT)),
    "connections": ("echo", "connections_s", _lib_connections),
}


@pytest.mark.parametrize("lib", ["aioquic", "qh3"])
@pytest.mark.parametrize("case", list(LIB_CASES))
def test_quic_lib(benchmark, cert, lib, case):
    try:
        client = _Lib(lib)
    except ImportError as exc:
        pytest.skip(f"{lib} not importable: {exc}")
    mode, key, body = LIB_CASES[case]
    res = {}

    def run():
        proc, port = _lib_peer(lib, mode, cert)
        try:
            res["v"] = asyncio.run(asyncio.wait_for(body(client, port), 150))
        finally:
            proc.kill()
            proc.wait(10)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _note(benchmark, lib, key, res["v"])
