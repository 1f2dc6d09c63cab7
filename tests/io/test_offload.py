"""UDP segmentation offload: GSO sends and GRO receives carry exactly the datagrams of one
``sendto`` each; the endpoint and connection take GRO runs apart like separate datagrams."""
from __future__ import annotations

import errno
import os
import select
import socket
import sys
import time

import pytest

from dquic._socket import GSO_MAX_BYTES, UDPSocket
from dquic.config import Configuration
from dquic.connection import CoreConnection
from dquic.endpoint import Endpoint
from dquic.events import MessageReceived
from dquic.keys import KeyPair
from dquic.testing.pairs import exchange

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO/GRO are Linux features")


@pytest.fixture
def closing():
    """``closing(sock)`` returns ``sock``, closed when the test ends, whatever happens."""
    made = []

    def keep(sock):
        made.append(sock)
        return sock

    yield keep
    for sock in reversed(made):
        sock.close()


def _plain_receiver():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    r.bind(("127.0.0.1", 0))
    r.settimeout(2.0)
    return r


def _drain_plain(r, count):
    got = []
    for _ in range(count):
        got.append(r.recv(65535))
    return got


def _recv_all(udp: UDPSocket, want_bytes: int, limit: float = 2.0):
    """Read from ``udp`` until ``want_bytes`` arrived; return the split datagrams and the reads."""
    got, reads = [], []
    deadline = time.monotonic() + limit
    total = 0
    while total < want_bytes and time.monotonic() < deadline:
        select.select([udp.fileno()], [], [], 0.1)
        for data, addr, seg in udp.recv_batch(64):
            reads.append((len(data), seg))
            total += len(data)
            if seg:
                got.extend(data[i:i + seg] for i in range(0, len(data), seg))
            else:
                got.append(data)
    return got, reads


@linux_only
def test_offload_is_on_by_default_here_and_can_be_turned_off(closing):
    a = closing(UDPSocket())
    b = closing(UDPSocket(offload=False))
    assert a.gso and a.gro
    assert not b.gso and not b.gro


@linux_only
def test_gso_send_arrives_as_separate_datagrams(closing):
    r = closing(_plain_receiver())
    s = closing(UDPSocket())
    dest = r.getsockname()
    items = [(bytes([i]) * 1200, dest) for i in range(100)] + [(b"tail", dest)]
    # two trains as a connection builds them (at most GSO_MAX_BYTES each): 54 datagrams,
    # then 46 and the short tail
    trains = [(b"".join(d for d, _ in items[:54]), 1200, dest),
              (b"".join(d for d, _ in items[54:]), 1200, dest)]
    assert s.send_trains(trains) == (2, 0)
    assert s.datagrams_sent == len(items)
    assert s.gso_sends == 2
    got = _drain_plain(r, len(items))
    assert got == [d for d, _ in items]


@linux_only
def test_trains_to_several_addresses_with_short_last_segments(closing):
    r1, r2 = closing(_plain_receiver()), closing(_plain_receiver())
    s = closing(UDPSocket())
    a1, a2 = r1.getsockname(), r2.getsockname()
    first = [b"a%03d" % i + b"." * 1000 for i in range(30)] + [b"short"]
    second = [b"b%03d" % i + b"-" * 500 for i in range(5)]
    third = [b"c%03d" % i + b"." * 1000 for i in range(3)]
    trains = [(b"".join(first), 1004, a1), (b"".join(second), 504, a2),
              (b"".join(third), 1004, a1), (b"x" * 1200, 1200, a1)]
    assert s.send_trains(trains) == (4, 0)
    assert _drain_plain(r1, 35) == first + third + [b"x" * 1200]
    assert _drain_plain(r2, 5) == second


@linux_only
def test_gro_receive_coalesces_and_splits_exactly(closing):
    rx = closing(UDPSocket())
    tx = closing(UDPSocket())
    rx.bind(("127.0.0.1", 0))
    dest = rx.local_address
    count = GSO_MAX_BYTES // 1200
    items = [(os.urandom(1200), dest) for _ in range(count)] + [(os.urandom(700), dest)]
    trains = [(b"".join(d for d, _ in items[:count]), 1200, dest), (items[-1][0], 700, dest)]
    assert tx.send_trains(trains) == (2, 0)
    got, reads = _recv_all(rx, sum(len(d) for d, _ in items))
    assert got == [d for d, _ in items]
    assert any(seg == 1200 for _, seg in reads)  # at least one coalesced read
    assert rx.datagrams_received == len(items)


class _RefusingSock:
    """A socket stand-in whose GSO sends fail as on a device that cannot segment."""

    def __init__(self, sock):
        self._sock = sock
        self.sendmsg_calls = 0

    def sendmsg(self, *args):
        self.sendmsg_calls += 1
        raise OSError(errno.EIO, "segmentation not supported")

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_gso_falls_back_to_one_datagram_per_call(closing):
    r = closing(_plain_receiver())
    s = closing(UDPSocket())
    real = s.sock
    s.gso = True
    s.sock = _RefusingSock(real)
    dest = r.getsockname()
    items = [(bytes([i]) * 1000, dest) for i in range(20)]
    assert s.send_trains([(b"".join(d for d, _ in items), 1000, dest)]) == (1, 0)
    assert not s.gso and s.sock.sendmsg_calls == 1
    assert _drain_plain(r, len(items)) == [d for d, _ in items]


# ---------------------------------------------------------------------- the core side of GRO
C_ADDR = ("127.0.0.1", 40000)
S_ADDR = ("127.0.0.1", 4433)


def _established_pair():
    client = CoreConnection(Configuration(), S_ADDR)
    server_ep = Endpoint(Configuration(is_client=False, identity=KeyPair.generate()), accept=True)
    client.connect(0.0)
    now = exchange(server_ep, client, C_ADDR, S_ADDR, 0.0, rounds=10,
                   until=lambda: client.handshake_confirmed)
    assert client.handshake_confirmed
    while server_ep.next_event() is not None:
        pass
    return client, server_ep, now


_PARTIAL: dict = {}


def _messages(ep):
    """Complete messages delivered since the last call: [(stream_id, bytes)]."""
    out = []
    while True:
        item = ep.next_event()
        if item is None:
            return out
        conn, ev = item
        if isinstance(ev, MessageReceived):
            while True:
                piece = conn.read_message(ev.stream_id, 1 << 20)
                if piece is None:
                    break
                key = (id(conn), ev.stream_id)
                buf = _PARTIAL.setdefault(key, bytearray())
                buf += piece[0]
                if piece[1]:
                    out.append((ev.stream_id, bytes(_PARTIAL.pop(key))))


def _one_run(client, now, nbytes, sid):
    """Queue ``nbytes`` on ``sid``; return (lead, run, size): the datagrams that do not share
    the common size, sent apart, and the run of equal-size datagrams (the last may be shorter)."""
    payload = os.urandom(nbytes)
    client.send_message(sid, payload)
    grams = [d for d, _ in client.datagrams_to_send(now)]
    size = len(grams[1])
    lead = [d for d in grams if len(d) != size and d is not grams[-1]]
    run = [d for d in grams if len(d) == size or d is grams[-1]]
    assert len(run) >= 5 and all(len(d) == size for d in run[:-1]) and len(run[-1]) <= size
    return payload, lead, run, size


def test_endpoint_receive_segments_equals_datagram_by_datagram():
    client, server_ep, now = _established_pair()
    payload, lead, run, size = _one_run(client, now, 8000, 4)
    for d in lead:
        server_ep.receive_datagram(d, C_ADDR, now)
    # one GRO read: a stray datagram for an unknown connection in the middle is dropped alone
    stray = bytes([0x40]) + os.urandom(size - 1)
    packed = b"".join(run[:2]) + stray + b"".join(run[2:])
    dropped = server_ep.datagrams_dropped
    server_ep.receive_segments(packed, size, C_ADDR, now)
    assert _messages(server_ep) == [(4, payload)]
    assert server_ep.datagrams_dropped == dropped + 1


def test_connection_receive_segments_stops_at_a_foreign_datagram():
    client, server_ep, now = _established_pair()
    server = server_ep.connections[0]
    _, lead, run, size = _one_run(client, now, 8000, 0)
    for d in lead:
        server.receive_datagram(d, C_ADDR, now)
    foreign = bytes([0x40]) + b"\xee" * (size - 1)  # a DCID that is not the server's
    packed = b"".join(run[:3]) + foreign + b"".join(run[3:])
    received = server.packets_received
    assert server.receive_segments(packed, size, C_ADDR, now) == 3 * size
    assert server.packets_received == received + 3
    assert server.receive_segments(memoryview(packed)[4 * size:], size, C_ADDR, now) == len(packed) - 4 * size
    assert server.packets_received == received + len(run)
    with pytest.raises(ValueError):
        server.receive_segments(packed, 0, C_ADDR, now)


# ---------------------------------------------------------------------- trains on the send side
def test_datagram_trains_carry_what_datagrams_to_send_would():
    client, server_ep, now = _established_pair()
    payload = os.urandom(200_000)
    client.send_message(8, payload)
    trains = client.datagram_trains(now, 65000, 64)
    assert trains
    count = 0
    for data, seg, addr in trains:
        assert addr == S_ADDR and 0 < seg <= 1200
        assert len(data) <= 65000 and -(-len(data) // seg) <= 64
        pieces = [bytes(data[i:i + seg]) for i in range(0, len(data), seg)]
        assert all(len(p) == seg for p in pieces[:-1]) and len(pieces[-1]) <= seg
        for p in pieces:
            server_ep.receive_datagram(p, C_ADDR, now)
        count += len(pieces)
    server = server_ep.connections[0]
    assert server.packets_received >= count  # every datagram authenticated and was taken
    # the rest follows once the server acknowledges; then the message arrives whole
    for _ in range(200):
        now += 0.001
        for d, _ in server_ep.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        for data, seg, _ in client.datagram_trains(now):
            server_ep.receive_segments(bytes(data), seg, C_ADDR, now)
        got = _messages(server_ep)
        if got:
            break
    assert got == [(8, payload)]


def test_send_trains_with_and_without_offload(closing):
    r = closing(_plain_receiver())
    dest = r.getsockname()
    grams = [bytes([i]) * 1000 for i in range(10)] + [b"end"]
    trains = [(b"".join(grams[:5]), 1000, dest), (b"solo", 4, dest), (b"".join(grams[5:]), 1000, dest)]
    want = grams[:5] + [b"solo"] + grams[5:]
    for offload in (True, False):
        s = closing(UDPSocket(offload=offload))
        assert s.send_trains(trains) == (3, 0)
        assert s.datagrams_sent == len(want)
        assert _drain_plain(r, len(want)) == want


class _FullAfter:
    """A socket stand-in whose buffer is full after ``n`` datagrams."""

    def __init__(self, sock, n):
        self._sock, self.n = sock, n

    def sendto(self, data, addr):
        if self.n <= 0:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.n -= 1
        return self._sock.sendto(data, addr)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _sender_filling_after(closing, n):
    """A plain receiver and a UDPSocket without offload whose socket buffer is full after ``n``
    datagrams: ``(receiver, sender, its real socket, the receiver's address)``."""
    r = closing(_plain_receiver())
    s = closing(UDPSocket(offload=False))
    real = s.sock
    s.sock = _FullAfter(real, n)
    return r, s, real, r.getsockname()


def test_send_trains_resumes_inside_a_train_without_offload(closing):
    r, s, real, dest = _sender_filling_after(closing, 4)
    grams = [bytes([i]) * 500 for i in range(6)]
    trains = [(b"".join(grams), 500, dest)]
    assert s.send_trains(trains) == (0, 2000)  # four went out, the fifth waits
    s.sock = real
    assert s.send_trains(trains, 0, 2000) == (1, 0)
    assert _drain_plain(r, 6) == grams


def test_queued_trains_wait_for_the_kernel_in_order(closing):
    r, s, real, dest = _sender_filling_after(closing, 3)
    grams = [bytes([i]) * 300 for i in range(8)]
    s.queue_trains([(b"".join(grams[:4]), 300, dest)])
    assert s.flush() == 3 and s.pending
    s.queue_trains([(b"".join(grams[4:]), 300, dest)])  # behind the rest of the first
    assert s.flush() == 0 and s.pending  # still full
    s.sock = real
    assert s.flush() == 5 and not s.pending
    assert s.flush() == 0
    assert _drain_plain(r, 8) == grams


def test_send_now_sends_a_lone_datagram_at_once_and_queues_what_the_kernel_refuses(closing):
    r, s, real, dest = _sender_filling_after(closing, 1)
    assert s.send_now([(b"first", 5, dest)]) == 1 and not s.pending
    assert s.send_now([(b"second", 6, dest)]) == 0 and s.pending  # the buffer is full: kept
    # what comes next waits behind it, in order, even a lone datagram
    assert s.send_now([(b"third", 5, dest)]) == 0 and s.pending
    s.sock = real
    assert s.flush() == 2 and not s.pending
    assert s.send_now([(b"".join([b"4" * 300, b"5" * 300]), 300, dest)]) == 2  # a train
    assert _drain_plain(r, 5) == [b"first", b"second", b"third", b"4" * 300, b"5" * 300]
    assert s.datagrams_sent == 5
