"""The floor of a packet-number space (``_spaces``; PROTOCOL.md §13): every packet received below
it was listed in an ACK frame the peer has acknowledged, packets below it are duplicates, and the
peer's complete stream halves below it are resolved (PROTOCOL.md §16.7). Two sans-IO
connections on a virtual clock, datagrams moved by hand: a late packet holds the floor below it,
a packet under the floor is not processed, a one-way flow keeps its ranges few, a peer that
skips packet numbers and never acknowledges cannot grow the receiver's state, and ids reused at
random over a lossy, reordering, duplicating path deliver every message once and in order."""
from __future__ import annotations

import random

import pytest

from dquic.config import Configuration
from dquic.testing.pairs import core_pair, exchange, run_due_timers

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _pair(**server_options):
    # (datagrams of one size: these tests follow packet numbers, and the lossy-flow test's
    # final bound holds for its seed's trajectory, which path MTU probes would change)
    client, server = core_pair(
        Configuration(encryption=False, mtu_discovery=False),
        Configuration(is_client=False, encryption=False, mtu_discovery=False, **server_options),
        C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20,
                   until=lambda: client.is_established and server.is_established)
    assert client.is_established and server.is_established
    return client, server, _run(client, server, now, 5, 0.05)  # (the handshake's ACKs settle)


def _run(client, server, now, rounds, dt, got=None):
    """``rounds`` times: advance ``dt``, run due timers, move datagrams both ways losslessly
    (and read the server's messages into ``got``); returns the time reached."""
    for _ in range(rounds):
        now += dt
        run_due_timers(now, client, server)
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        if got is not None:
            _read_all(server, got)
    return now


def _read_all(conn, got, partial={}):
    """Every complete message readable, appended to ``got[sid]`` (pieces of one are joined)."""
    for sid in conn.readable_streams():
        while True:
            piece = conn.read_message(sid, 1 << 16)
            if piece is None:
                break
            key = (id(conn), sid)
            data = partial.pop(key, b"") + piece[0]
            if piece[1]:
                got.setdefault(sid, []).append(data)
            else:
                partial[key] = data
    conn.take_events()


def _one_packet(conn, now):
    (d,) = [d for d, _ in conn.datagrams_to_send(now)]
    return d


def test_a_late_packet_holds_the_floor_below_it():
    """A packet that arrives after an ACK spanning its number was written is not listed by
    that ACK: when the peer acknowledges that ACK, the floor stops at the late packet (else it
    would pass a packet the peer was never told of, and might later resend its frames as if
    lost). The next ACK lists it, and once that one is acknowledged the floor passes it."""
    client, server, now = _pair()
    space = server._app
    pns, packets = [], []
    for i in range(6):
        pns.append(client._app.next_pn)
        client.send_message(4, b"m%d" % i)
        packets.append(_one_packet(client, now))
    for i in (0, 1, 2, 4, 5):  # the fourth is late
        server.receive_datagram(packets[i], C_ADDR, now)
    server.send_message(4, b"reply")  # the ACK goes with data: the client acknowledges it
    reply = _one_packet(server, now)
    assert pns[3] not in space.rx and pns[2] in space.rx and pns[4] in space.rx
    server.receive_datagram(packets[3], C_ADDR, now)  # late: after the ACK spanning it
    assert space.nfills == 1
    client.receive_datagram(reply, S_ADDR, now)
    now += 0.03
    run_due_timers(now, client)
    for d, _ in client.datagrams_to_send(now):  # acknowledges the server's packet
        server.receive_datagram(d, C_ADDR, now)
    assert space.rx_floor == pns[3]  # not past the late packet
    assert pns[3] in space.rx
    # the next ACK lists it; acknowledged, the floor passes everything the client sent
    now = _run(client, server, now, 10, 0.03)
    assert space.rx_floor > pns[5]
    assert space.nfills == 0
    got = {}
    _read_all(server, got)
    assert got[4] == [b"m%d" % i for i in range(6)]


def test_a_packet_below_the_floor_is_dropped_and_its_data_sent_again():
    """The floor passes a packet that never arrived once an ACK without it was acknowledged;
    when it turns up after all it is a duplicate (RFC 9000 §13.2.4) and nothing in it acts:
    its sender has declared it lost and its message arrives once, in a new packet."""
    client, server, now = _pair()
    pns, packets = [], []
    for i in range(4):
        pns.append(client._app.next_pn)
        client.send_message(8, b"n%d" % i)
        packets.append(_one_packet(client, now))
    for i in (0, 1, 3):
        server.receive_datagram(packets[i], C_ADDR, now)
    server.send_message(8, b"reply")
    client.receive_datagram(_one_packet(server, now), S_ADDR, now)
    now += 0.03
    run_due_timers(now, client)
    for d, _ in client.datagrams_to_send(now):
        server.receive_datagram(d, C_ADDR, now)
    assert server._app.rx_floor > pns[3]
    assert pns[2] not in server._app.rx
    dups = server.duplicate_packets
    server.receive_datagram(packets[2], C_ADDR, now)  # far too late
    assert server.duplicate_packets == dups + 1
    assert pns[2] not in server._app.rx
    got = {}
    _run(client, server, now, 40, 0.02, got)
    assert got[8] == [b"n0", b"n1", b"n2", b"n3"]


def test_a_one_way_flow_over_a_lossy_path_keeps_few_ranges():
    """A receiver that only acknowledges sends no ack-eliciting packet of its own, so nothing
    would acknowledge its ACKs and the gaps the losses leave would pile up; once more than
    ``ack_ranges_per_frame`` ranges lie above the floor an ACK carries a PING, and the floor
    follows the flow about a round trip behind. (Windows large enough that the receiver sends
    no flow-control update either: those would carry its ACKs to the peer too.)"""
    client, server, now = _pair(ack_ranges_per_frame=8, initial_max_data=1 << 24,
                                initial_max_stream_data=1 << 24)
    rng = random.Random(3)
    peak = 0
    got = {}
    for i in range(4000):
        client.send_message(12, b"x" * 200)
        if i % 4 == 0:
            for d, _ in client.datagrams_to_send(now):
                if rng.random() > 0.05:
                    server.receive_datagram(d, C_ADDR, now)
            _read_all(server, got)
            for d, _ in server.datagrams_to_send(now):
                if rng.random() > 0.05:
                    client.receive_datagram(d, S_ADDR, now)
            run_due_timers(now, client, server)
            peak = max(peak, len(server._app.rx))
            now += 0.001
    for _ in range(3000):
        if len(got.get(12, ())) == 4000:
            break
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        _read_all(server, got)
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        run_due_timers(now, client, server)
        now += 0.002
    assert len(got[12]) == 4000
    assert server.packets_received > 500
    assert server._app.acks_written > 100
    assert peak <= 24, peak  # the threshold, plus what a round trip adds
    assert server._app.largest_rx - server._app.rx_floor < 64


def test_a_peer_that_skips_packet_numbers_and_never_acknowledges_cannot_grow_ack_state():
    """A hostile client skips a packet number before every packet (a gap each) and the
    server's packets never reach it (so nothing raises the server's floor): the server keeps at
    most ``max_ack_ranges`` ranges and FILLS_MAX late packets; packets beyond that are processed
    as if their stream frames could not be accepted yet and not acknowledged. Once the path
    works both ways every message arrives, once and in order."""
    client, server, now = _pair(max_ack_ranges=16)
    got = {}
    peak_ranges = peak_fills = 0
    for i in range(300):
        client._app.next_pn += 1  # a gap before every packet
        client.send_message(16, b"h%d" % i)
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        server.datagrams_to_send(now)  # lost
        _read_all(server, got)
        peak_ranges = max(peak_ranges, len(server._app.rx))
        peak_fills = max(peak_fills, server._app.nfills)
        run_due_timers(now, client, server)
        now += 0.002
    assert peak_ranges == 16
    assert peak_fills <= 64
    assert server.packets_dropped > 0
    assert not server.is_closed
    for _ in range(5000):
        if len(got.get(16, ())) == 300:
            break
        run_due_timers(now, client, server)
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        _read_all(server, got)
        now += 0.002
    assert got[16] == [b"h%d" % i for i in range(300)]


@pytest.mark.parametrize("seed,messages,reorder", [
    (0, 20000, 0.0),   # stalled after 17,178 messages when resolution needed one ACK frame
    (1, 5000, 0.0),    # stalled after 451 (an incarnation older than the ranges an ACK lists)
    (0, 3000, 0.05),   # FINAL_SIZE_ERROR: a packet dropped after some of its frames had acted
    (1, 3000, 0.05),
    (2, 3000, 0.2),
])
def test_ids_reused_at_random_over_a_lossy_reordering_path_deliver_every_message(
        seed, messages, reorder):
    """100 ids (60 of them random 62-bit), reused at random with ``max_streams=16``, over a
    path losing 5 % each way, duplicating 2 % and holding back ``reorder`` of the datagrams
    1-50 ms, with pauses of up to 2 s: every message arrives once and in order per id, and the
    connection never stalls (long-lived incarnations included: resolution by the floor does not
    depend on how far back an incarnation began)."""
    rng = random.Random(seed)
    client, server = core_pair(
        Configuration(encryption=False, max_streams=16),
        Configuration(is_client=False, encryption=False, max_streams=16), C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=20,
                   until=lambda: client.is_established and server.is_established)
    ids = [rng.randrange(1 << 62) for _ in range(60)] + list(range(40))
    sent, got = {}, {}
    held = []

    def deliver(dst, src, d, now):
        r = rng.random()
        if r < 0.05:
            return
        if r < 0.05 + reorder:
            held.append((now + rng.uniform(0.001, 0.05), dst, src, d))
            return
        dst.receive_datagram(d, src, now)
        if rng.random() < 0.02:
            dst.receive_datagram(d, src, now)

    def step(now):
        for d, _ in client.datagrams_to_send(now):
            deliver(server, C_ADDR, d, now)
        _read_all(server, got)
        client.take_events()
        for d, _ in server.datagrams_to_send(now):
            deliver(client, S_ADDR, d, now)
        due = [h for h in held if h[0] <= now]
        held[:] = [h for h in held if h[0] > now]
        for _, dst, src, d in due:
            dst.receive_datagram(d, src, now)
        run_due_timers(now, client, server)
        return now + 0.002

    for _ in range(messages):
        sid = rng.choice(ids)
        for _ in range(2000):
            if not client.stream_open_blocked(sid):
                break
            now = step(now)
        m = b"%d:%d" % (sid, len(sent.get(sid, ())))
        client.send_message(sid, m)
        sent.setdefault(sid, []).append(m)
        if rng.random() < 0.3:
            now = step(now)
        if rng.random() < 0.01:
            now = step(now + rng.choice([0.05, 0.5, 2.0]))
    for _ in range(20000):
        if sum(map(len, got.values())) == messages:
            break
        now = step(now)
    for sid, msgs in got.items():
        assert msgs == sent[sid][:len(msgs)], sid  # never twice, never out of order
    assert sum(map(len, got.values())) == messages
    assert got == sent
    assert len(server._app.rx) <= server._app.max_ranges


@pytest.mark.parametrize("options", [dict(max_ack_ranges=1), dict(max_ack_ranges=257),
                                     dict(ack_ranges_per_frame=0)])
def test_ack_bookkeeping_bounds_are_validated(options):
    with pytest.raises(ValueError):
        Configuration(**options).validate()
