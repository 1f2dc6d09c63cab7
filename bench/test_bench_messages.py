"""Small messages through the public APIs: 64-byte messages all on one stream against each on a
new stream id, both in the same run, as an application would send and read them.

Run: ``python -m pytest bench/test_bench_messages.py --benchmark-only -s``. The cases:

* ``sync``: a blocking ``DQUIC`` client sends ``SYNC_MESSAGES`` messages with one ``send_to``
  each to a ``dquic-sink`` peer in another process (``loopback_peer.py``, which reads with
  ``receive_from(1 << 20)``: at most one message per stream per call); the rate is messages per
  second from the first ``send_to`` until the sink's reply that every byte arrived. The calls
  come in a burst, so their messages leave packed many to a datagram (``DQUIC``'s ``nodelay``
  is off), on a new id each as on one stream; the sink gives stream credit back in batches
  (PROTOCOL.md §16.7, *Credit*).
* ``asyncio``: a ``dquic.aio`` client and server on one event loop in this process; the client
  awaits ``send_message`` for each of ``AIO_MESSAGES`` messages, the server's handler awaits
  ``receive_message()`` for each; the rate is messages per second until the last one was read.

Each kind alternates the two shapes ``ROUNDS`` times and keeps the best of each; ``ratio`` (new
ids / one stream) goes into ``extra_info``. ``bench/test_bench_many_streams.py`` measures the
same comparison in the sans-IO core alone, where the per-id lifecycle weighs most. The
environment variables ``DQUIC_BENCH_SYNC_MESSAGES`` and ``DQUIC_BENCH_AIO_MESSAGES`` change the
counts. The sink peer is killed whatever happens; every wait has a timeout.
"""
from __future__ import annotations

import asyncio
import os
import time

import test_bench_loopback as base
from test_bench_loopback import _record_placement, pinned  # noqa: F401 (autouse fixtures)

SIZE = 64
SYNC_MESSAGES = int(os.environ.get("DQUIC_BENCH_SYNC_MESSAGES", "100000"))
AIO_MESSAGES = int(os.environ.get("DQUIC_BENCH_AIO_MESSAGES", "100000"))
ROUNDS = 2


def _sync_rate(many: bool) -> float:
    from dquic.sync import DQUIC

    peer = base.Peer("dquic-sink", str(SYNC_MESSAGES * SIZE))
    try:
        with DQUIC(linger=10.0) as d:
            d.settimeout(120)
            dest = ("127.0.0.1", peer.port)
            d.send_to(dest, {0: b"warm-up"})
            assert d.receive_from(100)[1] == {0: b"ready"}
            payload = bytes(SIZE)
            t0 = time.perf_counter()
            for i in range(SYNC_MESSAGES):
                d.send_to(dest, {(10 + i) if many else 1: payload})
            _, reply = d.receive_from(1000)
            elapsed = time.perf_counter() - t0
        assert reply[0].split()[2] == str(SYNC_MESSAGES * SIZE).encode()
        peer.finish(30)
    finally:
        peer.kill()
    return SYNC_MESSAGES / elapsed


async def _aio_transfer(many: bool) -> float:
    import dquic.aio as aio

    got = 0
    done = asyncio.get_running_loop().create_future()

    async def handler(conn):
        nonlocal got
        while True:
            await conn.receive_message()
            got += 1
            if got == AIO_MESSAGES + 1 and not done.done():
                done.set_result(None)

    async with await aio.serve("127.0.0.1", 0, handler) as server:
        host, port = server.address
        async with await aio.connect(host, port, server_key=server.identity.public) as conn:
            await conn.send_message(0, b"warm-up")
            for _ in range(500):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert got == 1
            payload = bytes(SIZE)
            t0 = time.perf_counter()
            for i in range(AIO_MESSAGES):
                await conn.send_message((10 + i) if many else 1, payload)
            await asyncio.wait_for(done, 120)
            return AIO_MESSAGES / (time.perf_counter() - t0)


def _compare(benchmark, rate, count: int, kind: str) -> None:
    one, many = [], []

    def run():
        for _ in range(ROUNDS):
            one.append(rate(False))
            many.append(rate(True))

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = max(many) / max(one)
    benchmark.extra_info.update(messages=count, one_stream_msgs_per_s=round(max(one)),
                                new_id_msgs_per_s=round(max(many)), ratio=round(ratio, 3))
    print(f"\n{kind}: {count} messages of {SIZE} B, one stream {max(one):,.0f}/s, a new id each "
          f"{max(many):,.0f}/s, ratio {ratio:.2f} (best of {ROUNDS}, alternated)")


def test_bench_messages_sync(benchmark):
    _compare(benchmark, _sync_rate, SYNC_MESSAGES, "DQUIC to a dquic-sink process")


def test_bench_messages_asyncio(benchmark):
    _compare(benchmark, lambda many: asyncio.run(_aio_transfer(many)), AIO_MESSAGES,
             "dquic.aio client and server on one loop")
