"""Message-stream lifecycle in the simulator (PROTOCOL.md §16.7): any number of stream ids over
one connection, ids reused at random, exactly-once in-order delivery per id, bounded state."""
from __future__ import annotations

import random

import pytest

from dquic import _frames as framing
from dquic.config import Configuration
from dquic.events import ConnectionTerminated
from _sansio import inject, injectable_pair
from dquic.testing import LinkConfig
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, make_pair
from dquic.testing.pairs import run_due_timers


def _server_conn(server):
    conns = server.endpoint.connections
    assert len(conns) == 1
    return conns[0]


def _payload(sid: int, seq: int) -> bytes:
    """A message that names its stream and its place in that stream's sequence."""
    rng = random.Random(sid * 1_000_003 + seq)
    return b"%d:%d:" % (sid, seq) + rng.randbytes(rng.randrange(0, 48))


def _state(conn) -> int:
    """Stream objects the core holds for a connection (both halves of an id are one object)."""
    return len(conn._streams)


def _pair(max_streams, link=None, seed=1, **kw):
    ccfg = Configuration(encryption=False, max_streams=max_streams, **kw)
    scfg = Configuration(is_client=False, encryption=False, max_streams=max_streams, **kw)
    net, client, server, conn = make_pair(link or LinkConfig(delay=0.005, bandwidth=100e6),
                                          seed=seed, client_config=ccfg, server_config=scfg,
                                          encryption=False)
    net.run(until=lambda: conn.is_established and server.endpoint.connections, max_time=5)
    return net, client, server, conn


def _send_with_backpressure(net, conn, items, on_step=None, max_time=600.0):
    """Send ``(sid, data)`` in order as a driver does: while ``stream_open_blocked(sid)`` the
    network runs (acknowledgements return stream credit) instead of queueing more halves."""
    for sid, data in items:
        if conn.stream_open_blocked(sid):
            net.run(until=lambda: not conn.stream_open_blocked(sid), max_time=max_time)
        conn.send_message(sid, data)
        if on_step is not None:
            on_step()


def test_many_more_ids_than_max_streams_each_delivered_once():
    """20,000 distinct ids, one message each, with max_streams=16: every message arrives once,
    byte-exact; the stream state of both sides stays bounded by the limit, not the ids used."""
    limit = 16
    net, client, server, conn = _pair(limit)
    sconn = _server_conn(server)
    n = 20_000
    peak = [0, 0]

    def sample():
        peak[0] = max(peak[0], _state(conn))
        peak[1] = max(peak[1], _state(sconn))

    items = [(sid, _payload(sid, 0)) for sid in range(1000, 1000 + n)]
    _send_with_backpressure(net, conn, items, sample)
    net.run(until=lambda: len(server.messages) == n, max_time=600)
    net.run_for(1.0)
    got = {sid: msgs for (c, sid), msgs in server.messages.items()}
    assert len(got) == n
    for sid, data in items:
        assert got[sid] == [data], sid
    assert not server.terminated() and not client.terminated()
    # bounded by the limit: live halves of ours (open or waiting for credit) and, on the
    # receiving side, live halves plus the newest max_streams finished ones
    assert peak[0] <= 2 * limit + 2, peak
    assert peak[1] <= 3 * limit + 2, peak
    # and once everything is delivered and the connection was quiet for a while (halves that
    # only wait for more messages end then), the sender keeps nothing
    net.run_for(3.0)
    assert _state(conn) == 0
    assert _state(sconn) <= limit
    assert sconn._sset.peer_opened == n


@pytest.mark.parametrize("seed", [3, 4])
def test_ids_reused_at_random_under_loss_and_reordering(seed):
    """Messages on a few ids picked at random, in bursts separated by pauses (so ids end and are
    reopened many times), over a link with 5 % loss, reordering and duplication: every message
    arrives exactly once and in order per id."""
    link = LinkConfig(delay=0.02, loss=0.05, reorder=0.05, reorder_delay=0.01, duplicate=0.02,
                      bandwidth=20e6)
    net, client, server, conn = _pair(8, link=link, seed=seed)
    sconn = _server_conn(server)
    rng = random.Random(seed)
    ids = [rng.randrange(1 << 40) for _ in range(40)]
    sent = {sid: [] for sid in ids}
    peak = 0
    for burst in range(150):
        for _ in range(rng.randrange(1, 12)):
            sid = rng.choice(ids)
            data = _payload(sid, len(sent[sid]))
            if conn.stream_open_blocked(sid):
                net.run(until=lambda: not conn.stream_open_blocked(sid), max_time=net.now + 60)
            conn.send_message(sid, data)
            sent[sid].append(data)
        net.run_for(rng.choice([0.001, 0.02, 0.2]))
        peak = max(peak, _state(sconn), _state(conn))
    total = sum(len(v) for v in sent.values())
    net.run(until=lambda: sum(server.count(s) for s in ids) == total, max_time=net.now + 600)
    net.run_for(2.0)
    for sid in ids:
        assert server.stream_messages(sid) == sent[sid], sid
    assert not server.terminated() and not client.terminated()
    # ids were really reopened many times (each opening counts against the limit)
    assert sconn._sset.peer_opened > 3 * len(ids)
    assert peak <= 2 * len(ids) + 8 + 2


def test_an_id_reused_back_to_back_keeps_order_and_state_flat():
    """One id gets a message, then another as soon as the previous incarnation ended, 3,000
    times, while the link reorders and duplicates: order holds and state does not grow."""
    link = LinkConfig(delay=0.01, reorder=0.1, reorder_delay=0.004, duplicate=0.05)
    net, client, server, conn = _pair(4, link=link, seed=9)
    sconn = _server_conn(server)
    msgs = [_payload(7, i) for i in range(3000)]
    peak = 0
    for i, m in enumerate(msgs):
        conn.send_message(7, m)
        net.run(until=lambda: server.count(7) == i + 1, max_time=net.now + 30)
        if i % 3 == 0:
            # and sometimes right after the end of the previous incarnation
            net.run(until=lambda: not conn._streams or conn._streams[7].send.is_closed_for_writing,
                    max_time=net.now + 30)
        peak = max(peak, _state(sconn), _state(conn), len(sconn._sset.finished or ()))
    net.run_for(1.0)
    assert server.stream_messages(7) == msgs
    assert sconn._sset.peer_opened > 500  # the id was reopened over and over
    assert peak <= 4  # max_streams: the newest finished halves remembered
    assert not server.terminated() and not client.terminated()


def test_reset_of_a_stream_never_sent_takes_no_credit():
    """Regression: with the peer allowing 6 halves and 30 streams queued, resetting one that
    was never sent used no credit here while the peer counted its RESET_STREAM as an opening
    (later STREAM_LIMIT_ERROR). Now a half the peer never saw ends without any frame."""
    net, client, server, conn = _pair(6)
    for sid in range(30):
        conn.send_message(sid, _payload(sid, 0))
    conn.reset_stream(16)
    net.run(until=lambda: len(server.messages) == 29, max_time=30)
    net.run_for(1.0)
    assert not server.terminated() and not client.terminated()
    assert server.count(16) == 0
    assert all(server.stream_messages(s) == [_payload(s, 0)] for s in range(30) if s != 16)
    net.run_for(3.0)
    assert _state(conn) == 0


def test_message_after_explicit_end_opens_a_new_incarnation():
    net, client, server, conn = _pair(4)
    conn.send_message(3, b"one")
    conn.end_stream(3)
    conn.send_message(3, b"two")  # queued behind the FIN: the next incarnation
    net.run(until=lambda: server.count(3) == 2, max_time=5)
    assert server.stream_messages(3) == [b"one", b"two"]


def test_halves_end_with_their_message_once_half_the_credit_is_taken_unless_the_id_is_busy():
    """The sender's ending rule (PROTOCOL.md §16.7). Few halves open: a half whose message was
    acknowledged stays open, so the next message on its id continues it. Half of the peer's
    window taken: a half's FIN rides with its message (no frame of its own later). An id that
    got a message while its half was ending is busy: its next half stays open again."""
    net, client, server, conn = _pair(16)
    conn.send_message(1, b"a")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    net.run_for(0.05)
    assert not conn._streams[1].send.fin_sent  # 1 of 16: kept for the next message
    for sid in range(100, 108):  # 9 of 16 halves taken when these are written
        conn.send_message(sid, b"b")
    net.run(until=lambda: conn._streams[107].send.bytes_in_flight, max_time=5)
    assert all(conn._streams[sid].send.fin_sent for sid in range(100, 108))
    conn.send_message(100, b"c")  # while 100's half is ending: queued for the next one
    assert conn._streams[100].busy
    net.run(until=lambda: server.count(100) == 2, max_time=5)
    net.run_for(0.05)
    assert not conn._streams[100].send.fin_sent  # busy: the new half stays open
    conn.send_message(100, b"d")  # and continues it at once
    net.run(until=lambda: server.count(100) == 3, max_time=5)
    assert server.stream_messages(100) == [b"b", b"c", b"d"]
    assert conn._streams[100].send.write_offset == 4  # "c" and "d" in one half


# ---------------------------------------------------------------------------------------------
# a peer driving the protocol by hand (frames injected into packets)

def _established(**server_kw):
    net, client, server, conn = injectable_pair(**server_kw)
    # from now on the client hears nothing: the test plays its part
    net.link(CLIENT_ADDR, SERVER_ADDR, LinkConfig(delay=0.005), LinkConfig(delay=0.005, loss=1.0))
    return net, client, server, conn


def _inject(net, conn, server, frames):
    return inject(net, conn, server, frames, CLIENT_ADDR)


def _ack_all(sconn):
    return framing.AckFrame([(0, sconn._app.next_pn)], 0)


def test_peer_reopening_an_id_before_it_may_is_not_misread():
    """A peer that sends a new incarnation of an id right after the previous one completed,
    without waiting for our acknowledgement to be acknowledged: the receiver cannot tell that
    frame from a late copy of the old incarnation, so the packet is dropped unacknowledged
    (nothing delivered twice); once the peer acknowledged our ACK, the same frame in a new
    packet is the next incarnation."""
    net, client, server, conn = _established(max_streams=4)
    sconn = _server_conn(server)
    _inject(net, conn, server, [framing.StreamFrame(5, 0, b"\x03old", True)])
    net.poll()
    assert server.stream_messages(5) == [b"old"]
    dropped = sconn.packets_dropped
    for _ in range(20):  # a copy of the old frame, or the new incarnation? not yet known
        _inject(net, conn, server, [framing.StreamFrame(5, 0, b"\x03old", True)])
    assert sconn.packets_dropped == dropped + 20
    assert server.stream_messages(5) == [b"old"]
    # the peer acknowledges our packets (so also the ACK that covered the whole half)
    _inject(net, conn, server, [_ack_all(sconn), framing.StreamFrame(5, 0, b"\x03new", True)])
    assert server.stream_messages(5) == [b"old", b"new"]
    assert not server.terminated()


def test_aggressive_peer_reopening_ids_keeps_state_bounded():
    """A peer that reopens a handful of ids in every packet (acknowledging everything at once)
    for 5,000 packets: each incarnation is delivered once and the receiver's state stays flat."""
    net, client, server, conn = _established(max_streams=8)
    sconn = _server_conn(server)
    peak = 0
    expected = {sid: [] for sid in range(4)}
    for i in range(5000):
        frames = [_ack_all(sconn)]
        for sid in range(4):
            data = b"%d-%d" % (sid, i)
            frames.append(framing.StreamFrame(sid + 100, 0, bytes([len(data)]) + data, True))
            expected[sid].append(data)
        _inject(net, conn, server, frames)
        net.run_for(0.001)
        peak = max(peak, _state(sconn), len(sconn._sset.finished or ()), len(sconn._sset.tomb or ()))
        assert not server.terminated()
    got = {sid: server.stream_messages(sid + 100) for sid in range(4)}
    # every message delivered at most once and in order; those of packets that came before
    # the previous incarnation was resolved were dropped (the peer would send them again)
    for sid in range(4):
        seen = got[sid]
        assert len(seen) == len(set(seen))
        idx = [expected[sid].index(m) for m in seen]
        assert idx == sorted(idx)
        assert len(seen) >= 1000
    assert peak <= 12, peak


def test_late_old_frame_after_the_id_was_forgotten_is_dropped():
    """After a finished half is forgotten, a late packet (numbered below the one that resolved
    it) carrying a frame for that id does not open a new half: it is dropped unacknowledged."""
    net, client, server, conn = _established(max_streams=2)
    sconn = _server_conn(server)
    sp = conn._spaces[1]
    late = sp.next_pn
    sp.next_pn += 5  # packet numbers the server has not seen: a late packet will use one
    for sid in range(10, 20):
        _inject(net, conn, server, [_ack_all(sconn), framing.StreamFrame(sid, 0, b"\x01x", True)])
        net.run_for(0.01)
    _inject(net, conn, server, [_ack_all(sconn)])
    assert 10 not in sconn._streams  # forgotten (beyond the newest max_streams finished)
    opened = sconn._sset.peer_opened
    after = sp.next_pn
    sp.next_pn = late
    _inject(net, conn, server, [framing.StreamFrame(10, 0, b"\x01x", True)])
    sp.next_pn = after
    assert sconn._sset.peer_opened == opened
    assert server.stream_messages(10) == [b"x"]
    assert not [e for _, e in server.events if isinstance(e, ConnectionTerminated)]


def test_late_acknowledgement_of_a_forgotten_lost_packet_prevents_a_second_delivery():
    # A message with its FIN (one packet, P) is held back in the network while every copy the
    # sender resends is lost, until its recovery has declared P lost and forgotten it (about four
    # PTOs). Then P arrives: the receiver delivers the message, completes the half and, once
    # the sender acknowledged its ACK, resolves it. The sender must take that ACK of P as the
    # acknowledgement of the data: had it resent the data, the copy would come after the
    # resolution and be read as the id's next incarnation (the message delivered twice).
    from _sansio import C_ADDR as c_addr, S_ADDR as s_addr, plain_pair

    client, server, now = plain_pair()
    delivered = []

    def step(rounds, drop_stream_4, keep_alive):
        nonlocal now
        for i in range(rounds):
            now += 0.01
            run_due_timers(now, client, server)
            if i % 10 == 0:
                client.send_message(8, keep_alive % i)
            for d, _ in client.datagrams_to_send(now):
                if not (drop_stream_4 and b"message on 4" in d):
                    server.receive_datagram(d, c_addr, now)
            for d, _ in server.datagrams_to_send(now):
                client.receive_datagram(d, s_addr, now)
            for sid in server.readable_streams():
                while (piece := server.read_message(sid, 1 << 20)) is not None:
                    if sid == 4:
                        delivered.append(piece[0])

    client.send_message(4, b"message on 4")
    client.end_stream(4)
    held = [d for d, _ in client.datagrams_to_send(now)]
    first_pn = client._spaces[1].next_pn - 1
    step(100, True, b"keep-alive %d")
    # the sender declared P lost and forgot it; fewer than 128 packets later it still decodes
    assert client.stream_bytes(4) == (len(b"message on 4") + 1, 0)
    assert client._spaces[1].next_pn - first_pn < 100
    for d in held:
        server.receive_datagram(d, c_addr, now)
    step(300, False, b"more %d")
    assert delivered == [b"message on 4"]
    assert client.stream_send_complete(4)
    assert not client.is_closed and not server.is_closed


def test_a_quiet_connection_forgets_its_finished_resolved_halves():
    # an id used once and finished: once resolved and the connection quiet (the idle release,
    # after 1 s), the receiver keeps neither the half nor a list of finished halves
    from _sansio import C_ADDR as c_addr, S_ADDR as s_addr, plain_pair
    from dquic.testing.pairs import exchange

    client, server, now = plain_pair()
    client.send_message(4, b"once")
    client.end_stream(4)
    for _ in range(60):  # deliver, read, acknowledge, resolve (timers included)
        now = exchange(server, client, c_addr, s_addr, now, rounds=5, step=0.01)
        while server.read_message(4, 100) is not None:
            pass
        run_due_timers(now, client, server)
    assert server._sset.finished is not None  # remembered while the connection is busy
    now += 2.0
    run_due_timers(now, client, server)
    assert server._sset.finished is None
    assert 4 not in server._streams
