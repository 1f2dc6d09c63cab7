"""DQUIC over real sockets through the lossy loopback relay: byte-exact delivery under loss,
reordering and duplication, many clients, max_bytes splitting, close-after-send and a garbage
flood at the server."""
from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from _iohelpers import Receiver

pytestmark = pytest.mark.timeout(120)

IMPAIRED = dict(loss=0.05, reorder=0.05, duplicate=0.03)


def test_relay_forwards_and_impairs(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, **IMPAIRED)
    client = make_dquic()
    client.send_to(relay.address, {1: b"through the relay"})
    peer, got = server.receive_from(100)
    assert got == {1: b"through the relay"}
    # the server sees the relay's server-facing socket, not the client
    assert peer != client.local_address and peer[0] == "127.0.0.1"
    server.send_to(peer, {1: b"back"})
    assert client.receive_from(100) == (tuple(relay.address), {1: b"back"})
    c = relay.counters
    assert c.to_server > 0 and c.to_client > 0 and c.clients == 1


def test_byte_exact_messages_0_to_8mib_on_several_streams(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, **IMPAIRED)
    client = make_dquic()
    rng = random.Random(1)
    sizes = {0: [0, 1, 0, 1199, 1200, 1201], 1: [4096, 65535, 65536, 65537],
             2: [1 << 20, 3], 3: [8 << 20], 4: [rng.randrange(0, 200_000) for _ in range(10)]}
    sent = {sid: [rng.randbytes(n) for n in ns] for sid, ns in sizes.items()}
    rx = Receiver(server, 1 << 20)
    done = threading.Event()
    errors = []
    peer_holder = []

    def receive():
        try:
            rx.run(90, peer_key=lambda addr: peer_holder.append(addr) or "client")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        done.set()

    for sid, ns in sizes.items():
        rx.expect("client", sid, ns)
    t = threading.Thread(target=receive)
    t.start()
    # interleave: one message per stream per send_to call, streams in varying order
    for i in range(max(len(v) for v in sent.values())):
        batch = {sid: msgs[i] for sid, msgs in sent.items() if i < len(msgs)}
        client.send_to(relay.address, batch)
    t.join(100)
    assert done.is_set() and not errors, errors
    for sid, msgs in sent.items():
        assert rx.messages[("client", sid)] == msgs, sid
    assert len(set(peer_holder)) == 1
    c = relay.counters
    assert c.dropped > 0 and c.duplicated > 0 and c.reordered > 0, c
    stats = client.connections[0].stats
    assert stats.packets_lost > 0 and stats.bytes_retransmitted > 0


def test_eight_clients_at_once(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, **IMPAIRED)
    clients = [make_dquic() for _ in range(8)]

    def message(i, j):
        # self-describing: client index, total length, then random bytes
        n = random.Random(i * 10 + j).randrange(8, 300_000)
        return i.to_bytes(4, "big") + n.to_bytes(4, "big") + os.urandom(n - 8)

    payloads = [[message(i, j) for j in range(3)] for i in range(8)]
    errors = []
    replies = {}

    def run_client(i):
        try:
            c = clients[i]
            for j, p in enumerate(payloads[i]):
                c.send_to(relay.address, {j: p})
            _, d = c.receive_from(1 << 16)  # the server's answer: the total it received
            replies[i] = d
        except BaseException as exc:  # noqa: BLE001
            errors.append((i, exc))

    threads = [threading.Thread(target=run_client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    partial = {}
    complete = {}  # addr -> {stream: message}
    served = 0
    deadline = time.monotonic() + 90
    while served < 8:
        assert time.monotonic() < deadline, "server did not get everything"
        assert not errors, errors
        addr, d = server.receive_from(1 << 18)
        for sid, piece in d.items():
            buf = partial.setdefault((addr, sid), bytearray())
            buf += piece
            if len(buf) >= 8 and len(buf) == int.from_bytes(buf[4:8], "big"):
                complete.setdefault(addr, {})[sid] = bytes(partial.pop((addr, sid)))
        if len(complete.get(addr, ())) == 3:
            msgs = complete[addr]
            i = int.from_bytes(msgs[0][:4], "big")
            assert [msgs[j] for j in range(3)] == payloads[i]
            server.send_to(addr, {7: sum(len(m) for m in msgs.values()).to_bytes(8, "big")})
            served += 1
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(complete) == 8 and len(replies) == 8
    for i, d in replies.items():
        assert d == {7: sum(len(m) for m in payloads[i]).to_bytes(8, "big")}
    assert relay.counters.clients == 8
    assert len(server.connections) == 8


def test_max_bytes_splitting_through_loss(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, **IMPAIRED)
    client = make_dquic()
    msgs = {1: os.urandom(100_000), 2: os.urandom(777), 3: b""}
    client.send_to(relay.address, msgs)
    rx = Receiver(server, 1000)
    for sid, m in msgs.items():
        rx.expect("c", sid, [len(m)])
    rx.run(30, peer_key=lambda addr: "c")
    for sid, m in msgs.items():
        assert rx.messages[("c", sid)] == [m]
    assert rx.calls >= 100_000 // 1000


def test_close_right_after_send_to_still_delivers_through_loss(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, **IMPAIRED)
    client = make_dquic(linger=20.0)
    data = os.urandom(1 << 20)
    rx = Receiver(server, 1 << 20)
    rx.expect("c", 1, [len(data)])
    rx.expect("c", 2, [5])
    errors = []

    def receive():
        try:
            rx.run(60, peer_key=lambda addr: "c")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=receive)
    t.start()
    client.send_to(relay.address, {1: data, 2: b"final"})
    client.close()
    t.join(60)
    assert not errors, errors
    assert rx.messages[("c", 1)] == [data] and rx.messages[("c", 2)] == [b"final"]


def test_garbage_flood_does_not_stop_a_transfer_or_the_server(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, loss=0.02, reorder=0.02)
    client = make_dquic()
    data = os.urandom(4 << 20)
    stop = threading.Event()
    flooded = [0]

    def flood():
        rng = random.Random(99)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set() and flooded[0] < 200_000:
                n = rng.choice((1, 20, 100, 1200, 1500))
                junk = bytearray(rng.randbytes(n))
                if rng.random() < 0.5:
                    junk[0] |= 0xC0  # looks like a long header (Initial) packet
                try:
                    s.sendto(bytes(junk), server.local_address)
                except OSError:
                    pass
                flooded[0] += 1

    f = threading.Thread(target=flood)
    f.start()
    try:
        client.send_to(relay.address, {1: data})
        rx = Receiver(server, 1 << 20)
        rx.expect("c", 1, [len(data)])
        rx.run(60, peer_key=lambda addr: "c")
        assert rx.messages[("c", 1)] == [data]
        # still serving: a new client completes a round trip while the flood goes on
        other = make_dquic()
        other.send_to(server.local_address, {5: b"still alive?"})
        peer, got = server.receive_from(100)
        assert got == {5: b"still alive?"} and peer == other.local_address
        server.send_to(peer, {5: b"yes"})
        assert other.receive_from(100) == (server.local_address, {5: b"yes"})
    finally:
        stop.set()
        f.join(10)
    assert flooded[0] > 100
