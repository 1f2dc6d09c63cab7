"""Transport-core throughput: client->server bulk transfer between two sans-IO connections in one
process, no sockets, no simulator, a minimal pump loop. Compared with aioquic's sans-IO
``QuicConnection`` pair moving the same bytes the same way.

Run: ``python3 -m pytest bench/test_bench_core.py --benchmark-only -s``
(``DQUIC_BENCH_PACKETS`` sets the transfer size in 1200-byte payloads; default 20000).

Each case reports ``packets_per_s`` (client->server datagrams per second of wall time, the whole
loop on one core: both endpoints, ACK processing, application reads) and ``payload_gbit_s``
(application bytes delivered per second) in ``extra_info``. aioquic always encrypts (TLS 1.3
keys, its default cipher suite), so compare it with the ``encrypted`` dquic case.
"""
from __future__ import annotations

import datetime
import os
import time

import pytest

from dquic.config import Configuration
from dquic.keys import KeyPair
from dquic.testing.pairs import core_pair, exchange, run_due_timers

PAYLOAD = 1200                   # stream bytes per packet the transfer is sized in
MDS = 1252                       # datagram size that fits 1200 stream bytes in a dquic packet
PACKETS = int(os.environ.get("DQUIC_BENCH_PACKETS", "20000"))
CHUNK = 64 * PAYLOAD             # bytes per application write
IN_FLIGHT = 4 << 20              # application back-pressure: unacknowledged bytes at most
ROUNDS = 3
STEP = 0.0001                    # virtual time per loop iteration
MAX_ITERATIONS = 10_000_000      # every loop is bounded

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _report(benchmark, results, label):
    best = min(results, key=lambda r: r[2])
    packets, delivered, elapsed = best
    pps = packets / elapsed
    gbit = delivered * 8 / elapsed / 1e9
    benchmark.extra_info.update(packets=packets, bytes=delivered, seconds=round(elapsed, 4),
                                packets_per_s=round(pps), payload_gbit_s=round(gbit, 3))
    print(f"\n{label}: {packets} packets, {pps:,.0f} packets/s, {gbit:.3f} Gbit/s payload "
          f"(best of {len(results)})")
    return pps


# ------------------------------------------------------------------------------------- dquic
def _dquic_pair(encryption):
    window = dict(initial_max_data=64 << 20, max_data_window=64 << 20,
                  initial_max_stream_data=64 << 20, max_stream_data_window=64 << 20)
    client, server = core_pair(
        Configuration(encryption=encryption, pacing=False, max_datagram_size=MDS, mtu_discovery=False,
                      **window),
        Configuration(is_client=False, encryption=encryption, identity=KeyPair.generate(),
                      pacing=False, max_datagram_size=MDS, **window), C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20, step=0.0,
                   until=lambda: client.is_established and server.is_established)
    assert client.is_established and server.is_established
    return client, server, now


def _dquic_transfer(client, server, now, total):
    """Move ``total`` bytes; returns (client->server datagrams, bytes delivered, seconds)."""
    sent = got = packets = 0
    block = bytes(CHUNK)
    t0 = time.perf_counter()
    for _ in range(MAX_ITERATIONS):
        if got >= total:
            break
        if sent < total and client.send_buffered < IN_FLIGHT:
            client.send_message(1, block)
            sent += CHUNK
        now += STEP
        run_due_timers(now, client, server)  # the same timer handling as the aioquic loop
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
            packets += 1
        for sid in server.readable_streams():
            while True:
                piece = server.read_message(sid, 1 << 20)
                if piece is None:
                    break
                got += len(piece[0])
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
    elapsed = time.perf_counter() - t0
    assert got >= total, f"transfer stalled at {got} of {total} bytes"
    return packets, got, elapsed


@pytest.mark.parametrize("encryption", [False, True], ids=["plain", "encrypted"])
def test_bench_core_bulk(benchmark, encryption):
    total = PACKETS * PAYLOAD
    results = []

    def setup():
        return _dquic_pair(encryption), {}

    def run(client, server, now):
        results.append(_dquic_transfer(client, server, now, total))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    pps = _report(benchmark, results, f"dquic {'encrypted' if encryption else 'plain'}")
    assert pps > 0


# ------------------------------------------------------------------------------------- aioquic
def _self_signed():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=36500))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    return cert, key


def aioquic_handshake(ccfg, scfg, rounds, step):
    """An aioquic client (configuration ``ccfg``) and server (``scfg``, made when the first
    datagram arrives) exchanging datagrams, ``step`` seconds of virtual time apart, until both
    completed the handshake: ``(client, server, now)``; AssertionError after ``rounds``."""
    from aioquic.quic.connection import QuicConnection

    client = QuicConnection(configuration=ccfg)
    server = None
    now = 0.0
    client.connect(S_ADDR, now=now)
    for _ in range(rounds):
        for d, _ in client.datagrams_to_send(now=now):
            if server is None:
                server = QuicConnection(configuration=scfg,
                                        original_destination_connection_id=client.original_destination_connection_id)
            server.receive_datagram(d, C_ADDR, now=now)
        if server is not None:
            for d, _ in server.datagrams_to_send(now=now):
                client.receive_datagram(d, S_ADDR, now=now)
        if client._handshake_complete and server is not None and server._handshake_complete:
            return client, server, now
        now += step
    raise AssertionError("aioquic handshake did not complete")


def _aioquic_pair():
    from aioquic.quic.configuration import QuicConfiguration

    cert, key = _self_signed()
    common = dict(alpn_protocols=["bench"], max_datagram_size=MDS, max_data=64 << 20,
                  max_stream_data=64 << 20)
    ccfg = QuicConfiguration(is_client=True, verify_mode=0, server_name="localhost", **common)
    scfg = QuicConfiguration(is_client=False, **common)
    scfg.certificate = cert
    scfg.private_key = key
    client, server, now = aioquic_handshake(ccfg, scfg, 50, STEP)
    while client.next_event() is not None:
        pass
    while server.next_event() is not None:
        pass
    return client, server, now


def _aioquic_transfer(client, server, now, total):
    from aioquic.quic.events import StreamDataReceived

    sid = client.get_next_available_stream_id()
    sent = got = packets = 0
    block = bytes(CHUNK)
    t0 = time.perf_counter()
    for _ in range(MAX_ITERATIONS):
        if got >= total:
            break
        if sent < total and sent - got < IN_FLIGHT:
            client.send_stream_data(sid, block)
            sent += CHUNK
        now += STEP
        run_due_timers(now, client, server)  # as the dquic loop does
        for d, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(d, C_ADDR, now=now)
            packets += 1
        while True:
            ev = server.next_event()
            if ev is None:
                break
            if isinstance(ev, StreamDataReceived):
                got += len(ev.data)
        for d, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(d, S_ADDR, now=now)
        while client.next_event() is not None:
            pass
    elapsed = time.perf_counter() - t0
    assert got >= total, f"aioquic transfer stalled at {got} of {total} bytes"
    return packets, got, elapsed


def test_bench_core_bulk_aioquic(benchmark):
    try:
        import aioquic  # noqa: F401
    except ImportError:
        pytest.skip("aioquic is not installed (pip install aioquic, the 'bench' extra): "
                    "no comparison figure")
    total = PACKETS * PAYLOAD
    results = []

    def setup():
        return _aioquic_pair(), {}

    def run(client, server, now):
        results.append(_aioquic_transfer(client, server, now, total))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    pps = _report(benchmark, results, f"aioquic {aioquic.__version__}")
    assert pps > 0
