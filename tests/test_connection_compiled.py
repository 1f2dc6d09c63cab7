"""The compiled connection's own machinery: inline frame records (and their overflow), recycled
sent-packet records, in-place parsing of any bytes-like datagram, the ACK fast path and its
fallback to the codec for malformed frames."""
from __future__ import annotations

import os
import random

import pytest

from dquic import _codec as codec
from dquic._connection import _Sent
from dquic.config import Configuration
from dquic.connection import Connection
from dquic.errors import ErrorCode
from dquic.events import ConnectionTerminated
from dquic.testing import LinkConfig
from dquic.testing.apps import CLIENT_ADDR, make_pair

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _pair(**kw):
    client = Connection(Configuration(encryption=False, pacing=False, **kw), S_ADDR)
    server = Connection(Configuration(is_client=False, encryption=False, pacing=False, **kw),
                        C_ADDR, peer_cid=client.host_cid, original_dcid=client.original_dcid)
    client.connect(0.0)
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
    overflow list); with loss, acknowledgement and retransmission still cover every byte."""
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
        t = client.get_timer()
        if t is not None and t <= now:
            client.handle_timer(now)
        t = server.get_timer()
        if t is not None and t <= now:
            server.handle_timer(now)
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
    for _ in range(500):
        now += 0.001
        _pump(client, server, now)
        _read_all(server, got)
        if client.send_buffered == 0:
            break
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
    for _ in range(500):
        now += 0.001
        _pump(client, server, now)
        _read_all(server, got)
        if client.send_buffered == 0:
            break
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
