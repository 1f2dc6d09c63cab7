"""Path MTU discovery (PROTOCOL.md §14.7): a busy connection probes for larger datagrams, one
probe at a time, and uses the largest size the path carried; lost probes are no congestion
signal; short exchanges never probe; the local route's MTU (when the driver knows it) is the
first size tried."""
from __future__ import annotations

import socket
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dquic.config import Configuration
from dquic.testing.apps import CLIENT_ADDR, make_pair
from dquic.testing.sim import EVENT_SEND, LinkConfig

PAYLOAD = bytes(range(256)) * 2000  # 512 KB: well past the bytes a connection sends before probing


def _transfer(mtu=None, hint=None, payload=PAYLOAD, seed=1, **cfg):
    """A client sends ``payload`` as one message over a link dropping datagrams larger than
    ``mtu``; returns (client connection, server node, sizes of the client's datagrams)."""
    net, client, server, conn = make_pair(
        LinkConfig(delay=0.005, mtu=mtu), seed=seed,
        client_config=Configuration(**cfg) if cfg else None)
    if hint is not None:
        conn.set_route_mtu(hint)
    sent = []
    net.on_event(lambda now, kind, src, dst, size: sent.append((src, size))
                 if kind == EVENT_SEND else None)
    conn.send_message(0, payload)
    for _ in range(4000):
        net.run_for(0.005)
        if server.count(0):
            break
    assert server.stream_messages(0) == [payload]
    return conn, server, [size for src, size in sent if src != conn.peer_addr]


def test_a_busy_connection_raises_its_datagram_size_to_the_default_ceiling():
    conn, _, sizes = _transfer()
    assert conn.datagram_size == 1452
    assert max(sizes) == 1452
    assert conn.stats.datagram_size == 1452
    assert conn._tx.pmtu_probes_sent == 1  # the first probe passed: the search is over
    assert conn.stats.pmtu_probes_lost == 0


def test_the_route_mtu_is_tried_first_and_bounded_by_the_configured_maximum():
    conn, _, sizes = _transfer(hint=65507)
    assert conn.datagram_size == 8952  # mtu_discovery_max
    assert max(sizes) == 8952
    conn, _, sizes = _transfer(hint=4000)
    assert conn.datagram_size == 4000
    assert max(sizes) == 4000


def test_lost_probes_lower_the_search_without_a_congestion_response():
    net, client, server, conn = make_pair(LinkConfig(delay=0.005, mtu=1400), seed=1)
    sent = []
    net.on_event(lambda now, kind, src, dst, size: sent.append(size)
                 if kind == EVENT_SEND and src != conn.peer_addr else None)
    n = 0
    for n in range(1, 21):  # messages until the search ends
        conn.send_message(0, PAYLOAD)
        for _ in range(2000):
            net.run_for(0.005)
            if server.count(0) == n:
                break
        if conn._tx.pmtu_hi - conn.datagram_size < 16 and conn._tx.pmtu_probe_size == 0:
            break
    assert server.stream_messages(0) == [PAYLOAD] * n
    assert 1400 - 16 < conn.datagram_size <= 1400
    st = conn.stats
    assert st.pmtu_probes_lost >= 3  # 1452 (three times), and sizes between 1400 and it
    assert st.packets_lost == 0  # (probes are not counted as lost packets ...)
    assert conn._cc.congestion_events == 0  # (... nor as congestion)
    # nothing above the path's MTU was sent but the probes that were lost
    assert sum(1 for s in sent if s > 1400) == st.pmtu_probes_lost


def test_a_route_mtu_larger_than_the_path_falls_back_to_ethernet_sizes():
    conn, _, _ = _transfer(mtu=1500, hint=8952, payload=PAYLOAD * 4)
    assert 1452 <= conn.datagram_size <= 1500
    assert conn._cc.congestion_events == 0


def test_short_exchanges_and_disabled_discovery_never_probe():
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), seed=3)
    for i in range(12):  # requests of 1000 bytes on an established connection: 12 KB in all
        conn.send_message(i, b"x" * 1000)
        net.run(until=lambda i=i: server.count(i) == 1, max_time=net.now + 5)
    assert conn.is_established and conn._tx.pmtu_probes_sent == 0 and conn.datagram_size == 1200
    conn, _, sizes = _transfer(mtu_discovery=False)
    assert conn._tx.pmtu_probes_sent == 0 and max(sizes) == 1200
    assert conn.datagram_size == 1200


def test_configuration_bounds():
    with pytest.raises(ValueError):
        Configuration(mtu_discovery_max=1000).validate()
    with pytest.raises(ValueError):
        Configuration(mtu_discovery_max=70000).validate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options")
def test_sockets_never_fragment_and_know_the_loopback_route():
    from dquic._socket import UDPSocket, route_mtu

    sock = UDPSocket(socket.AF_INET)
    try:
        assert sock.sock.getsockopt(0, 10) == 3  # IP_MTU_DISCOVER: IP_PMTUDISC_PROBE (DF set)
    finally:
        sock.close()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("127.0.0.1", 9))
        lo = probe.getsockopt(0, 14)  # IP_MTU of the loopback route
    finally:
        probe.close()
    assert route_mtu(("127.0.0.1", 4433)) == lo - 28


def test_dquic_over_loopback_sends_larger_datagrams_once_busy():
    from dquic.sync import DQUIC

    with DQUIC() as server, DQUIC() as client:
        server.bind(("127.0.0.1", 0))
        server.settimeout(30)
        client.settimeout(30)
        dest = ("127.0.0.1", server.local_address[1])
        data = bytes(range(256)) * 4096  # 1 MiB
        client.send_to(dest, {0: data})
        got = bytearray()
        while len(got) < len(data):
            _, msgs = server.receive_from(1 << 20)
            got += msgs.get(0, b"")
        assert bytes(got) == data
        client.flush(timeout=30)
        size = client.connections[0].stats.datagram_size
    assert size > 1452  # the loopback route takes far more than Ethernet


def test_a_path_that_stops_carrying_the_size_found_falls_back_to_the_base_size():
    # a black hole (RFC 8899 §4.3): the route changes under a connection sending 8952-byte
    # datagrams to one carrying at most 1400; after a few probe timeouts it sends 1200-byte
    # datagrams again, delivers everything, and searches again (up to 1452 now)
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), seed=2)
    conn.set_route_mtu(8952)
    conn.send_message(0, PAYLOAD)
    net.run(until=lambda: server.count(0) == 1, max_time=30)
    assert conn.datagram_size == 8952
    net.link(conn.peer_addr, server.endpoint.connections[0].peer_addr, LinkConfig(delay=0.005, mtu=1400))
    conn.send_message(0, PAYLOAD)
    net.run(until=lambda: server.count(0) == 2, max_time=net.now + 60)
    assert server.stream_messages(0) == [PAYLOAD, PAYLOAD]
    assert 1200 <= conn.datagram_size <= 1400


def test_a_window_limited_transfer_over_a_bottleneck_finds_the_size():
    # the data fills the congestion window whenever it opens; the probe goes before the data
    # of a send, so the search still ends (here at the bottleneck link's 1400 bytes)
    net, client, server, conn = make_pair(
        LinkConfig(delay=0.010, bandwidth=20e6, queue_limit=60_000, mtu=1400), seed=4)
    conn.send_message(0, PAYLOAD * 4)
    net.run(until=lambda: server.count(0) == 1, max_time=60)
    assert server.stream_messages(0) == [PAYLOAD * 4]
    assert 1400 - 16 < conn.datagram_size <= 1400


def test_the_minimum_window_follows_the_datagram_size():
    # RFC 9002 §7.2: two datagrams. Left at two of the base size, a window reduced by losses
    # could end below one datagram of the size found, and then nothing could be sent again
    net, client, server, conn = make_pair(LinkConfig(delay=0.005, loss=0.05), seed=5)
    conn.set_route_mtu(8952)
    payload = PAYLOAD * 4
    conn.send_message(0, payload)
    net.run(until=lambda: server.count(0) == 1, max_time=120)
    assert server.stream_messages(0) == [payload]
    assert conn.datagram_size == 8952
    assert conn._cc.minimum_window == 2 * 8952
    assert conn._cc.congestion_events > 0 and conn._cc.congestion_window >= 2 * 8952


def test_a_route_that_takes_only_the_base_size_stops_the_search():
    conn, _, sizes = _transfer(hint=1200)
    assert conn._tx.pmtu_probes_sent == 0 and max(sizes) == 1200


def test_a_socket_that_may_fragment_keeps_the_base_size(monkeypatch):
    # where the don't-fragment bit cannot be set, a larger probe could pass as IP fragments:
    # the drivers then search for nothing
    import dquic._socket as sockmod
    from dquic.sync import DQUIC

    monkeypatch.setattr(sockmod, "set_dont_fragment", lambda sock, dual_stack=False: False)
    assert sockmod.no_larger_route(("192.0.2.1", 443)) == 1200
    with DQUIC() as server, DQUIC() as client:
        server.bind(("127.0.0.1", 0))
        server.settimeout(30)
        client.settimeout(30)
        dest = ("127.0.0.1", server.local_address[1])
        data = bytes(range(256)) * 2048
        client.send_to(dest, {0: data})
        got = bytearray()
        while len(got) < len(data):
            _, msgs = server.receive_from(1 << 20)
            got += msgs.get(0, b"")
        client.flush(timeout=30)
        assert client.connections[0].stats.datagram_size == 1200


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mtu=st.integers(1200, 9100), hint=st.sampled_from([None, 1472, 8952, 65507]),
       loss=st.sampled_from([0.0, 0.02]), seed=st.integers(0, 1000))
def test_any_path_delivers_and_only_probes_meet_its_mtu(mtu, hint, loss, seed):
    net, client, server, conn = make_pair(LinkConfig(delay=0.005, mtu=mtu, loss=loss), seed=seed)
    if hint is not None:
        conn.set_route_mtu(hint)
    payload = PAYLOAD[: 300_000]
    conn.send_message(0, payload)
    net.run(until=lambda: server.count(0) == 1, max_time=120)
    assert server.stream_messages(0) == [payload]
    assert 1200 <= conn.datagram_size <= max(1200, mtu)
    # what the path's MTU dropped were probes, never data
    assert net.link_stats(CLIENT_ADDR, conn.peer_addr).dropped_mtu <= conn._tx.pmtu_probes_sent
