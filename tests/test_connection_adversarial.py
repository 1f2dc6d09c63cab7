"""A scripted hostile peer: hand-built frames injected into an established connection.

Each case checks that the server closes with the error code PROTOCOL.md specifies, tells the
peer (CONNECTION_CLOSE with that code), and that nothing crashes.
"""
from __future__ import annotations

import os

import pytest

from dquic import _codec as codec
from dquic import _frames as framing
from dquic.errors import ErrorCode
from dquic.events import ConnectionTerminated
from _sansio import inject, injectable_pair
from dquic.testing import LinkConfig
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, make_pair


def _inject(net, conn, server, frames, pn_bump=0):
    """Send a short-header packet with ``frames`` as if ``conn`` had sent it (no encryption)."""
    return inject(net, conn, server, frames, CLIENT_ADDR, pn_bump)


def _server_close_code(server):
    terms = [e for _, e in server.events if isinstance(e, ConnectionTerminated)]
    assert terms, "the server did not close the connection"
    assert not terms[0].by_peer
    return terms[0].error_code


def _peer_told(net, client, code):
    net.run(until=lambda: client.terminated(), max_time=5)
    t = client.terminated()[0]
    assert t.by_peer and t.error_code == code


# (server configuration, the frames of each injected packet, the error the server closes with)
_ONE_BAD_FRAME = {
    "overlapping-stream-data-with-different-bytes": (
        {}, [[framing.StreamFrame(7, 0, b"\x05abcde", False)], [framing.StreamFrame(7, 2, b"XXXX", False)]],
        ErrorCode.PROTOCOL_VIOLATION),
    "ack-for-packets-never-sent": (
        {}, [[framing.AckFrame([(0, 1), (1000, 1001)], 0)]], ErrorCode.PROTOCOL_VIOLATION),
    "data-beyond-stream-window": (
        {"initial_max_stream_data": 10_000}, [[framing.StreamFrame(3, 50_000, b"x" * 100, False)]],
        ErrorCode.FLOW_CONTROL_ERROR),
    "huge-offset": (
        {}, [[framing.StreamFrame(3, (1 << 62) - 10, b"x", False)]], ErrorCode.FLOW_CONTROL_ERROR),
}


@pytest.mark.parametrize("case", list(_ONE_BAD_FRAME))
def test_a_bad_frame_closes_the_connection(case):
    server_kw, packets, code = _ONE_BAD_FRAME[case]
    net, client, server, conn = injectable_pair(**server_kw)
    server.reading = False
    for frames in packets:
        _inject(net, conn, server, frames)
    assert _server_close_code(server) == code
    _peer_told(net, client, code)


def test_reset_stream_beyond_connection_window_names_its_frame():
    # a final size past the connection's window is a FLOW_CONTROL_ERROR raised while
    # processing RESET_STREAM: the CONNECTION_CLOSE names that frame type (0x04)
    net, client, server, conn = injectable_pair(initial_max_data=30_000, max_data_window=30_000,
                                                initial_max_stream_data=40_000)
    _inject(net, conn, server, [framing.ResetStreamFrame(1, 0, 35_000)])
    assert _server_close_code(server) == ErrorCode.FLOW_CONTROL_ERROR
    core = [c for c in server.endpoint.connections][0]
    assert core._close_frame[1] == 0x04


def test_data_beyond_connection_window():
    net, client, server, conn = injectable_pair(initial_max_data=30_000, max_data_window=30_000,
                                                initial_max_stream_data=20_000)
    server.reading = False
    frames = [framing.StreamFrame(s, 0, b"y" * 1000, False) for s in range(1, 4)]
    for off in range(0, 20_000, 1000):
        _inject(net, conn, server, [framing.StreamFrame(s, off, b"y" * 1000, False) for s in (1, 2)])
        if server.terminated():
            break
    assert frames
    assert _server_close_code(server) == ErrorCode.FLOW_CONTROL_ERROR


def test_stream_ids_beyond_the_limit():
    net, client, server, conn = injectable_pair(max_streams=4)
    for sid in range(10, 20):
        _inject(net, conn, server, [framing.StreamFrame(sid, 0, b"\x00", False)])
        if server.terminated():
            break
    assert _server_close_code(server) == ErrorCode.STREAM_LIMIT_ERROR
    # the peer opened stream 0 plus 3 more before the fourth extra one was refused
    sconn_streams = [e for _, e in server.events]
    assert sconn_streams


def test_final_size_change():
    net, client, server, conn = injectable_pair()
    server.reading = False
    # (the half is incomplete: byte 0 is missing. Once every byte and the FIN arrived, a frame
    # in a later packet may start the next incarnation of the id, PROTOCOL.md §16.7)
    _inject(net, conn, server, [framing.StreamFrame(5, 1, b"ab", True)])
    _inject(net, conn, server, [framing.StreamFrame(5, 3, b"\x01c", True)])
    assert _server_close_code(server) == ErrorCode.FINAL_SIZE_ERROR


def test_final_size_change_in_the_packet_that_completed_the_half():
    """Frames in the packet that completed a half (or in earlier ones) are of that incarnation:
    the final-size rules apply to them."""
    net, client, server, conn = injectable_pair()
    server.reading = False
    _inject(net, conn, server, [framing.StreamFrame(5, 0, b"\x02ab", True),
                                framing.StreamFrame(5, 3, b"\x01c", True)])
    assert _server_close_code(server) == ErrorCode.FINAL_SIZE_ERROR


def test_reset_with_final_size_below_received():
    net, client, server, conn = injectable_pair()
    server.reading = False
    _inject(net, conn, server, [framing.StreamFrame(5, 0, b"\x05abcde", False)])
    _inject(net, conn, server, [framing.ResetStreamFrame(5, 1, 3)])
    assert _server_close_code(server) == ErrorCode.FINAL_SIZE_ERROR


def test_handshake_done_from_client():
    net, client, server, conn = injectable_pair()
    _inject(net, conn, server, [framing.HandshakeDoneFrame()])
    assert _server_close_code(server) == ErrorCode.PROTOCOL_VIOLATION


def test_unknown_frame_type():
    net, client, server, conn = injectable_pair()
    sp = conn._spaces[1]
    pn = sp.next_pn
    sp.next_pn += 1
    buf = codec.Buffer(capacity=64)
    trunc, pn_len = codec.encode_packet_number(pn, sp.largest_acked)
    codec.push_short_header(buf, conn.peer_cid, trunc, pn_len)
    buf.push_varint(0x3F)  # not a v1 frame type
    buf.push_bytes(b"\x00" * 20)
    server.receive_datagram(buf.data, CLIENT_ADDR, net.now)
    assert _server_close_code(server) == ErrorCode.FRAME_ENCODING_ERROR


def test_too_many_connection_ids():
    net, client, server, conn = injectable_pair()
    frames = [framing.NewConnectionIdFrame(seq, 0, os.urandom(8), os.urandom(16)) for seq in range(10, 18)]
    _inject(net, conn, server, frames)
    assert _server_close_code(server) == ErrorCode.CONNECTION_ID_LIMIT_ERROR


def test_retirements_faster_than_acknowledged_are_bounded():
    # each NEW_CONNECTION_ID retires the one before it (retire_prior_to = its own sequence),
    # and nothing the server sends is ever acknowledged (the network does not run): the server
    # owes one RETIRE_CONNECTION_ID per frame, so without a bound the list only grows
    net, client, server, conn = injectable_pair()
    sconn = server.endpoint.connections[0]
    for seq in range(10, 110):
        _inject(net, conn, server, [framing.NewConnectionIdFrame(seq, seq, os.urandom(8), os.urandom(16))])
        if sconn.is_closed:
            break
    assert _server_close_code(server) == ErrorCode.CONNECTION_ID_LIMIT_ERROR
    assert seq < 40  # closed once 16 retirements (4x active_connection_id_limit=2, at least 16) were owed


def test_acknowledged_retirements_do_not_count():
    # the same rotation at the pace of the acknowledgements: the peer acknowledges the server's
    # RETIRE_CONNECTION_ID frames before it sends the next ID, so any number of rotations is fine
    net, client, server, conn = injectable_pair()
    sconn = server.endpoint.connections[0]
    from dquic._frames import AckFrame
    for seq in range(10, 60):
        _inject(net, conn, server, [framing.NewConnectionIdFrame(seq, seq, os.urandom(8), os.urandom(16))])
        # acknowledge every packet the server has sent so far, as the peer would
        sent = sconn._spaces[1].next_pn
        _inject(net, conn, server, [AckFrame([(0, sent)], 0)])
        assert not sconn.is_closed, seq
    assert not sconn._cids.retiring


def test_garbage_is_dropped_and_connection_survives():
    # with packet protection, forged packets fail authentication and are dropped
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), seed=3)
    conn.send_message(0, b"hello")
    net.run(until=lambda: server.count(0) == 1, max_time=5)
    rng = __import__("random").Random(5)
    sconn = server.endpoint.connections[0]
    for i in range(300):
        n = rng.randrange(1, 1400)
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 3 == 0:
            # aim at the connection: a valid-looking short header with our CID
            data = bytes([0x40 | (data[0] & 0x3F)]) + sconn.host_cid + data[9:]
        server.receive_datagram(data, CLIENT_ADDR, net.now)
    assert sconn.is_established
    assert sconn.packets_dropped >= 100
    conn.send_message(0, b"still here")
    net.run(until=lambda: server.count(0) == 2, max_time=5)
    assert server.stream_messages(0)[-1] == b"still here"


@pytest.mark.parametrize("encryption", [True, False])
def test_duplicated_datagrams_change_nothing(encryption):
    """Every datagram delivered twice: each message still arrives exactly once."""
    link = LinkConfig(delay=0.01, duplicate=1.0)
    net, client, server, conn = make_pair(link, seed=2, encryption=encryption)
    msgs = [os.urandom(n) for n in (0, 10, 5000, 100_000)]
    for m in msgs:
        conn.send_message(2, m)
    net.run(until=lambda: server.count(2) == len(msgs), max_time=30)
    net.run_for(1.0)
    assert server.stream_messages(2) == msgs
    assert server.endpoint.connections[0].duplicate_packets > 0


def test_memory_bounded_by_windows_whatever_the_peer_sends():
    """A peer spraying out-of-order data over many streams cannot make the server buffer more
    than its connection window."""
    net, client, server, conn = injectable_pair(initial_max_data=200_000, max_data_window=200_000,
                                                initial_max_stream_data=50_000, max_streams=64)
    server.reading = False
    sconn = server.endpoint.connections[0]
    for sid in range(1, 40):
        for off in range(1000, 50_000, 7000):
            _inject(net, conn, server, [framing.StreamFrame(sid, off, b"z" * 900, False)])
            if server.terminated():
                break
        if server.terminated():
            break
    buffered = sum(s.recv.buffered for s in sconn._streams.values())
    assert buffered <= 200_000
    # either it is still within limits, or it closed with FLOW_CONTROL_ERROR
    if server.terminated():
        assert _server_close_code(server) == ErrorCode.FLOW_CONTROL_ERROR


def _established_for_flood(**server_kw):
    """``_established``, then nothing the server sends reaches the client any more: the server
    acknowledges the injected packets, which the real client never sent and would take for a
    protocol violation; what matters here is what the server does."""
    net, client, server, conn = injectable_pair(**server_kw)
    net.link(CLIENT_ADDR, SERVER_ADDR, LinkConfig(delay=0.005), LinkConfig(delay=0.005, loss=1.0))
    return net, client, server, conn


def _flood(net, conn, server, make_frame, ids, per_packet=200):
    """Inject one frame per stream id of ``ids``, ``per_packet`` frames to a packet."""
    ids = list(ids)
    for i in range(0, len(ids), per_packet):
        _inject(net, conn, server, [make_frame(sid) for sid in ids[i:i + per_packet]])
        if server.terminated():
            break


def test_frames_for_stream_halves_we_never_opened_create_nothing():
    """MAX_STREAM_DATA and STOP_SENDING name our sending half of a stream; for a half we never
    opened they are ignored: no stream state, no RESET_STREAM in reply, no limit consumed.
    STREAM_DATA_BLOCKED for a stream we do not know is ignored as well."""
    net, client, server, conn = _established_for_flood(max_streams=16)
    sconn = server.endpoint.connections[0]
    before = len(sconn._streams)
    _flood(net, conn, server, lambda sid: framing.MaxStreamDataFrame(sid, 1 << 20),
           range(1000, 51_000))
    _flood(net, conn, server, lambda sid: framing.StopSendingFrame(sid, 7),
           range(100_000, 150_000))
    _flood(net, conn, server, lambda sid: framing.StreamDataBlockedFrame(sid, 0),
           range(200_000, 210_000))
    assert not server.terminated()
    assert len(sconn._streams) == before
    assert not sconn._sset.send_queue  # no RESET_STREAM (nor anything else) queued in reply
    assert sconn._sset.peer_opened == 1  # stream 0, opened by the client's real data
    assert not [e for _, e in server.events if type(e).__name__ == "StopSendingReceived"]
    # the connection still works
    _inject(net, conn, server, [framing.StreamFrame(0, 6, b"\x05after", False)])
    assert server.count(0) == 2 and not server.terminated()


def test_stop_sending_for_a_stream_the_peer_opened_and_we_never_sent_on():
    """A stream the peer opened (its half) has no sending half of ours until we send: STOP_SENDING
    for it is ignored too, so a peer cannot make us send a RESET_STREAM per stream it opens."""
    net, client, server, conn = _established_for_flood(max_streams=64)
    sconn = server.endpoint.connections[0]
    _flood(net, conn, server, lambda sid: framing.StreamFrame(sid, 0, b"\x01x", False),
           range(1, 40), per_packet=10)
    _flood(net, conn, server, lambda sid: framing.StopSendingFrame(sid, 3), range(1, 40))
    assert not server.terminated()
    assert not sconn._sset.send_queue
    assert all(not sconn._streams[sid].send.is_reset for sid in range(1, 40))
    # once we have sent on a stream, STOP_SENDING applies: RESET_STREAM goes back
    sconn.send_message(5, b"reply")
    net.poll()
    _inject(net, conn, server, [framing.StopSendingFrame(5, 9)])
    assert sconn._streams[5].send.is_reset  # and its RESET_STREAM went out
    assert [e.stream_id for _, e in server.events
            if type(e).__name__ == "StopSendingReceived"] == [5]


def _ack_all(sconn):
    """An ACK frame for every 1-RTT packet the server sent so far."""
    return framing.AckFrame([(0, sconn._app.next_pn)], 0)


@pytest.mark.parametrize("acks", [True, False])
def test_streams_opened_and_finished_without_end_keep_memory_bounded(acks):
    """A peer that keeps opening stream halves and finishing them at once (empty STREAM with
    FIN, or RESET_STREAM), using every stream credit it is given, cannot make the server keep
    state for all of them: finished halves beyond the newest ``max_streams`` are forgotten once
    resolved (the peer acknowledged an ACK of ours that covered them), and the credit of a half
    finished while ``max_streams`` are unresolved goes back only when one resolves. A peer that
    acknowledges gets credit for ever more halves; one that never does is held at about twice
    ``max_streams`` (PROTOCOL.md §16.7)."""
    limit = 64
    net, client, server, conn = _established_for_flood(max_streams=limit)
    sconn = server.endpoint.connections[0]
    sid = 1000
    opened = 0
    largest = 0
    for rnd in range(400):
        room = sconn._sset.max_streams_local - sconn._sset.peer_opened
        if room <= 0:
            net.run_for(0.05)  # wait for credit, as a peer that obeys MAX_STREAMS does
            if acks:
                _inject(net, conn, server, [_ack_all(sconn)])
            continue
        frames = [_ack_all(sconn)] if acks else []
        for _ in range(min(room, 100)):
            sid += 1
            if sid % 2:
                frames.append(framing.StreamFrame(sid, 0, b"", True))
            else:
                frames.append(framing.ResetStreamFrame(sid, 1, 0))
        _inject(net, conn, server, frames)
        opened += sum(1 for f in frames if not isinstance(f, framing.AckFrame))
        assert not server.terminated(), server.terminated()
        largest = max(largest, len(sconn._streams))
    if acks:
        assert opened >= 5_000
    else:
        assert 2 * limit - 2 <= opened <= 2 * limit + 2, opened
    assert largest <= 2 * limit + 2, largest
    # a late copy (in a packet numbered below those that followed) of a frame for one of the
    # newest finished halves is not taken for a new half: the packet is dropped unacknowledged
    sp = conn._spaces[1]
    late = sp.next_pn
    sp.next_pn += 3
    _inject(net, conn, server, [_ack_all(sconn)] if acks else [framing.PingFrame()])
    after = sp.next_pn
    opened_before = sconn._sset.peer_opened
    dropped_before = sconn.packets_dropped
    sp.next_pn = late
    _inject(net, conn, server, [framing.StreamFrame(sid, 0, b"", True),
                                framing.ResetStreamFrame(sid - 1, 1, 0)])
    sp.next_pn = after
    assert sconn._sset.peer_opened == opened_before and not server.terminated()
    assert sconn.packets_dropped == dropped_before + 1
    assert sconn._app.rx.count_in(late, late + 1) == 0
