"""Security scenarios in the simulator: trust, tampering, replay, key update, Retry, reset, floods."""
from __future__ import annotations

import os
import random

from dquic.config import Configuration
from dquic.connection import CoreConnection
from dquic.endpoint import Endpoint
from dquic.errors import ErrorCode
from dquic.events import ConnectionTerminated
from dquic.keys import KeyPair
from dquic.testing import LinkConfig
from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, EndpointNode, make_pair


def _terminations(node):
    return [e for _, e in node.events if isinstance(e, ConnectionTerminated)]


def test_pinned_key_detects_man_in_the_middle():
    real, mitm = KeyPair.generate(), KeyPair.generate()
    ccfg = Configuration(server_key=real.public)
    scfg = Configuration(is_client=False, identity=mitm)  # someone else answers
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg,
                                          server_config=scfg, seed=1)
    conn.send_message(1, b"secret")
    net.run(until=lambda: _terminations(client), max_time=5)
    term = _terminations(client)[0]
    assert term.error_code in (ErrorCode.AUTHENTICATION_FAILED, ErrorCode.HANDSHAKE_FAILED)
    assert server.count(1) == 0 and not conn.is_established


def test_pinned_key_accepts_the_right_server():
    real = KeyPair.generate()
    ccfg = Configuration(server_key=real.public)
    scfg = Configuration(is_client=False, identity=real)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg,
                                          server_config=scfg, seed=2)
    conn.send_message(1, b"secret")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    assert conn.peer_key == real.public


def test_server_allow_list_refuses_unlisted_client():
    allowed, stranger, server_kp = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    scfg = Configuration(is_client=False, identity=server_kp, trusted_peers=[allowed.public])
    ccfg = Configuration(identity=stranger)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg,
                                          server_config=scfg, seed=3)
    conn.send_message(1, b"let me in")
    net.run(until=lambda: _terminations(client), max_time=5)
    net.run_for(1.0)
    assert server.count(1) == 0  # none of its data reached the application
    assert not client.handshakes() or not conn.is_established


def test_server_allow_list_admits_listed_client():
    allowed, server_kp = KeyPair.generate(), KeyPair.generate()
    scfg = Configuration(is_client=False, identity=server_kp, trusted_peers=[allowed.public])
    ccfg = Configuration(identity=allowed)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), client_config=ccfg,
                                          server_config=scfg, seed=4)
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    assert server.endpoint.connections[0].peer_key == allowed.public


def test_bit_flips_are_dropped_and_transfer_is_exact():
    link = LinkConfig(delay=0.01, corrupt=0.1, corrupt_bits=2, bandwidth=50e6)
    net, client, server, conn = make_pair(link, seed=5)
    data = os.urandom(1 << 20)
    conn.send_message(1, data)
    net.run(until=lambda: server.count(1) == 1, max_time=60)
    assert server.stream_messages(1) == [data]
    assert server.endpoint.connections[0].packets_dropped > 10


def test_key_update_during_long_transfer_loses_nothing():
    ccfg = Configuration(key_update_interval=300)
    scfg = Configuration(is_client=False, key_update_interval=300)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6, loss=0.01,
                                                     reorder=0.02), client_config=ccfg,
                                          server_config=scfg, seed=6)
    msgs = [os.urandom(50_000) for _ in range(60)]
    for m in msgs:
        conn.send_message(1, m)
    net.run(until=lambda: server.count(1) == len(msgs), max_time=120)
    assert server.stream_messages(1) == msgs
    keys = conn._seal[1].keys
    assert keys.key_updates >= 3


def test_plaintext_never_on_the_wire():
    marker = os.urandom(32)
    seen = []
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=7)
    for node in (client, server):
        original = node.endpoint.datagrams_to_send

        def capture(now, original=original):
            out = original(now)
            seen.extend(d for d, _ in out)
            return out

        node.endpoint.datagrams_to_send = capture
    conn.send_message(1, marker * 100)
    net.run(until=lambda: server.count(1) == 1, max_time=10)
    sconn = server.endpoint.connections[0]
    sconn.send_message(2, marker * 50)
    net.poll()
    net.run(until=lambda: client.count(2) == 1, max_time=10)
    assert len(seen) >= 8  # (the handshake, both messages and their acknowledgements)
    assert not any(marker[:16] in d for d in seen)


def test_retry_round_trip():
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=8,
                                          server_endpoint={"require_retry": True})
    conn.send_message(1, b"after retry")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    assert server.endpoint.retries_sent == 1
    assert conn._retry_scid is not None


def test_forged_retry_is_ignored():
    from dquic import _codec as codec
    from dquic import _frames as framing

    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=9)
    forged = codec.encode_retry(codec.DQUIC_VERSION_1, conn.host_cid, b"\x01" * 8, b"tok",
                                b"\x00" * 16)
    client.endpoint.receive_datagram(forged, SERVER_ADDR, 0.0)
    conn.send_message(1, b"x")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    assert conn._retry_scid is None


def test_stateless_reset_ends_connection_promptly():
    reset_key = os.urandom(32)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=10,
                                          server_endpoint={"reset_key": reset_key})
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    # the server restarts: all connection state is gone, the reset key survives
    scfg = server.endpoint.config
    fresh = EndpointNode(Endpoint(scfg, accept=True, reset_key=reset_key))
    net.remove_node(SERVER_ADDR)
    net.add_node(fresh, SERVER_ADDR)
    t0 = net.now
    conn.send_message(1, b"are you there? " * 10)
    net.poll()
    net.run(until=lambda: _terminations(client), max_time=t0 + 5)
    term = _terminations(client)[0]
    assert term.reason == "stateless reset"
    assert net.now - t0 < 0.2  # about one round trip, not an idle timeout
    assert fresh.endpoint.resets_sent >= 1


def test_spoofed_flood_costs_bounded_state_and_amplification():
    """Handshake packets from thousands of spoofed addresses: the server answers each with at most
    3x what it received, holds at most ``max_handshakes`` half-open connections (Retry beyond the
    threshold costs nothing), and an established client keeps being served throughout."""
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=100e6), seed=11,
                                          server_endpoint={"max_handshakes": 64,
                                                           "retry_threshold": 32})
    conn.send_message(1, b"warm up")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    sep = server.endpoint
    received = {}
    sent_back = {}
    rng = random.Random(11)
    ccfg = Configuration()

    def count_sent(t, kind, src, dst, size):
        if kind == "send" and src == SERVER_ADDR and dst != CLIENT_ADDR:
            sent_back[dst] = sent_back.get(dst, 0) + size

    net.on_event(count_sent)
    data = os.urandom(2 << 20)
    conn.send_message(2, data)
    for i in range(2000):
        addr = ("203.0.113.%d" % rng.randrange(1, 255), rng.randrange(1024, 65535))
        spoofer = CoreConnection(ccfg, SERVER_ADDR)
        spoofer.connect(net.now)
        for d, _ in spoofer.datagrams_to_send(net.now):
            received[addr] = received.get(addr, 0) + len(d)
            sep.receive_datagram(d, addr, net.now)
        net.poll(SERVER_ADDR)
        if i % 50 == 0:
            net.run_for(0.01)
        assert len(sep.connections) <= 64 + 1
    # let the half-open connections retransmit as long as they like
    net.run(until=lambda: server.count(2) == 1, max_time=net.now + 60)
    net.run_for(10.0)
    assert server.stream_messages(2) == [data]
    for addr, n in sent_back.items():
        assert n <= 3 * received[addr], (addr, n, received[addr])
    assert sep.retries_sent > 0



def _forged_handshake_packet(dcid, scid, pn, frames):
    """A HANDSHAKE packet anyone can make: these packets carry no packet protection."""
    from dquic import _codec as codec
    from dquic import _frames as framing

    buf = codec.Buffer(capacity=1500)
    length_off = codec.push_long_header(buf, codec.PACKET_HANDSHAKE, codec.DQUIC_VERSION_1, dcid,
                                        scid, b"", pn, 2)
    start = buf.tell()
    for f in frames:
        framing.push_frame(buf, f)
    codec.patch_length(buf, length_off, 2 + buf.tell() - start)
    return buf.data


def _spoofed_handshake(forged_packets, seed):
    """An attacker sends an Initial from a victim's address, then ``forged_packets`` HANDSHAKE
    packets to the original DCID it chose itself (the endpoint routes that ID to the new
    connection); the server's application answers the new connection at once with plenty of
    data (0.5-RTT: the server's side of an NX handshake is complete after its reply). Returns
    ``(bytes the server sent to the victim, bytes it received from the victim's address)``."""
    from dquic import _codec as codec
    from dquic import _frames as framing

    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=seed)
    conn.send_message(1, b"warm up")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    sep = server.endpoint
    victim = ("203.0.113.9", 4444)
    received = 0
    sent = [0]

    def count_sent(t, kind, src, dst, size):
        if kind == "send" and src == SERVER_ADDR and dst == victim:
            sent[0] += size

    net.on_event(count_sent)
    spoofer = CoreConnection(Configuration(), SERVER_ADDR)
    spoofer.connect(net.now)
    for d, _ in spoofer.datagrams_to_send(net.now):
        received += len(d)
        sep.receive_datagram(d, victim, net.now)
    (sconn,) = [c for c in sep.connections if c.peer_addr == victim]
    # the handshake packet-number space goes on after the Initial's packet number
    for pn in range(1, 1 + forged_packets):
        d = _forged_handshake_packet(spoofer.original_dcid, spoofer.host_cid, pn,
                                     [framing.PingFrame()])
        received += len(d)
        sep.receive_datagram(d, victim, net.now)
    assert sconn.packets_received == 1 + forged_packets and not sconn.is_closed
    assert sconn.handshake_complete
    sconn.send_message(1, bytes(200_000))
    net.poll(SERVER_ADDR)
    net.run_for(5.0)
    assert server.count(1) == 1 and conn.is_established  # the real client was not disturbed
    return sent[0], received


def test_spoofed_initial_answered_with_data_stays_within_three_times():
    """What the server sends to an address it has not validated stays within 3x what it
    received from there, counted packet by packet (not once per batch of packets)."""
    sent, received = _spoofed_handshake(0, seed=12)
    assert 0 < sent <= 3 * received, (sent, received)


def test_forged_handshake_packets_do_not_validate_a_spoofed_address():
    """HANDSHAKE packets to the client-chosen original DCID prove nothing about the address
    they claim to come from (anyone can make them): the 3x limit still holds."""
    sent, received = _spoofed_handshake(5, seed=13)
    assert 0 < sent <= 3 * received, (sent, received)


def test_new_path_that_never_answers_stays_within_three_times():
    """After the client's address changes, the server sends the new address at most 3x what
    arrived from it until PATH_RESPONSE comes back: later packets from that address do not
    validate it (an on-path attacker rewriting source addresses gets no more than 3x)."""
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, bandwidth=50e6), seed=14)
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    net.run_for(0.5)
    sconn = server.endpoint.connections[0]
    new_addr = ("198.51.100.10", 40002)
    counts = {"in": 0, "out": 0}

    def count(t, kind, src, dst, size):
        if kind == "send" and src == new_addr and dst == SERVER_ADDR:
            counts["in"] += size
        elif kind == "send" and src == SERVER_ADDR and dst == new_addr:
            counts["out"] += size

    net.on_event(count)
    net.rebind(CLIENT_ADDR, new_addr)
    # the client sends from the new address; nothing sent there comes back
    net.link(new_addr, SERVER_ADDR, LinkConfig(delay=0.01, bandwidth=50e6),
             LinkConfig(delay=0.01, bandwidth=50e6, loss=1.0))
    for i in range(3):
        conn.send_message(3, b"moved %d" % i)
        net.poll(new_addr)
        net.run_for(0.015)
    assert sconn.peer_addr == new_addr
    # now the server's application has a lot to say
    sconn.send_message(2, os.urandom(1 << 20))
    for _ in range(50):
        net.poll(SERVER_ADDR)
        net.run_for(0.01)
        assert counts["out"] <= 3 * counts["in"], counts
    assert counts["in"] > 0 and counts["out"] > 0


def test_spoofed_connection_ends_at_the_handshake_timeout():
    """For NK/IK/NX the server's side of the handshake is complete once it replied, but the
    handshake is not confirmed until an authenticated 1-RTT packet from the client arrives: a
    connection from a spoofed address, which never confirms, ends at the handshake timeout
    (not at the idle timeout), and the established client is not disturbed."""
    scfg = Configuration(is_client=False, handshake_timeout=2.0, idle_timeout=30.0)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=15, server_config=scfg)
    conn.send_message(1, b"hello")
    net.run(until=lambda: server.count(1) == 1, max_time=5)
    sep = server.endpoint
    t0 = net.now
    spoofer = CoreConnection(Configuration(), SERVER_ADDR)
    spoofer.connect(net.now)
    for d, _ in spoofer.datagrams_to_send(net.now):
        sep.receive_datagram(d, ("203.0.113.9", 4444), net.now)
    net.poll(SERVER_ADDR)
    (half_open,) = [c for c in sep.connections if c.peer_addr != CLIENT_ADDR]
    assert half_open.handshake_complete and not half_open.handshake_confirmed
    for i in range(6):
        conn.send_message(1, b"tick %d" % i)
        net.run_for(0.5)
    assert net.now - t0 >= 2.5
    assert half_open not in sep.connections and half_open.is_terminated
    ends = [e for c, e in server.events if c is half_open and isinstance(e, ConnectionTerminated)]
    assert ends and ends[0].timeout and ends[0].reason == "handshake timeout"
    assert server.count(1) == 7 and conn.is_established
