"""Benchmarks of the network simulator's own overhead.

Run with ``python -m pytest bench/test_bench_sim.py --benchmark-only -s``; each benchmark also
prints a per-datagram figure.
"""
from __future__ import annotations

import struct
import time

import pytest

from dquic.testing import LinkConfig, Network, SinkNode

A = ("192.0.2.1", 4433)
B = ("198.51.100.7", 50000)

_PN = struct.Struct("!Q")


class Firehose:
    """Returns ``count`` datagrams from its first ``datagrams_to_send`` call; cheapest possible
    sender, so the measurement is dominated by the simulator."""

    def __init__(self, dest, count, size=1200):
        self.items = [(b"x" * size, dest)] * count

    def receive_datagram(self, data, addr, now):
        pass

    def datagrams_to_send(self, now):
        items, self.items = self.items, []
        return items

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


class BulkSender:
    """A minimal reliable bulk sender: fixed window, packet-threshold loss detection (3 packets,
    as RFC 9002 §6.1.1), a probe timer, retransmission under fresh packet numbers."""

    def __init__(self, dest, total_bytes, size=1200, window=400, pto=0.2):
        self.dest = dest
        self.size = size
        self.chunks = -(-total_bytes // size)
        self.done_flags = bytearray(self.chunks)
        self.done_count = 0
        self.next_chunk = 0
        self.next_pn = 0
        self.unacked = {}  # pn -> (chunk, send time), insertion (= pn) order
        self.retx = []
        self.window = window
        self.pto = pto
        self.largest_acked = -1
        self.payload = b"\x00" * (size - 8)

    @property
    def finished(self):
        return self.done_count == self.chunks

    def receive_datagram(self, data, addr, now):
        unacked = self.unacked
        for (pn,) in _PN.iter_unpack(data):
            entry = unacked.pop(pn, None)
            if entry is not None and not self.done_flags[entry[0]]:
                self.done_flags[entry[0]] = 1
                self.done_count += 1
            if pn > self.largest_acked:
                self.largest_acked = pn
        threshold = self.largest_acked - 3
        for pn in list(unacked):
            if pn >= threshold:
                break
            chunk, _ = unacked.pop(pn)
            if not self.done_flags[chunk]:
                self.retx.append(chunk)

    def datagrams_to_send(self, now):
        out = []
        unacked = self.unacked
        room = self.window - len(unacked)
        dest = self.dest
        while room > 0:
            if self.retx:
                chunk = self.retx.pop()
                if self.done_flags[chunk]:
                    continue
            elif self.next_chunk < self.chunks:
                chunk = self.next_chunk
                self.next_chunk += 1
            else:
                break
            pn = self.next_pn
            self.next_pn += 1
            unacked[pn] = (chunk, now)
            out.append((_PN.pack(pn) + self.payload, dest))
            room -= 1
        return out

    def get_timer(self):
        if not self.unacked:
            return None
        return next(iter(self.unacked.values()))[1] + self.pto

    def handle_timer(self, now):
        # Probe timeout: everything older than one PTO is presumed lost.
        for pn, (chunk, sent) in list(self.unacked.items()):
            if sent + self.pto > now:
                break
            del self.unacked[pn]
            if not self.done_flags[chunk]:
                self.retx.append(chunk)


class Acker:
    """Acknowledges every second datagram (listing the packet numbers since the last ACK), or
    after a 25 ms delayed-ACK timer."""

    def __init__(self):
        self.pending = []
        self.peer = None
        self.ack_at = None
        self.out = []
        self.received = 0

    def receive_datagram(self, data, addr, now):
        self.received += 1
        self.peer = addr
        self.pending.append(data[:8])
        if len(self.pending) >= 2:
            self._flush()
        elif self.ack_at is None:
            self.ack_at = now + 0.025

    def _flush(self):
        self.out.append((b"".join(self.pending), self.peer))
        self.pending = []
        self.ack_at = None

    def datagrams_to_send(self, now):
        out, self.out = self.out, []
        return out

    def get_timer(self):
        return self.ack_at

    def handle_timer(self, now):
        if self.pending:
            self._flush()
        self.ack_at = None


def run_transfer(total_bytes, loss=0.01, seed=1):
    net = Network(seed=seed)
    sender = net.add_node(BulkSender(B, total_bytes), A)
    receiver = net.add_node(Acker(), B)
    forward = LinkConfig(delay=0.020, bandwidth=100e6, queue_limit=600_000, loss=loss)
    net.link(A, B, forward, LinkConfig(delay=0.020, loss=loss))
    net.run(until=lambda: sender.finished, max_time=600.0)
    return net, sender, receiver


def test_bench_sim_transfer_64mib_1pct_loss(benchmark):
    """64 MiB over 100 Mbit/s, 40 ms RTT, 1% loss each way, with a toy reliable sender."""
    result = {}

    def go():
        t0 = time.perf_counter()
        net, sender, receiver = run_transfer(64 * 1024 * 1024)
        result["wall"] = time.perf_counter() - t0
        result["net"] = net

    benchmark.pedantic(go, rounds=1, iterations=1)
    net = result["net"]
    datagrams = sum(s.sent for s in net.stats().values())
    print(
        f"\n64 MiB @1% loss: {datagrams} datagrams, {net.events_processed} events, "
        f"virtual {net.now:.2f}s, wall {result['wall']:.2f}s, "
        f"{result['wall'] / datagrams * 1e6:.2f} us/datagram (including the toy endpoints)"
    )
    assert result["wall"] < 10.0


@pytest.mark.parametrize("impaired", [False, True], ids=["plain", "impaired"])
def test_bench_sim_firehose(benchmark, impaired):
    """Simulator cost per datagram with trivial endpoints: one send + one delivery each."""
    n = 100_000
    cfg = (
        LinkConfig(delay=0.02, bandwidth=1e9, loss=0.01, jitter=0.001, reorder=0.01,
                   duplicate=0.001)
        if impaired
        else LinkConfig(delay=0.02)
    )

    def go():
        net = Network(seed=1)
        net.add_node(SinkNode(record=False), B)
        net.add_node(Firehose(B, n), A)
        net.link(A, B, cfg)
        net.run()
        return net

    net = benchmark.pedantic(go, rounds=3, iterations=1)
    per = benchmark.stats.stats.mean / n * 1e6
    print(f"\nfirehose ({'impaired' if impaired else 'plain'}): {per:.2f} us/datagram")
    assert net.link_stats(A, B).sent == n
