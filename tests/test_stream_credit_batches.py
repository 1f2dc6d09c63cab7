"""When stream credit goes back to the peer (PROTOCOL.md §16.7, *Credit*): MAX_STREAMS is sent at
once when an eighth of ``max_streams`` came back since the last one, when the peer has opened
every half it was allowed (it may be waiting), or when it says so with STREAMS_BLOCKED;
otherwise the raised limit goes with the next packet this side sends. Credit read back a
message at a time so costs a packet per batch, not one per message."""
from __future__ import annotations

from dquic import _frames as framing
from dquic.config import Configuration
from dquic.testing.pairs import core_pair, exchange
from _sansio import inject

C_ADDR = ("192.0.2.1", 1000)
S_ADDR = ("198.51.100.1", 2000)
MAX_STREAMS = 64  # an eighth: 8


def _pair():
    client, server = core_pair(Configuration(encryption=False, max_streams=MAX_STREAMS),
                               Configuration(is_client=False, encryption=False,
                                             max_streams=MAX_STREAMS), C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=50, step=0.01)
    assert client.is_established and server.is_established
    return client, server, now


def _deliver(src, dst, src_addr, now) -> int:
    """Everything ``src`` has to send now, to ``dst``; returns how many datagrams."""
    out = src.datagrams_to_send(now)
    for d, _ in out:
        dst.receive_datagram(d, src_addr, now)
    return len(out)


def _settle(client, server, now):
    """Exchange until neither side has anything to send (acknowledgements included)."""
    for _ in range(50):
        now += 0.03  # past the ACK delay
        for conn in (client, server):
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
        if not (_deliver(client, server, C_ADDR, now) + _deliver(server, client, S_ADDR, now)):
            return now
    raise AssertionError("the pair did not settle")


def _max_streams_sent(server, now) -> list:
    """The MAX_STREAMS values in what ``server`` sends now (short-header packets without
    protection: first byte, the client's connection ID, the packet number, the frames)."""
    from dquic._codec import Buffer

    values = []
    for d, _ in server.datagrams_to_send(now):
        buf = Buffer(data=d)
        buf.seek(1 + len(server.peer_cid) + (d[0] & 0x03) + 1)
        while not buf.eof():
            f = framing.pull_frame(buf)
            if isinstance(f, framing.MaxStreamsFrame):
                values.append(f.maximum)
    return values


def _send_ended(client, sids):
    for sid in sids:
        client.send_message(sid, b"m%d" % sid)
        client.end_stream(sid)


def _read_all(server, sids):
    for sid in sids:
        piece = server.read_message(sid, 1 << 16)
        assert piece is not None and piece[1], sid
        assert server.read_message(sid, 1 << 16) is None


def test_credit_below_a_batch_waits_for_the_next_packet():
    client, server, now = _pair()
    credit0 = client._sset.peer_stream_credit
    _send_ended(client, range(100, 104))
    _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)  # acknowledgements, before anything is read
    _read_all(server, range(100, 104))  # four halves finished: four credits back
    assert server._sset.max_streams_local == MAX_STREAMS + 4
    # no packet for them alone
    assert server.datagrams_to_send(now) == []
    assert client._sset.peer_stream_credit == credit0
    # they go with the next packet the server sends
    server.send_message(7, b"reply")
    assert _deliver(server, client, S_ADDR, now) == 1
    assert client._sset.peer_stream_credit == credit0 + 4
    assert client.read_message(7, 100)[0] == b"reply"


def test_a_batch_of_credit_goes_at_once():
    client, server, now = _pair()
    credit0 = client._sset.peer_stream_credit
    _send_ended(client, range(100, 100 + MAX_STREAMS // 8))
    _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)
    _read_all(server, range(100, 100 + MAX_STREAMS // 8 - 1))
    assert server.datagrams_to_send(now) == []  # seven: not yet
    _read_all(server, [100 + MAX_STREAMS // 8 - 1])  # the eighth
    assert _deliver(server, client, S_ADDR, now) == 1
    assert client._sset.peer_stream_credit == credit0 + MAX_STREAMS // 8


def test_credit_goes_at_once_when_the_peer_used_all_it_had():
    client, server, now = _pair()
    credit0 = client._sset.peer_stream_credit
    assert credit0 == MAX_STREAMS
    sids = range(100, 100 + MAX_STREAMS)
    _send_ended(client, sids)
    for _ in range(10):  # (several packets' worth)
        _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)
    assert server._sset.peer_opened == MAX_STREAMS
    assert client.stream_open_blocked(1000)
    _read_all(server, [100])  # one credit back: the client may be waiting for it
    assert _deliver(server, client, S_ADDR, now) == 1
    assert client._sset.peer_stream_credit == credit0 + 1
    assert not client.stream_open_blocked(1000)


def test_streams_blocked_brings_the_credit_not_yet_announced():
    client, server, now = _pair()
    _send_ended(client, range(100, 103))
    _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)
    _read_all(server, range(100, 103))
    assert server.datagrams_to_send(now) == []
    # the client says it is blocked at the limit the server last announced: the three
    # credits go now (with the ACK of that packet)
    # (the injected packet is one the client never sent: only the server's answer is looked at)
    inject(None, client, server, [framing.StreamsBlockedFrame(MAX_STREAMS)], C_ADDR, now=now)
    assert _max_streams_sent(server, now) == [MAX_STREAMS + 3]


def test_streams_blocked_about_an_older_limit_asks_for_nothing():
    client, server, now = _pair()
    _send_ended(client, range(100, 108))  # a batch: announced at once
    _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)
    _read_all(server, range(100, 108))
    now = _settle(client, server, now)
    assert client._sset.peer_stream_credit == MAX_STREAMS + 8
    _send_ended(client, [200])
    _deliver(client, server, C_ADDR, now)
    now = _settle(client, server, now)
    _read_all(server, [200])
    assert server.datagrams_to_send(now) == []
    # blocked at the first limit, which the server since raised: the frame crossed that
    # MAX_STREAMS; the answer is its ACK alone
    inject(None, client, server, [framing.StreamsBlockedFrame(MAX_STREAMS)], C_ADDR, now=now)
    assert _max_streams_sent(server, now) == []
