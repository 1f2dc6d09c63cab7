"""The ``bench`` command: loopback throughput and round trips, with a raw UDP baseline measured in
the same run."""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from typing import Dict, List, TextIO, Tuple

from .._version import __version__
from ._common import EXIT_OK, _bound_address, _mbit, _ms, _size

def _bench_udp(seconds: float, size: int) -> Tuple[float, float]:
    """Raw UDP on loopback: ``(datagrams/s sent, datagrams/s received)`` for ``seconds``."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (rx, tx):
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                except OSError:
                    pass
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        addr = rx.getsockname()
        count = [0]
        stop = threading.Event()

        def receive() -> None:
            buf = bytearray(65536)
            n = 0
            while not stop.is_set():
                try:
                    rx.recv_into(buf)
                    n += 1
                except (socket.timeout, OSError):
                    continue
            count[0] = n

        t = threading.Thread(target=receive, name="dquic-bench-udp", daemon=True)
        t.start()
        payload = os.urandom(size)
        sent = 0
        sendto = tx.sendto
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(256):
                try:
                    sendto(payload, addr)
                    sent += 1
                except OSError:
                    pass
            if time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - t0
        stop.set()
        t.join(2.0)
        return sent / elapsed, count[0] / elapsed
    finally:
        rx.close()
        tx.close()


def _bench_bulk(seconds: float, size: int, encryption: bool) -> Dict[str, float]:
    """DQUIC client -> server bulk transfer of ``size``-byte messages for ``seconds``."""
    from ..sync import DQUIC

    server = DQUIC(encryption=encryption, linger=0.0)
    client = DQUIC(encryption=encryption, linger=0.0)
    stop = threading.Event()
    errors: List[BaseException] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.2)
        client.settimeout(5.0)
        target = _bound_address(server)
        client.send_to(target, {1: b"start"})  # handshake outside the measurement
        server.settimeout(5.0)
        server.receive_from(65536)
        server.settimeout(0.2)
        message = os.urandom(size)
        batch = {sid: message for sid in range(1, 9)}

        conn = client.connections[0]
        high_water = 4 << 20

        def send() -> None:
            # keep at most ~high_water bytes unacknowledged: the figure is what was delivered,
            # not what was queued (polled, so the measurement does not depend on how blocking
            # send_to wakes up)
            try:
                while not stop.is_set():
                    if conn.send_buffered > high_water:
                        time.sleep(0.0005)
                        continue
                    client.send_to(target, batch)
            except BaseException as exc:
                if not stop.is_set():
                    errors.append(exc)

        t = threading.Thread(target=send, name="dquic-bench-sender", daemon=True)
        received = 0
        t0 = time.perf_counter()
        t.start()
        end = t0 + seconds
        while time.perf_counter() < end:
            if errors:
                raise errors[0]
            try:
                _, msgs = server.receive_from(1 << 20)
            except TimeoutError:
                continue
            for v in msgs.values():
                received += len(v)
        elapsed = time.perf_counter() - t0
        stats = client.connections[0].stats
        return {"bytes": received, "seconds": elapsed, "mbit": _mbit(received, elapsed),
                "packets": stats.packets_sent, "lost": stats.packets_lost,
                "rtt": stats.smoothed_rtt}
    finally:
        stop.set()
        client.close(abandon=True)  # a benchmark stops mid-transfer on purpose
        server.close(abandon=True)


def _bench_rtt(seconds: float, size: int, encryption: bool) -> Dict[str, float]:
    """Request/response of ``size`` bytes each way, one at a time, for ``seconds``."""
    from ..sync import DQUIC

    server = DQUIC(encryption=encryption, linger=0.0)
    client = DQUIC(encryption=encryption, linger=0.0)
    stop = threading.Event()
    try:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.2)
        client.settimeout(5.0)

        def echo() -> None:
            while not stop.is_set():
                try:
                    peer, msgs = server.receive_from(1 << 20)
                except (TimeoutError, OSError):
                    continue
                try:
                    server.send_to(peer, msgs)
                except OSError:
                    return

        t = threading.Thread(target=echo, name="dquic-bench-echo", daemon=True)
        t.start()
        target = _bound_address(server)
        request = {1: os.urandom(size)}
        client.send_to(target, request)  # handshake outside the measurement
        client.receive_from(1 << 20)
        samples: List[float] = []
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            a = time.perf_counter()
            if a >= end and samples:  # at least one round trip, however short the time
                break
            client.send_to(target, request)
            got = 0
            while got < size:
                _, msgs = client.receive_from(1 << 20)
                got += sum(len(v) for v in msgs.values())
            samples.append(time.perf_counter() - a)
        elapsed = time.perf_counter() - t0
        samples.sort()
        return {"count": len(samples), "per_second": len(samples) / elapsed,
                "median": statistics.median(samples),
                "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}
    finally:
        stop.set()
        client.close(abandon=True)  # a benchmark stops mid-transfer on purpose
        server.close(abandon=True)


def run_bench(args: argparse.Namespace, out: TextIO) -> int:
    """The ``bench`` command: a table of loopback figures measured in this run."""
    seconds, size = args.seconds, args.size
    encryption = not args.no_encryption
    out.write(f"dquic {__version__} bench: loopback 127.0.0.1, {seconds:g} s per test, "
              f"{size}-byte payloads, encryption {'on' if encryption else 'OFF'}\n")
    out.flush()
    sent_rate, recv_rate = _bench_udp(seconds, size)
    bulk = _bench_bulk(seconds, size, encryption)
    rtt = _bench_rtt(seconds, size, encryption)
    rows = [
        ("raw UDP sendto (baseline)", f"{sent_rate:,.0f} datagrams/s sent = "
                                      f"{_mbit(sent_rate * size, 1):,.0f} Mbit/s; "
                                      f"{recv_rate:,.0f}/s received"),
        ("dquic bulk, client->server", f"{bulk['mbit']:,.1f} Mbit/s goodput "
                                       f"({_size(bulk['bytes'])} in {bulk['seconds']:.2f} s, "
                                       f"{bulk['lost']} packets lost, rtt {_ms(bulk['rtt'])})"),
        ("dquic round trip", f"median {rtt['median'] * 1e6:,.0f} us, p99 {rtt['p99'] * 1e6:,.0f} us, "
                             f"{rtt['per_second']:,.0f} round trips/s"),
    ]
    width = max(len(r[0]) for r in rows)
    out.write(f"{'test'.ljust(width)}  result\n{'-' * width}  {'-' * 60}\n")
    for name, result in rows:
        out.write(f"{name.ljust(width)}  {result}\n")
    if sent_rate * size:
        out.write(f"dquic bulk goodput is {bulk['mbit'] / _mbit(sent_rate * size, 1):.1%} of the raw "
                  "UDP send rate\n")
    return EXIT_OK
