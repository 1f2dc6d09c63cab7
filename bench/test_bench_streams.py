"""Benchmarks of the compiled range set and stream reassembly against pure-Python baselines.

Run: ``python3 -m pytest bench/test_bench_streams.py --benchmark-only``.
"""
import bisect
import random

import pytest

from dquic._ranges import RangeSet
from dquic._streams import RecvStream, SendStream, message_prefix


class PyRangeSet:
    """Straightforward pure-Python range set (list of [start, stop] plus bisect)."""

    def __init__(self):
        self.starts = []
        self.stops = []

    def add(self, start, stop=None):
        if stop is None:
            stop = start + 1
        if self.stops and start > self.stops[-1]:
            self.starts.append(start)
            self.stops.append(stop)
            return
        if self.stops and start >= self.starts[-1]:
            if stop > self.stops[-1]:
                self.stops[-1] = stop
            return
        i = bisect.bisect_left(self.stops, start)
        j = i
        while j < len(self.starts) and self.starts[j] <= stop:
            j += 1
        if i < j:
            start = min(start, self.starts[i])
            stop = max(stop, self.stops[j - 1])
        self.starts[i:j] = [start]
        self.stops[i:j] = [stop]


class PyReassembly:
    """Pure-Python receive buffer: dict of pieces, contiguous delivery, message framing."""

    def __init__(self):
        self.pieces = {}
        self.data = bytearray()
        self.offset = 0

    def insert(self, offset, data):
        self.pieces[offset] = data
        while self.offset in self.pieces:
            d = self.pieces.pop(self.offset)
            self.data += d
            self.offset += len(d)

    def read_messages(self):
        out = []
        buf = self.data
        pos = 0
        while pos < len(buf):
            size = 1 << (buf[pos] >> 6)
            if pos + size > len(buf):
                break
            length = buf[pos] & 0x3F
            for k in range(1, size):
                length = (length << 8) | buf[pos + k]
            if pos + size + length > len(buf):
                break
            out.append(bytes(buf[pos + size:pos + size + length]))
            pos += size + length
        del buf[:pos]
        return out


N_PACKETS = 20000


def _ack_pattern():
    rng = random.Random(7)
    # mostly ascending packet numbers with ~2% gaps and a few reordered arrivals
    pns = [pn for pn in range(N_PACKETS) if rng.random() > 0.02]
    for _ in range(200):
        i = rng.randrange(len(pns) - 3)
        pns[i], pns[i + 2] = pns[i + 2], pns[i]
    return pns


PNS = _ack_pattern()


@pytest.mark.parametrize("impl", ["compiled", "python"])
def test_bench_rangeset_ack_tracking(benchmark, impl):
    cls = RangeSet if impl == "compiled" else PyRangeSet

    def run():
        r = cls()
        for pn in PNS:
            r.add(pn)
        return r

    r = benchmark(run)
    assert len(r.starts if impl == "python" else r) > 100


MESSAGES = [bytes([i % 251]) * (100 + (i * 37) % 1200) for i in range(2000)]
WIRE = b"".join(message_prefix(len(m)) + m for m in MESSAGES)
MTU = 1200
PIECES = [(o, WIRE[o:o + MTU]) for o in range(0, len(WIRE), MTU)]
_rng = random.Random(3)
for _i in range(0, len(PIECES) - 4, 4):
    _j = _i + _rng.randrange(4)
    PIECES[_i], PIECES[_j] = PIECES[_j], PIECES[_i]


@pytest.mark.parametrize("impl", ["compiled", "python"])
def test_bench_reassembly_messages(benchmark, impl):
    def run_compiled():
        r = RecvStream(0, len(WIRE) + 1)
        got = 0
        for off, data in PIECES:
            r.insert(off, data)
            while True:
                m = r.read_message(1 << 20)
                if m is None:
                    break
                got += m[1]
        return got

    def run_python():
        r = PyReassembly()
        got = 0
        for off, data in PIECES:
            r.insert(off, data)
            got += len(r.read_messages())
        return got

    got = benchmark(run_compiled if impl == "compiled" else run_python)
    assert got == len(MESSAGES)
    benchmark.extra_info["bytes"] = len(WIRE)


def test_bench_send_chunks_and_acks(benchmark):
    def run():
        s = SendStream(0, max_buffer=0)
        for m in MESSAGES:
            s.write_message(m)
        n = 0
        while True:
            c = s.next_chunk(MTU, 1 << 62)
            if c is None:
                break
            s.on_acked(c[0], len(c[1]), c[2])
            n += 1
        return n

    assert benchmark(run) == len(PIECES)
    benchmark.extra_info["bytes"] = len(WIRE)
