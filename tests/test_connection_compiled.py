"""The compiled connection's own machinery: inline frame records (and their overflow), recycled
sent-packet records, in-place parsing of any bytes-like datagram, the ACK fast path and its
fallback to the codec for malformed frames."""
from __future__ import annotations

import os
import random

import pytest

from dquic import _codec as codec
from dquic._spaces import _Sent
from dquic.config import Configuration
from dquic.errors import ErrorCode
from dquic.events import ConnectionTerminated
from dquic.testing import LinkConfig
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, make_pair
from dquic.testing.pairs import core_pair, run_due_timers

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _pair(**kw):
    client, server = core_pair(Configuration(encryption=False, pacing=False, **kw),
                               Configuration(is_client=False, encryption=False, pacing=False, **kw),
                               C_ADDR, S_ADDR)
    for _ in range(10):
        _pump(client, server, 0.0)
    assert client.is_established and server.is_established
    return client, server


def _pump(client, server, now, wrap=bytes, drop=None):
    n = 0
    for d, _ in client.datagrams_to_send(now):
        if drop is None or not drop():
            server.receive_datagram(wrap(d), C_ADDR, now)
        n += 1
    for d, _ in server.datagrams_to_send(now):
        client.receive_datagram(wrap(d), S_ADDR, now)
    return n


def _read_all(conn, out):
    for sid in conn.readable_streams():
        while True:
            piece = conn.read_message(sid, 1 << 20)
            if piece is None:
                break
            out.setdefault(sid, [b""])
            out[sid][-1] += piece[0]
            if piece[1]:
                out[sid].append(b"")


def _deliver_all(client, server, got, now):
    """Pump 1 ms steps (at most 500) until the client holds nothing unacknowledged, reading all
    the server receives into ``got``; returns the time reached."""
    for _ in range(500):
        now += 0.001
        _pump(client, server, now)
        _read_all(server, got)
        if client.send_buffered == 0:
            break
    return now


def _messages(out):
    return {sid: parts[:-1] for sid, parts in out.items()}


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_any_bytes_like_datagram_is_parsed_in_place(wrap):
    client, server = _pair()
    msgs = [os.urandom(n) for n in (0, 1, 1000, 5000, 70_000)]
    for m in msgs:
        client.send_message(4, m)
    got = {}
    now = 0.0
    for _ in range(200):
        now += 0.001
        _pump(client, server, now, wrap)
        _read_all(server, got)
        if len(_messages(got).get(4, [])) == len(msgs):
            break
    assert _messages(got)[4] == msgs


def test_many_small_streams_share_packets_and_survive_loss():
    """Packets carry more STREAM frames than the inline records hold (the rest go to the
    packet's overflow array); with loss, acknowledgement and retransmission still cover every
    byte."""
    client, server = _pair(max_streams=256)
    rng = random.Random(7)
    msgs = {sid: os.urandom(rng.randrange(1, 40)) for sid in range(0, 4 * 60, 4)}
    for sid, m in msgs.items():
        client.send_message(sid, m)
    got = {}
    now = 0.0
    count = [0]

    def drop():
        count[0] += 1
        return count[0] in (1, 3) or rng.random() < 0.1

    for _ in range(3000):
        now += 0.002
        _pump(client, server, now, drop=drop)
        run_due_timers(now, client, server)
        _read_all(server, got)
        if len(_messages(got)) == len(msgs) and client.send_buffered == 0:
            break
    assert {sid: parts[0] for sid, parts in _messages(got).items()} == msgs
    assert client.send_buffered == 0
    assert client.stats.packets_lost > 0 and client.stats.bytes_retransmitted > 0


def test_sent_records_are_recycled_and_never_aliased():
    client, server = _pair()
    payload = bytes(300_000)
    client.send_message(1, payload)
    got = {}
    now = 0.0
    now = _deliver_all(client, server, got, now)
    assert _messages(got)[1] == [payload]
    free = client._free_sent
    assert free and all(type(p) is _Sent for p in free)
    # a record handed back for reuse is never one recovery still tracks
    outstanding = {id(p) for p in client._recovery.outstanding(1)}
    assert not outstanding & {id(p) for p in free}
    assert len({id(p) for p in free}) == len(free)
    # reuse: more data does not grow the pool without bound
    before = len(free)
    client.send_message(1, payload)
    now = _deliver_all(client, server, got, now)
    assert _messages(got)[1] == [payload, payload]
    assert len(client._free_sent) <= max(before, 64) * 2


def _inject(net, conn, server, payload_bytes):
    sp = conn._spaces[1]
    pn = sp.next_pn
    sp.next_pn = pn + 1
    buf = codec.Buffer(capacity=4096)
    trunc, pn_len = codec.encode_packet_number(pn, sp.largest_acked)
    codec.push_short_header(buf, conn.peer_cid, trunc, pn_len)
    # PINGs first (room for the header-protection sample), the frame under test last
    buf.push_bytes(b"\x01" * 16 + payload_bytes)
    server.receive_datagram(buf.data, CLIENT_ADDR, net.now)
    net.poll()


def _established():
    scfg = Configuration(is_client=False, encryption=False)
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), encryption=False,
                                          server_config=scfg, seed=1)
    conn.send_message(0, b"hello")
    net.run(until=lambda: server.count(0) == 1, max_time=5)
    return net, client, server, conn


def _close_code(server):
    terms = [e for _, e in server.events if isinstance(e, ConnectionTerminated)]
    assert terms, "the server did not close the connection"
    return terms[0].error_code


@pytest.mark.parametrize("body", [
    bytes([0x02, 0x05, 0x00, 0x00, 0x09]),              # first range below packet number 0
    bytes([0x02, 0x05, 0x00, 0x01, 0x00, 0x09, 0x00]),  # gap below packet number 0
    bytes([0x02, 0x05, 0x00, 0x30, 0x00]),              # more ranges than the bytes can hold
    bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x40]),  # ACK_ECN cut inside its counts
])
def test_malformed_ack_closes_with_frame_encoding_error(body):
    net, client, server, conn = _established()
    _inject(net, conn, server, body)
    assert _close_code(server) == ErrorCode.FRAME_ENCODING_ERROR


def test_ack_of_unsent_packet_is_a_protocol_violation():
    net, client, server, conn = _established()
    # largest 1000, first range 0: well-formed, but the server never sent packet 1000
    _inject(net, conn, server, bytes([0x02]) + codec.encode_varint(1000) + bytes([0x00, 0x00, 0x00]))
    assert _close_code(server) == ErrorCode.PROTOCOL_VIOLATION


def test_stream_frame_without_length_runs_to_packet_end():
    net, client, server, conn = _established()
    # type 0x0c: OFF bit, no LEN bit; stream 9, offset 0, then one message to the end
    _inject(net, conn, server, bytes([0x0C, 0x09, 0x00, 0x05]) + b"abcde")
    net.run(until=lambda: server.count(9) == 1, max_time=2)
    assert server.stream_messages(9) == [b"abcde"]


def test_read_messages_takes_whole_messages_in_order_within_the_budget():
    client, server = _pair()
    client.send_message(0, b"a" * 10)
    client.send_message(4, b"b" * 20)
    client.send_message(8, b"c" * 5000)  # longer than the budget: a piece of exactly what is left
    client.send_message(12, b"d" * 7)
    for _ in range(20):
        _pump(client, server, 0.0)
    order = sorted(server.readable_streams())
    assert order == [0, 4, 8, 12]
    out = {}
    done, left, last = server.read_messages(order, 100, out)
    # 10 + 20 fit; stream 8's next 70 bytes are exactly the rest of the budget
    assert out == {0: b"a" * 10, 4: b"b" * 20, 8: b"c" * 70}
    assert (done, left, last) == (3, 0, 8)
    out = {}
    assert server.read_messages([12, 8], 7, out) == (1, 0, 12)
    assert out == {12: b"d" * 7}
    # a message that is not complete and longer than nothing stops the walk without reading
    client.send_message(16, b"e" * 3000)
    client.datagrams_to_send(0.0)  # lost: nothing of stream 16 arrives
    out = {}
    assert server.read_messages([16, 8], 10_000, out) == (0, 10_000, -1)
    assert out == {}
    assert server.read_messages([8], 10_000, out) == (1, 10_000 - 4930, 8)
    assert out == {8: b"c" * 4930}


def test_pull_messages_moves_whole_messages_of_every_readable_stream():
    client, server = _pair()
    for i in range(3):
        client.send_message(0, b"a%d" % i)
    client.send_message(4, b"b" * 20)
    client.send_message(8, b"c" * 5000)  # longer than the piece: left to the caller
    client.send_message(12, b"d" * 7)
    for _ in range(20):
        _pump(client, server, 0.0)
    out = []
    moved, rest, held, pending = server.pull_messages(out, 1 << 20, 1000)
    assert out == [(0, b"a0"), (0, b"a1"), (0, b"a2"), (4, b"b" * 20), (12, b"d" * 7)]
    assert (moved, rest, held, pending) == (6 + 20 + 7, [8], False, False)
    assert server.readable_streams() == [8]  # the others were read to their ends
    assert server.read_message(8, 1 << 20) == (b"c" * 5000, True)
    # an incomplete message that can complete in the core stays there ("pending")
    client.send_message(16, b"e" * 3000)
    dgrams = [d for d, _ in client.datagrams_to_send(0.0)]
    assert len(dgrams) > 1
    server.receive_datagram(dgrams[0], C_ADDR, 0.0)
    out = []
    assert server.pull_messages(out, 1 << 20, 1 << 20) == (0, None, False, True)
    assert out == [] and server.readable_streams() == [16]
    for d in dgrams[1:]:
        server.receive_datagram(d, C_ADDR, 0.0)
    assert server.pull_messages(out, 1 << 20, 1 << 20) == (3000, None, False, False)
    assert out == [(16, b"e" * 3000)]


def test_pull_messages_leaves_pieces_of_a_message_longer_than_the_window_to_the_caller():
    client, server = _pair(initial_max_stream_data=4096)
    client.send_message(0, b"w" * 10_000)  # cannot arrive whole before some of it is read
    for _ in range(5):
        _pump(client, server, 0.0)
    out = []
    assert server.pull_messages(out, 1 << 20, 1 << 20) == (0, [0], False, False)
    got = b""
    for _ in range(50):
        piece = server.read_message(0, 1 << 20)
        if piece is not None:
            got += piece[0]
            if piece[1]:
                break
        _pump(client, server, 0.0)
    assert got == b"w" * 10_000


def test_pull_messages_stops_at_the_budget_except_for_wanted_streams():
    client, server = _pair()
    for sid in (0, 4):
        for i in range(4):
            client.send_message(sid, b"%d-%d" % (sid, i) * 10)  # 30 bytes each
    for _ in range(20):
        _pump(client, server, 0.0)
    out = []
    # a budget of 50 bytes: two messages of stream 0 (the second one crosses it), none of 4
    moved, rest, held, pending = server.pull_messages(out, 50, 1 << 20, None, True)
    assert [sid for sid, _ in out] == [0, 0] and (moved, rest, held, pending) == (60, None, True, False)
    assert server.readable_streams() == [0, 4]  # both still have messages, in the same order
    # nothing is queued by the caller (first_free): one message even without budget
    out = []
    assert server.pull_messages(out, 0, 1 << 20, None, True)[0] == 30 and len(out) == 1
    # a stream somebody waits for goes on past the budget, the others stay
    out = []
    moved, rest, held, pending = server.pull_messages(out, 0, 1 << 20, {4}, False)
    assert out == [(4, b"4-%d" % i * 10) for i in range(4)] and held
    assert server.readable_streams() == [0]
    out = []
    assert server.pull_messages(out, 1 << 20, 1 << 20, None, False) == (30, None, False, False)
    assert out == [(0, b"0-3" * 10)] and server.readable_streams() == []


def test_pull_messages_opens_flow_control_window_as_reading_does():
    client, server = _pair(initial_max_stream_data=16384, initial_max_data=32768)
    sent = 0
    while sent < 200_000:
        client.send_message(0, b"z" * 1000)
        sent += 1000
    got = 0
    for _ in range(2000):
        _pump(client, server, 0.0)
        out = []
        got += server.pull_messages(out, 1 << 30, 1 << 20)[0]
        if got >= 200 * 1000:
            break
    # many times the stream and connection windows: credit went back as messages left
    assert got == 200 * 1000


def test_take_events_returns_what_next_event_would_in_order():
    from dquic.events import MessageReceived

    client, server = _pair()
    for sid in (0, 4, 8):
        client.send_message(sid, b"m%d" % sid)
    for _ in range(5):
        _pump(client, server, 0.0)
    evs = server.take_events()
    assert [e.stream_id for e in evs if isinstance(e, MessageReceived)] == [0, 4, 8]
    assert server.take_events() == [] and server.next_event() is None


def test_move_events_hands_over_what_take_events_would_and_says_what_changed():
    from collections import deque

    from dquic.connection import (MOVED_CID_CHANGES, MOVED_CONFIRMED, MOVED_EVENTS,
                                  MOVED_TERMINATED)
    from dquic.events import MessageReceived

    client, server = _pair()
    server.cid_changes = None  # (no endpoint applied the handshake's routing changes)
    server.take_events()  # the handshake's
    client.send_message(0, b"a")
    client.send_message(4, b"b")
    _pump(client, server, 0.0)
    out = deque([("older", "pair")])  # appended after what the queue already holds
    flags = server.move_events(out)
    assert flags & MOVED_EVENTS and flags & MOVED_CONFIRMED
    assert not flags & (MOVED_TERMINATED | MOVED_CID_CHANGES)
    assert out[0] == ("older", "pair")
    assert [(c is server, type(e), e.stream_id) for c, e in list(out)[1:]] == [
        (True, MessageReceived, 0), (True, MessageReceived, 4)]
    # moved: nothing is left for take_events, and a second call moves nothing
    assert server.take_events() == [] and server.move_events(out) == MOVED_CONFIRMED
    assert len(out) == 3
    # routing changes are reported, not taken (the endpoint applies and clears them)
    server.cid_changes = [("add", b"\x01" * 8)]
    assert server.move_events(out) & MOVED_CID_CHANGES
    server.cid_changes = None
    server.close(0, "")
    for _ in range(3):
        _pump(client, server, 0.0)
    server.handle_timer(60.0)  # the closing period ends
    assert server.move_events(out) & MOVED_TERMINATED


def _new_packets(conn, before):
    """The application-space packets ``conn`` sent since ``before`` (packet numbers it had)."""
    return [p for p in conn._recovery.outstanding(1) if p.packet_number not in before]


def test_sent_records_list_every_frame_in_packet_order():
    """A packet's records, inline and overflow alike, come back in the order the frames were
    written, with their values: datagrams before the streams, streams in queue order."""
    client, server = _pair(max_streams=256, max_datagram_frame_size=1200)
    msgs = {sid: bytes([sid % 251]) * (1 + sid % 7) for sid in range(0, 4 * 20, 4)}
    dg = client.send_datagram(b"dg")
    for sid, m in msgs.items():
        client.send_message(sid, m)
    before = {p.packet_number for p in client._recovery.outstanding(1)}
    client.datagrams_to_send(0.001)
    frames = [f for p in _new_packets(client, before) for f in p.frames_for_trace()
              if f["frame_type"] != "ack"]
    assert dg == 1 and frames[0] == {"frame_type": "datagram", "length": 2}
    streams = [f for f in frames if f["frame_type"] == "stream"]
    assert len(streams) > 8  # more than the inline records: the rest in the overflow array
    assert streams == [{"frame_type": "stream", "stream_id": sid, "offset": 0, "length": 1 + len(m)}
                       for sid, m in msgs.items()]


def test_lost_control_frames_are_owed_again():
    """MAX_DATA and MAX_STREAM_DATA in a lost packet go back to what the receiver owes and
    are sent again with the limits then current (the sender was never blocked: no
    DATA_BLOCKED asked for them)."""
    window = dict(initial_max_data=100_000, max_data_window=100_000,
                  initial_max_stream_data=100_000, max_stream_data_window=100_000)
    client, server = _pair(**window)
    client.send_message(4, bytes(60_000))  # past half of both windows: both updates are owed
    got, now, dropped, resent, owed_again = {}, 0.0, None, [], False
    for _ in range(2000):
        now += 0.002
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        owed_again |= dropped is not None and "max_data" in server._owed
        _read_all(server, got)
        before = {p.packet_number for p in server._recovery.outstanding(1)}
        out = server.datagrams_to_send(now)
        for (d, _), p in zip(out, _new_packets(server, before)):
            frames = {f["frame_type"]: f for f in p.frames_for_trace()}
            if "max_data" in frames and dropped is None:
                dropped = frames
                continue
            if "max_data" in frames:
                resent.append(frames)
            client.receive_datagram(d, S_ADDR, now)
        for conn in run_due_timers(now, client, server):
            owed_again |= conn is server and dropped is not None and "max_data" in server._owed
        if resent:
            break
    assert dropped is not None and "max_stream_data" in dropped
    assert owed_again and resent
    assert resent[0]["max_data"] == dropped["max_data"]
    assert resent[0]["max_stream_data"] == dropped["max_stream_data"]


def test_sent_records_match_what_the_peer_received(tmp_path):
    """Each packet's records, as traced, are the frames the peer decoded from it (frames a
    record leaves out: PING, PATH_*, the BLOCKED frames, PADDING), in the same order and with
    the same values, on a lossy link with every recorded frame kind in use."""
    import json

    qdir = str(tmp_path)
    kw = dict(qlog_dir=qdir, initial_max_data=60_000, max_data_window=120_000,
              initial_max_stream_data=20_000, max_stream_data_window=40_000, max_streams=40,
              max_datagram_frame_size=1400, active_connection_id_limit=4)
    net, client, server, conn = make_pair(
        LinkConfig(delay=0.02, loss=0.05, reorder=0.02, bandwidth=20e6), seed=4,
        client_config=Configuration(**kw), server_config=Configuration(is_client=False, **kw))
    net.run(until=lambda: conn.is_established, max_time=10)
    rng = random.Random(4)
    for i in range(60):
        conn.send_message(4 * (i % 30), rng.randbytes(rng.choice([5, 300, 5000, 30000])))
        if i % 7 == 0:
            conn.send_datagram(rng.randbytes(200))
    net.run_for(1.0)
    # a message still in flight (longer than the stream window) is reset: RESET_STREAM
    conn.send_message(1000, rng.randbytes(30000))
    for _ in range(200):  # (it may wait for stream credit first)
        net.run_for(0.005)
        if conn._streams[1000].send.bytes_in_flight:
            break
    conn.reset_stream(1000, 5)
    conn.stop_sending(20, 6)
    new_addr = ("198.51.100.30", 40000)
    net.rebind(CLIENT_ADDR, new_addr)
    net.link(new_addr, SERVER_ADDR, LinkConfig(delay=0.02, loss=0.05))
    conn.change_address()
    net.run_for(10.0)
    conn.close()
    net.run_for(2.0)

    def events(role):
        name = [f for f in os.listdir(qdir) if f.endswith(role + ".sqlog")][0]
        raw = open(os.path.join(qdir, name), encoding="utf-8").read()
        return [json.loads(c) for c in raw.split("\x1e") if c.strip()][1:]

    unrecorded = {"padding", "ping", "path_challenge", "path_response", "data_blocked",
                  "stream_data_blocked", "streams_blocked", "connection_close"}
    kinds, compared = set(), 0
    for sender, receiver in (("client", "server"), ("server", "client")):
        key = lambda e: (e["data"]["header"]["packet_type"], e["data"]["header"]["packet_number"])
        sent = {key(e): e["data"]["frames"] for e in events(sender) if e["name"] == "transport:packet_sent"}
        for e in events(receiver):
            if e["name"] != "transport:packet_received" or key(e) not in sent:
                continue
            got = [f for f in e["data"]["frames"] if f["frame_type"] not in unrecorded]
            mine = [f for f in sent[key(e)] if f["frame_type"] not in unrecorded]
            assert len(mine) == len(got), (mine, got)
            for s, r in zip(mine, got):
                if s["frame_type"] == "unknown":  # NEW_CONNECTION_ID: no connection ID kept
                    assert s["frame_type_value"] == 0x18 and r["frame_type"] == "new_connection_id"
                elif s["frame_type"] == "ack":  # a sent ACK's ranges are not kept
                    assert r["frame_type"] == "ack"
                else:
                    assert {k: r.get(k) for k in s} == s, (s, r)
                kinds.add(r["frame_type"])
            compared += 1
    assert compared > 100
    assert kinds >= {"stream", "ack", "crypto", "datagram", "handshake_done", "max_data",
                     "max_stream_data", "max_streams", "reset_stream", "stop_sending",
                     "new_connection_id", "retire_connection_id"}, kinds


def test_a_connection_without_an_endpoint_keeps_each_ids_reset_token():
    # a NEW_CONNECTION_ID sent again must carry the same token (RFC 9000 §10.3): a bare
    # connection derives its tokens from one random key instead of drawing one per write
    from dquic.config import Configuration
    from dquic.connection import CoreConnection

    conn = CoreConnection(Configuration(encryption=False), ("192.0.2.1", 1))
    other = CoreConnection(Configuration(encryption=False), ("192.0.2.1", 1))
    cid = bytes(8)
    assert conn._reset_token(cid) == conn._reset_token(cid)
    assert len(conn._reset_token(cid)) == 16
    assert conn._reset_token(cid) != conn._reset_token(bytes([1]) * 8)
    assert conn._reset_token(cid) != other._reset_token(cid)


def test_send_messages_stops_before_what_must_wait():
    """``send_messages`` queues a batch in one call and stops before the first message that
    would overflow the send-buffer limit (unless nothing is buffered) or needs stream credit
    the peer has not given; what it queued arrives once, in order."""
    from dquic.testing.pairs import exchange
    C, S = ("192.0.2.1", 4433), ("198.51.100.7", 4433)
    client, server = core_pair(Configuration(encryption=False, max_streams=4),
                               Configuration(is_client=False, encryption=False, max_streams=4), C, S)
    now = exchange(server, client, C, S, 0.0, rounds=20,
                   until=lambda: client.is_established and server.is_established)
    items = [(sid, b"m%d" % sid, 2) for sid in range(10)]
    # the peer allows 4 halves: the fifth id must wait for credit
    assert client.send_messages(items, 0, 1 << 20) == 4
    assert client.stream_open_blocked(4)
    # a limit already reached stops it before anything when something is buffered
    assert client.send_messages([(0, b"more", 4)], 0, client.send_buffered) == 0
    got = {}
    now = exchange(server, client, C, S, now, rounds=20)
    for sid in server.readable_streams():
        while (piece := server.read_message(sid, 1 << 16)) is not None:
            got.setdefault(sid, []).append(piece[0])
    assert got == {sid: [b"m%d" % sid] for sid in range(4)}
    now = exchange(server, client, C, S, now, rounds=20)
    assert client.send_buffered == 0
    # with nothing buffered, one message goes even over the limit; the next one waits
    assert client.send_messages([(0, bytes(100), 100), (1, b"x", 1)], 0, 10) == 1
    now = exchange(server, client, C, S, now, rounds=20)
    assert client.send_messages(items, 4, 1 << 20) == 7  # credit came back for three more
    client.close()
    with pytest.raises(RuntimeError):
        client.send_messages(items, 8, 1 << 20)


def test_pull_messages_goes_on_into_the_next_incarnation_buffered_behind():
    """An id's next incarnation that arrived while the previous one was unread comes after it:
    ``pull_messages`` takes both in order, and when its budget stops it after the first, the
    id stays listed once as readable (the flag followed the current half, not the one read
    to its end)."""
    from dquic.testing.pairs import exchange

    C, S = ("192.0.2.1", 4433), ("198.51.100.7", 4433)

    def pair_with_two_incarnations_waiting():
        client, server = core_pair(Configuration(encryption=False),
                                   Configuration(is_client=False, encryption=False), C, S)
        now = exchange(server, client, C, S, 0.0, rounds=20,
                       until=lambda: client.is_established and server.is_established)
        client.send_message(7, b"one")
        client.end_stream(7)
        client.send_message(7, b"two")  # the next incarnation: sent once the first is complete
        for _ in range(50):
            now = exchange(server, client, C, S, now, rounds=1, step=0.01)
            run_due_timers(now, client, server)
        assert server._streams[7].recv_next is not None
        return server

    server = pair_with_two_incarnations_waiting()
    out = []
    server.pull_messages(out, 1 << 20, 1 << 16)
    assert out == [(7, b"one"), (7, b"two")]
    assert server.readable_streams() == []

    server = pair_with_two_incarnations_waiting()
    out = []
    assert server.pull_messages(out, 1, 1 << 16)[2]  # held back by the budget after "one"
    assert out == [(7, b"one")]
    assert server.readable_streams() == [7]
    server.pull_messages(out, 1 << 20, 1 << 16)
    assert out == [(7, b"one"), (7, b"two")]
