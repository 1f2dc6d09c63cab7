"""Loopback comparison, one run: dquic (blocking DQUIC API, encrypted), raw UDP ``sendto``, and
the bench-only QUIC stacks aioquic and qh3 (asyncio API, TLS, raw streams), client and server
in separate processes on 127.0.0.1.

Run: ``python -m pytest bench/test_bench_loopback_peers.py --benchmark-only -s``. Each case
stores ``Mbit_s`` (bulk goodput on one connection/stream) or ``round_trips_s`` (32-byte echo)
in ``extra_info``; a summary table is printed at the end. aioquic / qh3 cases skip when the
package is not importable.
"""
from __future__ import annotations

import asyncio
import datetime
import importlib
import os
import subprocess
import sys
import time

import pytest

import test_bench_loopback as base

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_PEER = os.path.join(HERE, "quic_lib_peer.py")
BULK = 16 << 20
RTTS = 1000
TABLE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    print("\n\nimplementation   bulk Mbit/s   round trips/s")
    for name in ("dquic", "raw UDP", "aioquic", "qh3"):
        row = TABLE.get(name, {})
        bulk = row.get("Mbit_s")
        rt = row.get("round_trips_s")
        bulk_s = "-" if bulk is None else f"{bulk:.1f}"
        rt_s = "-" if rt is None else f"{rt:.0f}"
        print(f"{name:<16} {bulk_s:>11}   {rt_s:>13}")


def _note(benchmark, name, key, value):
    benchmark.extra_info[key] = value
    TABLE.setdefault(name, {})[key] = value
    print(f"\n{name} {key}={value:.1f}")


def test_dquic_bulk(benchmark):
    base.BULK_BYTES = BULK
    res = {}
    benchmark.pedantic(lambda: res.update(base._bulk(False)), rounds=1, iterations=1)
    _note(benchmark, "dquic", "Mbit_s", res["goodput_MBps"] * 8)


def test_dquic_rtt(benchmark):
    from dquic.sync import DQUIC
    res = {}

    def run():
        peer = base.Peer("dquic-echo", str(RTTS + 1))
        try:
            with DQUIC(linger=5.0) as d:
                d.settimeout(30)
                dest = ("127.0.0.1", peer.port)
                msg = {1: b"x" * 32}
                d.send_to(dest, msg)
                d.receive_from(100)
                t0 = time.perf_counter()
                for _ in range(RTTS):
                    d.send_to(dest, msg)
                    d.receive_from(100)
                res["rt"] = RTTS / (time.perf_counter() - t0)
            peer.finish()
        finally:
            peer.kill()

    benchmark.pedantic(run, rounds=1, iterations=1)
    _note(benchmark, "dquic", "round_trips_s", res["rt"])


def test_raw_udp(benchmark):
    import socket
    res = {}

    def run():
        peer = base.Peer("udp-sink")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dest = ("127.0.0.1", peer.port)
            payload = b"\0" * 1200
            n = 20_000
            t0 = time.perf_counter()
            for _ in range(n):
                s.sendto(payload, dest)
            res["mbit"] = n * 1200 * 8 / (time.perf_counter() - t0) / 1e6
            for _ in range(5):
                s.sendto(b"E", dest)
            s.close()
            peer.finish()
        finally:
            peer.kill()

    benchmark.pedantic(run, rounds=1, iterations=1)
    _note(benchmark, "raw UDP", "Mbit_s", res["mbit"])


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
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"{lib} peer failed: {proc.stderr.read()}")
    return proc, int(line[1])


async def _lib_client(lib, mode, port):
    mod = importlib.import_module(f"{lib}.asyncio")
    events = importlib.import_module(f"{lib}.quic.events")
    config = importlib.import_module(f"{lib}.quic.configuration").QuicConfiguration(
        is_client=True, alpn_protocols=["bench"], verify_mode=0, max_data=1 << 30, max_stream_data=1 << 30)
    got = asyncio.Queue()

    class Client(mod.QuicConnectionProtocol):
        def quic_event_received(self, event):
            if isinstance(event, events.StreamDataReceived) and event.data:
                got.put_nowait(event.data)

    async with mod.connect("127.0.0.1", port, configuration=config, create_protocol=Client) as c:
        quic = c._quic
        sid = quic.get_next_available_stream_id()
        if mode == "sink":
            chunk = os.urandom(1 << 16)
            t0 = time.perf_counter()
            for off in range(0, BULK, len(chunk)):
                quic.send_stream_data(sid, chunk, end_stream=off + len(chunk) >= BULK)
                c.transmit()
                await asyncio.sleep(0)
            reply = await asyncio.wait_for(got.get(), 30)
            assert reply == b"done %d" % BULK, reply
            return BULK * 8 / (time.perf_counter() - t0) / 1e6
        msg = b"x" * 32
        t0 = time.perf_counter()
        for _ in range(RTTS):
            quic.send_stream_data(sid, msg)
            c.transmit()
            n = 0
            while n < len(msg):
                n += len(await asyncio.wait_for(got.get(), 10))
        return RTTS / (time.perf_counter() - t0)


@pytest.mark.parametrize("lib", ["aioquic", "qh3"])
@pytest.mark.parametrize("mode", ["sink", "echo"], ids=["bulk", "rtt"])
def test_quic_lib(benchmark, cert, lib, mode):
    try:
        importlib.import_module(f"{lib}.asyncio")
    except ImportError as exc:
        pytest.skip(f"{lib} not importable: {exc}")
    res = {}

    def run():
        proc, port = _lib_peer(lib, mode, cert)
        try:
            res["v"] = asyncio.run(asyncio.wait_for(_lib_client(lib, mode, port), 60))
        finally:
            proc.kill()
            proc.wait(10)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _note(benchmark, lib, "Mbit_s" if mode == "sink" else "round_trips_s", res["v"])
