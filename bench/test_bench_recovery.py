"""Benchmarks of the per-packet loss recovery path.

Run: ``python3 -m pytest bench/test_bench_recovery.py --benchmark-only``.
Each round sends 1000 packets and processes one ACK frame per 10 packets (cumulative range,
the two newest packets left for the next frame), as a bulk sender would.
"""
import pytest

from dquic._congestion import Cubic, NewReno
from dquic._recovery import APPLICATION, Recovery, SentPacket

PACKETS = 1000


def _run(cc_cls, lossy):
    cc = cc_cls(initial_window=1 << 24, maximum_window=1 << 26)
    cc.is_app_limited = True
    rec = Recovery(cc)
    now = 0.0
    pn = 0
    for _ in range(PACKETS // 10):
        for _ in range(10):
            rec.on_packet_sent(SentPacket(pn, APPLICATION, now, 1200))
            pn += 1
        now += 0.0005
        if lossy and pn >= 20:   # one hole per frame: a packet in ten reported missing, then lost
            ranges = [(pn - 20, pn - 11), (pn - 10, pn - 2)]
        else:
            ranges = [(0, pn - 2)]
        rec.on_ack_received(APPLICATION, ranges, 0.0, now + 0.05)
    return rec


@pytest.mark.parametrize("cc_cls", [Cubic, NewReno], ids=["cubic", "newreno"])
def test_bench_send_ack(benchmark, cc_cls):
    rec = benchmark(_run, cc_cls, False)
    assert rec.packets_acked >= PACKETS - 2


def test_bench_send_ack_lossy(benchmark):
    rec = benchmark(_run, Cubic, True)
    assert rec.packets_lost > 0
