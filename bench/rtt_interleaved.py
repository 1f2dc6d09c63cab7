"""Sequential 32-byte round trips, interleaved: blocks of the raw blocking UDP ping-pong, of
the blocking ``DQUIC`` client and of a ``dquic.aio`` client, one after the other, so that
every kind meets the same load on a shared machine (``test_bench_loopback_peers.py`` runs its
cases one after the other, seconds apart, and a busy neighbour can slow one and not the next).

``python bench/rtt_interleaved.py [--rounds 15] [--block 1000]`` starts a ``udp-echo`` and a
``dquic-echo`` peer (``loopback_peer.py``) pinned to the second CPU, pins itself to the first
(on a machine with two or more), then runs ``rounds`` times a block of each kind and prints
the median rate of each kind and the ratio of the dquic medians to the ping-pong's, and the
median CPU time per round trip of the client process and (on Linux, from ``/proc``) of the
peer that answered. The peers are ended (or killed) whatever happens; every wait has a
timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
MSG = b"x" * 32


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu]})


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from ``/proc`` (Linux), or 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _peer(*args: str):
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = (lambda: os.sched_setaffinity(0, {cpus[1]})) if len(cpus) >= 2 else None
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "loopback_peer.py"), *args],
                            stdout=subprocess.PIPE, text=True, preexec_fn=pin)
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"peer {args} did not start")
    return proc, int(line[1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=1000, help="round trips per block")
    args = ap.parse_args(argv)
    from dquic.sync import DQUIC
    import dquic.aio as aio

    procs = []
    try:
        udp, udp_port = _peer("udp-echo")
        procs.append(udp)
        echo, echo_port = _peer("dquic-echo")
        procs.append(echo)
        _pin(0)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.settimeout(1.0)
        raw.connect(("127.0.0.1", udp_port))
        dest = ("127.0.0.1", echo_port)
        loop = asyncio.new_event_loop()
        with raw, DQUIC(linger=1.0) as d:
            d.settimeout(30)
            d.send_to(dest, {0: MSG})  # handshakes outside the timed blocks
            d.receive_from(100)
            conn = loop.run_until_complete(asyncio.wait_for(aio.connect(*dest), 10))

            def ping_pong() -> float:
                t0 = time.perf_counter()
                for _ in range(args.block):
                    raw.send(MSG)
                    raw.recv(64)
                return args.block / (time.perf_counter() - t0)

            def sync() -> float:
                msg = {0: MSG}
                t0 = time.perf_counter()
                for _ in range(args.block):
                    d.send_to(dest, msg)
                    d.receive_from(100)
                return args.block / (time.perf_counter() - t0)

            async def asyncio_block() -> float:
                t0 = time.perf_counter()
                for _ in range(args.block):
                    await conn.send_message(0, MSG)
                    await conn.receive_message(0)
                return args.block / (time.perf_counter() - t0)

            def run_aio() -> float:
                return loop.run_until_complete(asyncio.wait_for(asyncio_block(), 60))

            run_aio()  # the asyncio connection's first exchange
            kinds = (("ping-pong", ping_pong, udp), ("sync", sync, echo), ("asyncio", run_aio, echo))
            rates: dict = {k: [] for k, _, _ in kinds}
            cpu: dict = {k: ([], []) for k, _, _ in kinds}  # us per round trip: client, peer
            for _ in range(args.rounds):
                for kind, block, peer in kinds:
                    c0, p0 = time.process_time(), _cpu(peer.pid)
                    rates[kind].append(block())
                    cpu[kind][0].append((time.process_time() - c0) * 1e6 / args.block)
                    cpu[kind][1].append((_cpu(peer.pid) - p0) * 1e6 / args.block)
            med = {k: statistics.median(v) for k, v in rates.items()}
            us = {k: (statistics.median(c), statistics.median(p)) for k, (c, p) in cpu.items()}
            print(f"round trips/s, medians of {args.rounds} interleaved blocks of {args.block}: "
                  f"ping-pong {med['ping-pong']:.0f}, DQUIC {med['sync']:.0f} "
                  f"({med['sync'] / med['ping-pong']:.3f}), dquic.aio {med['asyncio']:.0f} "
                  f"({med['asyncio'] / med['ping-pong']:.3f})")
            print("CPU per round trip, client / peer (us): " + ", ".join(
                f"{name} {us[k][0]:.0f} / {us[k][1]:.0f}"
                for k, name in (("ping-pong", "ping-pong"), ("sync", "DQUIC"), ("asyncio", "dquic.aio"))))
            loop.run_until_complete(asyncio.wait_for(conn.send_message(0, b"bye"), 10))
            loop.run_until_complete(asyncio.wait_for(conn.receive_message(0), 10))
            conn.close()
            loop.run_until_complete(asyncio.wait_for(conn.wait_closed(), 10))
            loop.close()
            for _ in range(5):
                raw.send(b"E")  # ends the udp-echo peer
    finally:
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


if __name__ == "__main__":
    main()
