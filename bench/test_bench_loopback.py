"""Loopback benchmarks of the blocking DQUIC API against raw UDP, sender and receiver in
separate processes.

Run: ``python -m pytest bench/test_bench_loopback.py --benchmark-only -s``. Each case prints its
figure (goodput in MB/s = 10**6 bytes/s, or round trips per second) and stores it in the
benchmark's ``extra_info``:

* ``raw_udp``: a ``sendto`` loop of 1200-byte datagrams (what the kernel path alone allows;
  the receiver's rate is what arrived, drops included);
* ``dquic_bulk`` / ``dquic_bulk_plain``: 1 MiB messages client -> server, encrypted / without
  packet protection, handshake done beforehand, timed from the first bulk ``send_to`` until
  the server's reply that it received everything;
* ``dquic_bulk_cpu_per_packet``: the CPU each process spends per 1200-byte packet (path MTU
  discovery off), over ``CPU_PACKET_BYTES`` (256 MiB; ``DQUIC_BENCH_CPU_BYTES``): the
  sender's process time and the sink's (``/proc``) over the packets sent;
* ``dquic_rtt``: 32-byte request / echo round trips on one connection.

Where the two processes run decides much of a loopback figure (on one CPU a round trip is a
pair of direct context switches; on two, every wake-up crosses cores), so both are pinned, the
same way for every case and every implementation: ``DQUIC_BENCH_CPUS=split`` (the default on a
machine with two or more CPUs: the benchmark process on the first allowed CPU, the peer on the
second), ``shared`` (both on the first) or ``free`` (the scheduler decides, as before). The
placement is recorded in each case's ``extra_info``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dquic.sync import DQUIC

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loopback_peer.py")
BULK_BYTES = int(os.environ.get("DQUIC_BENCH_BULK", 32 << 20))
CPU_PACKET_BYTES = int(os.environ.get("DQUIC_BENCH_CPU_BYTES", 256 << 20))
UDP_DATAGRAMS = 50_000
ROUND_TRIPS = 2000
MB = 1e6


def _placement():
    """(name, CPUs of this process, CPUs of the peer); None: leave as the scheduler wants."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    mode = os.environ.get("DQUIC_BENCH_CPUS", "split" if len(allowed) >= 2 else "free")
    if mode not in ("split", "shared", "free"):
        raise ValueError(f"DQUIC_BENCH_CPUS must be split, shared or free, not {mode!r}")
    if mode == "free" or not allowed or (mode == "split" and len(allowed) < 2):
        return "free", None, None
    if mode == "split":
        return mode, {allowed[0]}, {allowed[1]}
    return mode, {allowed[0]}, {allowed[0]}


PLACEMENT, SELF_CPUS, PEER_CPUS = _placement()


def _pin_peer() -> None:  # runs in the peer process between fork and exec
    if PEER_CPUS is not None:
        os.sched_setaffinity(0, PEER_CPUS)


@pytest.fixture(scope="module", autouse=True)
def pinned():
    """Pin this process for the module's cases (restored afterwards)."""
    if SELF_CPUS is None:
        yield PLACEMENT
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, SELF_CPUS)
    try:
        yield PLACEMENT
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(autouse=True)
def _record_placement(request):
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is not None:
        bench.extra_info["cpu_placement"] = PLACEMENT


class Peer:
    """A loopback_peer.py process; ``port`` is where it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, PEER, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_pin_peer)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            self.proc.kill()
            raise RuntimeError(f"peer failed to start: {self.proc.stderr.read()}")
        self.port = int(line[1])

    def finish(self, timeout: float = 60) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode:
            raise RuntimeError(f"peer failed: {err}")
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _report(benchmark, name: str, **info) -> None:
    benchmark.extra_info.update(info)
    print(f"\n{name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in info.items()))


def udp_sendto_loop(count: int) -> tuple:
    """Send ``count`` 1200-byte datagrams in a plain ``sendto`` loop to a ``udp-sink`` peer,
    then its end marker; returns (seconds the loop took, datagrams and bytes the sink
    received, the sink's receive time in seconds)."""
    import socket

    peer = Peer("udp-sink")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        dest = ("127.0.0.1", peer.port)
        payload = b"\x00" * 1200
        sendto = s.sendto
        t0 = time.perf_counter()
        for _ in range(count):
            sendto(payload, dest)
        elapsed = time.perf_counter() - t0
        for _ in range(5):
            sendto(b"E", dest)
        s.close()
        _, n, nbytes, rx_time = peer.finish().split()
        return elapsed, int(n), int(nbytes), float(rx_time)
    finally:
        peer.kill()


def test_raw_udp_sendto_1200(benchmark):
    results = {}

    def run():
        elapsed, n, nbytes, rx_time = udp_sendto_loop(UDP_DATAGRAMS)
        results.update(send_MBps=UDP_DATAGRAMS * 1200 / elapsed / MB,
                       received_pct=100.0 * n / UDP_DATAGRAMS,
                       recv_MBps=nbytes / max(rx_time, 1e-9) / MB)

    benchmark.pedantic(run, rounds=3, iterations=1)
    _report(benchmark, "raw UDP sendto loop (1200 B)", **results)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bulk(plain: bool, streams: int = 1, total: int = 0, **options) -> dict:
    """Send ``total`` bytes (default ``BULK_BYTES``) to a ``dquic-sink`` peer as 1 MiB messages
    round-robin over stream ids ``0 .. streams-1``; return goodput, connection stats and the
    CPU each process spent (``sender_cpu``/``receiver_cpu`` seconds; the receiver's only on
    Linux, else None). ``options`` go to the sending ``DQUIC``.

    The handshake and one round trip (a warm-up message the sink answers) come before the
    timed region, which runs from the first bulk ``send_to`` until the sink's reply that it
    received every byte (the byte count is checked).
    """
    total = total or BULK_BYTES
    peer = Peer("dquic-sink", str(total), *(["--plain"] if plain else []))
    proc_stat = os.path.exists(f"/proc/{peer.proc.pid}/stat")
    try:
        with DQUIC(encryption=not plain, linger=10.0, **options) as d:
            d.settimeout(120)
            dest = ("127.0.0.1", peer.port)
            d.send_to(dest, {0: b"warm-up"})
            _, ready = d.receive_from(100)
            assert ready == {0: b"ready"}, ready
            chunk = memoryview(os.urandom(1 << 20))
            sent = i = 0
            rx0 = _cpu_seconds(peer.proc.pid) if proc_stat else 0.0
            c0 = time.process_time()
            t0 = time.perf_counter()
            while sent < total:
                n = min(len(chunk), total - sent)
                sent += d.send_to(dest, {i % streams: chunk[:n]})
                i += 1
            _, reply = d.receive_from(100)
            elapsed = time.perf_counter() - t0
            tx_cpu = time.process_time() - c0
            rx_cpu = _cpu_seconds(peer.proc.pid) - rx0 if proc_stat else None
            stats = d.connections[0].stats
        _, rx_time, got = reply[0].split()
        assert int(got) == total, (got, total)
        peer.finish()
        return dict(goodput_MBps=total / elapsed / MB, seconds=elapsed,
                    packets_lost=stats.packets_lost, cwnd=stats.cwnd, packets=stats.packets_sent,
                    sender_cpu=tx_cpu, receiver_cpu=rx_cpu)
    finally:
        peer.kill()


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_dquic_bulk_goodput(benchmark, plain):
    results = {}
    benchmark.pedantic(lambda: results.update(_bulk(plain)), rounds=3, iterations=1)
    _report(benchmark, f"dquic bulk {'plain' if plain else 'encrypted'} ({BULK_BYTES >> 20} MiB)", **results)


def test_dquic_bulk_cpu_per_packet(benchmark):
    """CPU per 1200-byte packet, each side: a bulk transfer with path MTU discovery off (every
    packet 1200 bytes), the sender's and the sink's process CPU over the packets sent. Both
    processes include their system calls (GSO/GRO) and I/O threads."""
    results = {}
    benchmark.pedantic(lambda: results.update(_bulk(False, 1, CPU_PACKET_BYTES, mtu_discovery=False)),
                       rounds=1, iterations=1)
    info = dict(goodput_Mbps=round(results["goodput_MBps"] * 8), packets=results["packets"],
                sender_us_per_packet=round(results["sender_cpu"] / results["packets"] * 1e6, 3))
    if results["receiver_cpu"] is not None:
        info["receiver_us_per_packet"] = round(results["receiver_cpu"] / results["packets"] * 1e6, 3)
    benchmark.extra_info.update(info)
    print(f"\ndquic bulk, 1200-byte packets ({CPU_PACKET_BYTES >> 20} MiB): "
          + ", ".join(f"{k}={v}" for k, v in info.items()))


def test_dquic_round_trips(benchmark):
    results = {}

    def run():
        peer = Peer("dquic-echo", str(ROUND_TRIPS + 1))
        try:
            with DQUIC(linger=5.0) as d:
                d.settimeout(60)
                dest = ("127.0.0.1", peer.port)
                msg = {1: b"x" * 32}
                d.send_to(dest, msg)  # handshake outside the timed loop
                d.receive_from(100)
                t0 = time.perf_counter()
                for _ in range(ROUND_TRIPS):
                    d.send_to(dest, msg)
                    _, back = d.receive_from(100)
                    assert back == msg
                elapsed = time.perf_counter() - t0
            peer.finish()
            results.update(round_trips_per_s=ROUND_TRIPS / elapsed, usec_per_rtt=elapsed / ROUND_TRIPS * 1e6)
        finally:
            peer.kill()

    benchmark.pedantic(run, rounds=3, iterations=1)
    _report(benchmark, "dquic round trips (32 B)", **results)
