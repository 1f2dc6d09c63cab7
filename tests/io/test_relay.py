"""The lossy loopback relay itself, with plain UDP sockets."""
from __future__ import annotations

import socket
import time

import pytest

from dquic.testing.relay import LossyRelay

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def udp():
    made = []

    def make(timeout=2.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def recv_all(sock, expected, quiet=0.3):
    """Read until ``expected`` datagrams arrived, or nothing came for ``quiet`` seconds."""
    out = []
    sock.settimeout(quiet)
    while len(out) < expected:
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            break
        out.append((data, addr))
    return out


def pump(relay, client, server, n, expected=None):
    for i in range(n):
        client.sendto(b"%d" % i, relay.address)
    return [int(d) for d, _ in recv_all(server, n if expected is None else expected)]


def test_forwards_both_ways_with_one_upstream_port_per_client(udp):
    server = udp()
    with LossyRelay(server.getsockname()) as relay:
        a, b = udp(), udp()
        a.sendto(b"from a", relay.address)
        (data, up_a), = recv_all(server, 1)
        assert data == b"from a"
        b.sendto(b"from b", relay.address)
        (data, up_b), = recv_all(server, 1)
        assert data == b"from b" and up_a != up_b
        server.sendto(b"to a", up_a)
        server.sendto(b"to b", up_b)
        assert recv_all(a, 1) == [(b"to a", relay.address)]
        assert recv_all(b, 1) == [(b"to b", relay.address)]
        c = relay.counters
        assert (c.to_server, c.to_client, c.clients, c.dropped) == (2, 2, 2, 0)


def test_loss_is_seeded_and_deterministic(udp):
    server = udp()
    runs = []
    for seed in (5, 5, 6):
        with LossyRelay(server.getsockname(), loss=0.5, seed=seed) as relay:
            client = udp()
            got = pump(relay, client, server, 200)
            runs.append(sorted(got))
            assert relay.counters.dropped == 200 - len(got)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert 50 < len(runs[0]) < 150


def test_duplicate_and_blackhole(udp):
    server = udp()
    with LossyRelay(server.getsockname(), duplicate=1.0) as relay:
        client = udp()
        got = pump(relay, client, server, 20, expected=40)
        assert sorted(got) == sorted(list(range(20)) * 2)
        assert relay.counters.duplicated == 20
        relay.blackhole = True
        assert pump(relay, client, server, 10) == []
        assert relay.counters.dropped == 10


def test_reorder_and_delay(udp):
    server = udp()
    with LossyRelay(server.getsockname(), reorder=0.3, reorder_delay=0.02, seed=3) as relay:
        client = udp()
        got = pump(relay, client, server, 100)
        assert sorted(got) == list(range(100))
        assert got != list(range(100)) and relay.counters.reordered > 0
    with LossyRelay(server.getsockname(), delay=0.1) as relay:
        client = udp()
        t0 = time.monotonic()
        client.sendto(b"x", relay.address)
        assert recv_all(server, 1, quiet=2)[0][0] == b"x"
        assert time.monotonic() - t0 >= 0.09


def test_direction_only_impairs_one_way(udp):
    server = udp()
    with LossyRelay(server.getsockname(), loss=1.0, direction="to_client") as relay:
        client = udp()
        assert pump(relay, client, server, 5) == list(range(5))
        client.sendto(b"again", relay.address)
        (data, upstream), = recv_all(server, 1)
        server.sendto(b"reply", upstream)
        assert recv_all(client, 1) == []
        assert relay.counters.dropped == 1


def test_bounded_queue_overflow(udp):
    server = udp()
    with LossyRelay(server.getsockname(), delay=0.5, max_queue=10) as relay:
        client = udp()
        for i in range(50):
            client.sendto(b"%d" % i, relay.address)
        got = recv_all(server, 50, quiet=1.5)
        assert len(got) == 10
        assert relay.counters.overflow == 40


def test_validation_and_idempotent_stop(udp):
    server = udp()
    for bad in (dict(loss=1.5), dict(duplicate=-0.1), dict(delay=-1), dict(direction="sideways")):
        with pytest.raises(ValueError):
            LossyRelay(server.getsockname(), **bad)
    relay = LossyRelay(server.getsockname()).start()
    relay.start()
    relay.stop()
    relay.stop()
    with pytest.raises(RuntimeError):
        relay.start()
