"""The stream table of a connection (``StreamSet``: a hash index over entries kept in the order
ids were added) and the reuse of released stream state, driven through two sans-IO connections:
ids of every size, reused at random, opened and released by the thousand."""
from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from dquic.config import Configuration
from dquic.testing.pairs import core_pair, exchange, run_due_timers

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)
MAX_ID = (1 << 62) - 1


def _pair(max_streams=1024):
    client, server = core_pair(
        Configuration(encryption=False, max_streams=max_streams),
        Configuration(is_client=False, encryption=False, max_streams=max_streams), C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20,
                   until=lambda: client.is_established and server.is_established)
    assert client.is_established and server.is_established
    return client, server, now


def _read_all(conn, got):
    for sid in conn.readable_streams():
        while True:
            piece = conn.read_message(sid, 1 << 16)
            if piece is None:
                break
            assert piece[1]
            got.setdefault(sid, []).append(piece[0])
    conn.take_events()


def _check(conn):
    """The table's own invariants, and the mapping view agreeing with it."""
    live, used, usable, slots = conn._sset._table_state()
    view = conn._streams
    keys = list(view)
    assert len(keys) == len(set(keys)) == len(view) == live
    for sid in keys:
        assert sid in view and view[sid].stream_id == sid
    return live, usable


def _run(client, server, now, got, until=None, rounds=200):
    for _ in range(rounds):
        now = exchange(server, client, C_ADDR, S_ADDR, now, rounds=1, step=0.002)
        _read_all(server, got)
        run_due_timers(now, client, server)
        if until is not None and until():
            break
    return now


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 4, 5, 1000, 1 << 20, 1 << 40, MAX_ID,
                                               MAX_ID - 1]) | st.integers(0, MAX_ID),
                              st.integers(0, 3)), min_size=1, max_size=120))
def test_messages_on_any_ids_arrive_once_in_order_and_the_table_stays_consistent(ops):
    """Messages on ids drawn from small, large and extreme values (some reused many times),
    exchanged in bursts: each arrives once, in order per id, and after every burst both tables'
    invariants hold and the mapping view lists each id once."""
    client, server, now = _pair(max_streams=8)
    sent, got = {}, {}
    for i, (sid, pause) in enumerate(ops):
        if client.stream_open_blocked(sid):
            now = _run(client, server, now, got, until=lambda: not client.stream_open_blocked(sid))
        data = b"%d:%d" % (sid, len(sent.get(sid, ())))
        client.send_message(sid, data)
        sent.setdefault(sid, []).append(data)
        if pause:
            now = _run(client, server, now, got, rounds=pause)
            _check(client)
            _check(server)
    total = sum(map(len, sent.values()))
    now = _run(client, server, now, got, until=lambda: sum(map(len, got.values())) == total,
               rounds=2000)
    assert got == sent
    _check(client)
    _check(server)


def test_the_table_grows_with_the_streams_and_shrinks_when_quiet():
    """Thousands of ids open at once grow the table; once everything was delivered and the
    connection was quiet, the released streams' table and kept state are given back."""
    client, server, now = _pair(max_streams=4096)
    got = {}
    for sid in range(3000):
        client.send_message(sid * 7919, b"x")
    live, usable = _check(client)
    assert live == 3000 and usable >= 3000
    now = _run(client, server, now, got, until=lambda: len(got) == 3000, rounds=5000)
    assert len(got) == 3000
    peak = _check(server)[1]
    assert peak >= 3000
    now = _run(client, server, now + 10.0, got, rounds=20)  # quiet: idle release, halves end
    now = _run(client, server, now + 10.0, got, rounds=20)
    for conn in (client, server):
        live, usable = _check(conn)
        assert usable <= max(8 * live, 64), (live, usable)


def test_released_state_still_referred_to_is_never_reused():
    """A stream's halves are reused for other ids only when nothing else refers to them: halves
    a caller kept keep their id and contents while thousands of other ids come and go."""
    client, server, now = _pair(max_streams=16)
    got = {}
    client.send_message(5, b"hello")
    now = _run(client, server, now, got, until=lambda: 5 in got)
    kept = [client._streams[5].send, server._streams[5].recv]
    now = _run(client, server, now + 5.0, got, rounds=10)  # the id ends and is released
    rng = random.Random(1)
    for i in range(2000):
        sid = 100 + rng.randrange(100_000)
        if client.stream_open_blocked(sid):
            now = _run(client, server, now, got, until=lambda: not client.stream_open_blocked(sid))
        client.send_message(sid, b"m%d" % i)
    now = _run(client, server, now, got, rounds=500,
               until=lambda: sum(map(len, got.values())) == 2001)
    assert sum(map(len, got.values())) == 2001
    assert [h.stream_id for h in kept] == [5, 5]
    assert kept[0].write_offset == 6  # the one message, its length prefix included
    assert kept[1].read_offset == 6


def test_readable_list_stays_bounded_for_a_driver_reading_on_events():
    """A driver that reads on MessageReceived and never calls ``readable_streams``: the list of
    streams that became readable stays within the streams' number, and is gone once quiet."""
    from dquic.events import MessageReceived

    client, server, now = _pair(max_streams=64)
    sset = server._sset
    got = [0]
    peak = [0]

    def step(now):
        now = exchange(server, client, C_ADDR, S_ADDR, now, rounds=1, step=0.002)
        for ev in server.take_events():
            if type(ev) is MessageReceived:
                while server.read_message(ev.stream_id, 1 << 16) is not None:
                    got[0] += 1
        run_due_timers(now, client, server)
        peak[0] = max(peak[0], len(sset.readable or ()))
        return now

    for sid in range(5000):
        for _ in range(100):
            if not client.stream_open_blocked(sid):
                break
            now = step(now)
        client.send_message(sid, b"x")
    for _ in range(100):
        now = step(now)
        if got[0] == 5000:
            break
    assert got[0] == 5000
    # twice the table at most, which holds at most the live halves and the newest finished
    # ones (max_streams each)
    assert peak[0] <= 2 * (2 * 64) + 17, peak[0]
    for _ in range(3):
        now = step(now + 10.0)  # quiet: the connection gives back what it kept
    assert sset.readable is None


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["send", "big", "read", "piece", "many", "pull",
                                               "stop", "reset", "run"]),
                              st.integers(0, 5)), min_size=1, max_size=80))
def test_readable_streams_lists_exactly_the_readable_ones(ops):
    """``readable_streams`` answers from a flag each stream keeps (it does not look at the
    halves): after any mix of whole, partial and batched reads, stop_sending and resets from
    the peer, it lists exactly the streams whose next message (or a piece of one) is readable."""
    window = dict(initial_max_stream_data=2048, max_stream_data_window=2048)
    client, server = core_pair(
        Configuration(encryption=False, max_streams=16, **window),
        Configuration(is_client=False, encryption=False, max_streams=16, **window),
        C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20,
                   until=lambda: client.is_established and server.is_established)
    seq = 0
    for op, k in ops:
        sid = 4 * k
        if op == "send" and not client.stream_open_blocked(sid):
            client.send_message(sid, b"m%d" % seq)
        elif op == "big" and not client.stream_open_blocked(sid):
            client.send_message(sid, bytes(5000 + seq))  # longer than the stream window
        elif op == "read":
            server.read_message(sid, 1 << 16)
        elif op == "piece":
            server.read_message(sid, 1 + k)
        elif op == "many":
            server.read_messages([4 * j for j in range(6)], 1 << 16, {})
        elif op == "pull":
            server.pull_messages([], 1 << 16, 1 << 16)
        elif op == "stop":
            server.stop_sending(sid, 1)
        elif op == "reset":
            client.reset_stream(sid, 2)
        else:
            now = exchange(server, client, C_ADDR, S_ADDR, now, rounds=1 + k, step=0.002)
            run_due_timers(now, client, server)
        seq += 1
        listed = server.readable_streams()
        assert len(listed) == len(set(listed))
        ready = {s for s in server._streams if server.message_ready(s, 1)}
        assert set(listed) == ready, (op, listed, ready)
        assert server.any_readable() == bool(ready)
        server.take_events()
