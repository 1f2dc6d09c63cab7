"""Simulator speed with the real stack: a 64 MiB transfer at 1 % loss, wall time.

The transport-core issue's target is under 10 s of wall time for this scenario. Run with
``python -m pytest bench/test_bench_sim_transfer.py --benchmark-only``.
"""
from __future__ import annotations

import os

import pytest

from dquic.testing import LinkConfig
from dquic.testing.apps import make_pair, messages_digest

SIZE = 64 << 20


@pytest.mark.parametrize("encryption", [False, True], ids=["plain", "encrypted"])
def test_simulate_64mib_at_one_percent_loss(benchmark, encryption):
    data = os.urandom(SIZE)
    digest = messages_digest([data])

    def setup():
        link = LinkConfig(delay=0.005, loss=0.01, bandwidth=1e9, queue_limit=4_000_000)
        net, client, server, conn = make_pair(link, seed=1, encryption=encryption)
        server.keep_data = False
        conn.send_message(1, data)
        return (net, server), {}

    def transfer(net, server):
        net.run(until=lambda: server.count(1) == 1, max_time=3600)
        assert server.digest(1) == digest
        benchmark.extra_info["virtual_seconds"] = round(net.now, 3)
        benchmark.extra_info["events"] = net.events_processed

    benchmark.pedantic(transfer, setup=setup, rounds=2)
