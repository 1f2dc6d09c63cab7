"""Many stream ids: 100,000 messages of 64 bytes, each on a new stream id, against the same
messages on one stream, between two sans-IO connections in one process (no sockets), both in
the same run. Each id's half opens, is acknowledged, ends and gives its stream credit back
(PROTOCOL.md §16.7) while the sender stays within the peer's ``max_streams`` (default 1024) the
way the drivers do (``stream_open_blocked``), and with the connections set up as the drivers'
endpoints run them (``message_events`` off: ``move_events`` reports that something is readable,
no ``MessageReceived`` per stream).

Run: ``python3 -m pytest bench/test_bench_many_streams.py --benchmark-only -s``
(``DQUIC_BENCH_MESSAGES`` sets the message count; default 100000).

Target: the many-ids rate is at least half the one-stream rate (``ratio`` in ``extra_info``).
"""
from __future__ import annotations

import os
import time

from dquic.config import Configuration
from dquic.testing.pairs import core_pair, exchange

MESSAGES = int(os.environ.get("DQUIC_BENCH_MESSAGES", "100000"))
SIZE = 64
ROUNDS = 3
STEP = 0.0001                    # virtual time per loop iteration
PER_STEP = 512                   # messages the application writes per loop iteration at most
IN_FLIGHT = 4 << 20              # application back-pressure: unacknowledged bytes at most
MAX_ITERATIONS = 10_000_000      # every loop is bounded
TARGET = 0.5

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _pair():
    window = dict(initial_max_data=64 << 20, max_data_window=64 << 20)
    client, server = core_pair(Configuration(encryption=False, pacing=False, **window),
                               Configuration(is_client=False, encryption=False, pacing=False, **window),
                               C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20, step=0.0,
                   until=lambda: client.is_established and server.is_established)
    assert client.is_established and server.is_established
    # as the drivers' endpoints run them: which connection has something to read is a flag,
    # not a MessageReceived per stream (Endpoint(message_events=False))
    client.message_events = server.message_events = False
    return client, server, now


def _timers(conn, now):
    t = conn.get_timer()
    if t is not None and t <= now:
        conn.handle_timer(now)


def _transfer(client, server, now, many):
    """Send MESSAGES messages (on ids 10, 11, ... if ``many``, else all on id 1) and read them
    at the server; returns (seconds, stream objects at the end on each side, largest seen)."""
    payload = bytes(SIZE)
    moved = []
    sent = got = 0
    peak = 0
    t0 = time.perf_counter()
    for _ in range(MAX_ITERATIONS):
        if got >= MESSAGES:
            break
        n = 0
        while sent < MESSAGES and n < PER_STEP and client.send_buffered < IN_FLIGHT:
            sid = 10 + sent if many else 1
            if many and client.stream_open_blocked(sid):
                break
            client.send_message(sid, payload)
            sent += 1
            n += 1
        now += STEP
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        for sid in server.readable_streams():
            while True:
                piece = server.read_message(sid, 1 << 16)
                if piece is None:
                    break
                if piece[1]:
                    got += 1
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        _timers(client, now)
        _timers(server, now)
        # what a driver's endpoint takes after each step (its events, and the readable flag)
        client.move_events(moved)
        server.move_events(moved)
        moved.clear()
        peak = max(peak, len(server._streams))
    elapsed = time.perf_counter() - t0
    assert got == MESSAGES, f"stalled at {got} of {MESSAGES} messages"
    return elapsed, peak


def test_bench_new_stream_id_per_message(benchmark):
    one, many, peaks = [], [], []

    def setup():
        # the one-stream baseline is measured in the same round, just before
        client, server, now = _pair()
        one.append(_transfer(client, server, now, False)[0])
        return _pair(), {}

    def run(client, server, now):
        elapsed, peak = _transfer(client, server, now, True)
        many.append(elapsed)
        peaks.append(peak)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    rate_one = MESSAGES / min(one)
    rate_many = MESSAGES / min(many)
    ratio = rate_many / rate_one
    benchmark.extra_info.update(messages=MESSAGES, one_stream_msgs_per_s=round(rate_one),
                                new_id_msgs_per_s=round(rate_many), ratio=round(ratio, 3),
                                receiver_streams_peak=max(peaks))
    print(f"\n{MESSAGES} messages of {SIZE} B: one stream {rate_one:,.0f}/s, a new id each "
          f"{rate_many:,.0f}/s, ratio {ratio:.2f} (best of {ROUNDS}); receiver held at most "
          f"{max(peaks)} stream objects")
    assert ratio >= TARGET, f"many-ids rate is {ratio:.2f} of the one-stream rate"
