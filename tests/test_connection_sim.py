"""CoreConnection scenarios in the deterministic simulator: delivery, flow control, lifecycle."""
from __future__ import annotations

import hashlib
import os
import random

import pytest

from dquic.config import Configuration
from dquic.errors import ErrorCode
from dquic.events import (
    ConnectionTerminated,
    DatagramAcknowledged,
    DatagramLost,
    DatagramReceived,
    HandshakeCompleted,
    PathChanged,
    StreamReset,
)
from dquic.testing import LinkConfig, SimulationError
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, make_pair, messages_digest
from _sansio import rebind_mid_transfer

MTU_PAYLOAD = 1200


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _lossy(loss: float, **kw) -> LinkConfig:
    return LinkConfig(delay=0.02, loss=loss, reorder=0.02, reorder_delay=0.005, duplicate=0.01,
                      bandwidth=50e6, queue_limit=400_000, **kw)


def _server_conn(server):
    conns = server.endpoint.connections
    assert len(conns) == 1
    return conns[0]


@pytest.mark.parametrize("encryption", [True, False])
def test_handshake_completes_and_reports_keys(encryption):
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), encryption=encryption)
    net.run(until=lambda: conn.is_established and server.handshakes(), max_time=5)
    assert isinstance(client.handshakes()[0], HandshakeCompleted)
    if encryption:
        # the client learnt the server's static key through the handshake
        assert conn.peer_key == server.endpoint.config.identity.public
    # 1 RTT = 20 ms: the client is established after about one round trip
    assert net.now < 0.05


SIZES = [0, 1, MTU_PAYLOAD - 1, MTU_PAYLOAD, MTU_PAYLOAD + 1, 70_000]


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05, 0.10, 0.30])
def test_byte_exact_delivery_under_impairment(loss):
    net, client, server, conn = make_pair(_lossy(loss), seed=int(loss * 100) + 7)
    sent = {}
    for sid in (0, 5, 2 ** 40):
        msgs = [_payload(sid * 31 + i, n) for i, n in enumerate(SIZES)]
        msgs.append(_payload(sid, 1 << 20))
        for m in msgs:
            conn.send_message(sid, m)
        sent[sid] = msgs
    total = sum(len(m) for ms in sent.values() for m in ms)
    net.run(until=lambda: all(server.count(s) == len(sent[s]) for s in sent), max_time=600)
    for sid, msgs in sent.items():
        assert server.stream_messages(sid) == msgs, f"stream {sid} differs"
    st = conn.stats
    assert st.stream_bytes_sent >= total
    # retransmissions stay proportional to what the network actually lost
    assert st.bytes_retransmitted <= 1.5 * st.bytes_lost + 10 * MTU_PAYLOAD


def test_bidirectional_echo_with_corruption():
    link = _lossy(0.02, corrupt=0.02, corrupt_bits=3)
    net, client, server, conn = make_pair(link, seed=3)
    msgs = [_payload(i, (i * 7919) % 5000) for i in range(60)]
    for m in msgs:
        conn.send_message(1, m)
    echoed = []

    def echo():
        sconn = server.endpoint.connections[0] if server.endpoint.connections else None
        if sconn is not None:
            got = server.stream_messages(1)
            while len(echoed) < len(got):
                sconn.send_message(1, got[len(echoed)])
                echoed.append(got[len(echoed)])
        return client.count(1) == len(msgs)

    net.run(until=echo, max_time=300)
    assert client.stream_messages(1) == msgs
    assert server.stream_messages(1) == msgs
    # corrupted datagrams were dropped, never delivered as data
    assert _server_conn(server).packets_dropped + conn.packets_dropped > 0


def test_streams_are_independent_head_of_line():
    """A stream whose data is stuck does not hold back another stream."""
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=4)
    net.run(until=lambda: conn.is_established, max_time=5)
    # stream 1 gets a huge message that will take a while; stream 2 a small one after it
    conn.send_message(1, _payload(1, 3 << 20))
    conn.send_message(2, b"small")
    net.run(until=lambda: server.count(2) == 1, max_time=30)
    assert server.count(1) == 0  # the big one is still in transit
    net.run(until=lambda: server.count(1) == 1, max_time=60)


def test_large_transfer_64mib_one_percent_loss():
    link = LinkConfig(delay=0.005, loss=0.01, bandwidth=1e9, queue_limit=4_000_000)
    net, client, server, conn = make_pair(link, seed=11)
    data = os.urandom(64 << 20)
    conn.send_message(9, data)
    server.keep_data = False
    net.run(until=lambda: server.count(9) == 1, max_time=600)
    assert server.digest(9) == messages_digest([data])


def _pair_with_a_stalled_reader(data, data_window, stream, stream_window, seed):
    """An unencrypted pair over a 5 ms link whose server reads nothing, with these flow-control
    limits (initial and window, for the connection and per stream)."""
    scfg = Configuration(is_client=False, encryption=False, initial_max_data=data,
                         max_data_window=data_window, initial_max_stream_data=stream,
                         max_stream_data_window=stream_window)
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), encryption=False,
                                          server_config=scfg, seed=seed)
    server.reading = False
    return net, client, server, conn


def test_receiver_that_does_not_read_stops_sender_at_window():
    net, client, server, conn = _pair_with_a_stalled_reader(200_000, 400_000, 100_000, 200_000, 5)
    data = _payload(5, 3 << 20)
    conn.send_message(1, data)
    net.run_for(2.0)
    sconn = _server_conn(server)
    # the sender is stopped by the stream window: nothing beyond it was sent or buffered
    assert conn.stats.stream_bytes_sent <= 100_000 + 16
    s = sconn._streams[1]
    assert s.recv.buffered <= 100_000
    # resume reading: the rest flows as the window opens
    server.reading = True
    server.read_all()
    net.run(until=lambda: server.count(1) == 1, max_time=120)
    assert server.stream_messages(1) == [data]
    # auto-tuning never exceeded the configured maxima
    assert sconn._sset.recv_window.window <= 400_000
    assert s.recv.window.window <= 200_000


def test_migration_nat_rebinding_mid_transfer():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6), seed=6)
    data = _payload(6, 4 << 20)
    conn.send_message(1, data)
    new_addr = ("198.51.100.8", 40000)
    rebind_mid_transfer(net, server, 1, data, 1 << 20, new_addr)
    sconn = _server_conn(server)
    assert sconn.peer_addr == new_addr
    assert any(isinstance(e, PathChanged) and e.new_addr == new_addr for _, e in server.events)


def test_client_migration_when_server_sends():
    """The server keeps sending to the client's new address after a NAT rebinding."""
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6), seed=8)
    net.run(until=lambda: server.endpoint.connections and conn.is_established, max_time=5)
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    sconn = _server_conn(server)
    data = _payload(8, 2 << 20)
    sconn.send_message(2, data)
    new_addr = ("198.51.100.9", 40001)
    rebind_mid_transfer(net, client, 2, data, 500_000, new_addr)
    assert sconn.peer_addr == new_addr


def test_close_is_reported_to_peer_and_both_terminate():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=9)
    conn.send_message(0, b"bye")
    net.run(until=lambda: server.count(0) == 1, max_time=5)
    conn.close(error_code=7, reason="done")
    net.run(until=lambda: not server.endpoint.connections and not client.endpoint.connections,
            max_time=10)
    term = server.terminated()[0]
    assert term.by_peer and term.error_code == 7 and term.reason == "done" and term.application


def test_idle_timeout_terminates_both_sides():
    ccfg = Configuration(idle_timeout=1.0)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg, seed=10)
    net.run(until=lambda: conn.is_established, max_time=5)
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=10)
    assert client.terminated()[0].timeout
    assert server.terminated()[0].timeout
    assert 1.0 <= net.now < 3.0


def test_keep_alive_prevents_idle_timeout():
    ccfg = Configuration(idle_timeout=1.0, keep_alive=0.3)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg, seed=12)
    net.run_for(5.0)
    assert conn.is_established and server.endpoint.connections


def test_handshake_timeout_without_server():
    ccfg = Configuration(handshake_timeout=2.0)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, blackholes=[(0, 100)]),
                                          client_config=ccfg, seed=13)
    net.run(until=lambda: not client.endpoint.connections, max_time=10)
    term = client.terminated()[0]
    assert term.timeout and term.reason == "handshake timeout"
    assert 2.0 <= net.now < 2.5


def test_blackhole_recovery_without_retransmission_storm():
    link = LinkConfig(delay=0.025, bandwidth=20e6, queue_limit=300_000, blackholes=[(1.0, 3.0)])
    net, client, server, conn = make_pair(link, seed=14, encryption=False)
    data = _payload(14, 8 << 20)
    conn.send_message(1, data)
    net.run(until=lambda: server.count(1) == 1, max_time=120)
    assert server.stream_messages(1) == [data]
    st = conn.stats
    # what was lost in the blackhole is resent about once, not over and over
    assert st.bytes_retransmitted <= 1.5 * st.bytes_lost + 20 * MTU_PAYLOAD


def test_stream_reset_reaches_peer():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=15)
    conn.send_message(4, b"first")
    net.run(until=lambda: server.count(4) == 1, max_time=5)
    conn.reset_stream(4, error_code=99)
    net.run(until=lambda: any(isinstance(e, StreamReset) for _, e in server.events), max_time=5)
    ev = [e for _, e in server.events if isinstance(e, StreamReset)][0]
    assert ev.stream_id == 4 and ev.error_code == 99


def test_datagrams_report_ack_and_loss():
    link = LinkConfig(delay=0.01, loss=0.3)
    net, client, server, conn = make_pair(link, seed=16)
    net.run(until=lambda: conn.is_established, max_time=10)
    ids = [conn.send_datagram(bytes([i]) * 1000) for i in range(50)]
    net.run_for(5.0)
    acked = {e.datagram_id for _, e in client.events if isinstance(e, DatagramAcknowledged)}
    lost = {e.datagram_id for _, e in client.events if isinstance(e, DatagramLost)}
    got = [e.data for _, e in server.events if isinstance(e, DatagramReceived)]
    assert acked and lost
    assert acked | lost == set(ids) and not (acked & lost)
    assert len(got) >= len(acked)


def test_same_seed_same_outcome():
    def run(seed):
        net, client, server, conn = make_pair(_lossy(0.05), seed=seed, encryption=False)
        conn.send_message(1, _payload(1, 300_000))
        net.run(until=lambda: server.count(1) == 1, max_time=60)
        return net.now, conn.stats.packets_sent, conn.stats.packets_lost

    assert run(21) == run(21)


def test_send_message_returns_payload_length_at_varint_boundaries():
    from dquic.connection import CoreConnection

    c = CoreConnection(Configuration(encryption=False), SERVER_ADDR)
    for n in (0, 1, 62, 63, 64, 16382, 16383, 16384, 70_000):
        assert c.send_message(1, bytes(n)) == n


def test_two_successive_migrations_are_both_validated():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6), seed=17)
    data = _payload(17, 3 << 20)
    conn.send_message(1, data)
    addrs = [CLIENT_ADDR, ("198.51.100.20", 41000), ("198.51.100.21", 42000)]
    for i, new in enumerate(addrs[1:], 1):
        net.run(until=lambda: server.bytes_received > i * (1 << 20), max_time=60)
        net.rebind(addrs[i - 1], new)
        net.link(new, SERVER_ADDR, LinkConfig(delay=0.01, bandwidth=50e6))
    net.run(until=lambda: server.count(1) == 1, max_time=120)
    assert server.stream_messages(1) == [data]
    changed = [e.new_addr for _, e in server.events if isinstance(e, PathChanged)]
    assert changed[-2:] == addrs[1:]


def test_stream_end_is_visible_on_both_sides():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=18)
    conn.send_message(3, b"last words")
    conn.end_stream(3)
    net.run(until=lambda: server.count(3) == 1, max_time=5)
    net.run_for(0.2)
    sconn = _server_conn(server)
    assert sconn.stream_finished(3) and not sconn.stream_finished(4)
    assert conn.stream_send_complete(3)


def test_reset_stream_returns_connection_credit():
    """Bytes a reset stream will never deliver give their connection credit back (MAX_DATA)."""
    net, client, server, conn = _pair_with_a_stalled_reader(200_000, 200_000, 180_000, 180_000, 19)
    conn.send_message(1, bytes(150_000))
    net.run(until=lambda: server.bytes_received == 0 and _server_conn(server)._sset.data_received >= 150_000
            if server.endpoint.connections else False, max_time=10)
    sconn = _server_conn(server)
    sconn.stop_sending(1, 5)  # the peer answers with RESET_STREAM
    net.poll()
    net.run(until=lambda: any(isinstance(e, StreamReset) for _, e in server.events), max_time=10)
    # without any read by the application, the sender gets the credit back
    net.run(until=lambda: conn._sset.peer_max_data > 200_000, max_time=net.now + 2)
    server.reading = True
    data = _payload(19, 150_000)
    conn.send_message(2, data)
    net.run(until=lambda: server.count(2) == 1, max_time=10)
    assert server.stream_messages(2) == [data]


@pytest.mark.parametrize("keep_alive,seed", [(0.2, 12), (1.0, 14)])
def test_rebinding_of_a_client_with_nothing_to_send_is_followed(keep_alive, seed):
    """A client whose address changes while only the server is sending is heard from again by
    one packet (a keep-alive PING, here one a second). That datagram moves the server to the
    new address and must count toward the new path's anti-amplification budget: otherwise the
    server may send nothing there, not even its PATH_CHALLENGE, the validation times out and
    the server goes back to the old address, again at each PING, until the idle timeout."""
    ccfg = Configuration(keep_alive=keep_alive)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6), seed=seed,
                                          client_config=ccfg)
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    sconn = _server_conn(server)
    data = _payload(seed, 1 << 20)
    sconn.send_message(2, data)
    net.run(until=lambda: client.bytes_received > 200_000, max_time=30)
    new_addr = ("198.51.100.9", 40002)
    net.rebind(CLIENT_ADDR, new_addr)
    net.link(new_addr, SERVER_ADDR, LinkConfig(delay=0.01, bandwidth=50e6))
    # the first datagram from the new address starts the path validation, and its bytes are
    # the new path's budget (3x) for the PATH_CHALLENGE
    net.run(until=lambda: sconn._paths.challenge is not None, max_time=net.now + 2 * keep_alive)
    assert sconn.peer_addr == new_addr and sconn._paths.bytes_received > 0
    net.run(until=lambda: client.count(2) == 1, max_time=10)
    assert client.stream_messages(2) == [data]
    assert sconn.peer_addr == new_addr
