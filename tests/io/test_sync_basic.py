"""The blocking DQUIC API over real UDP sockets on loopback: round trips, the Connection facade,
argument checking, timeouts, errors, closing, IPv6, numpy buffers and thread safety."""
from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time

import pytest

import dquic
import dquic.sync
from dquic import AuthenticationError, ConnectionClosed, ConnectionTimeout, DQUICError
from dquic.keys import KeyPair
from dquic.sync import DQUIC, Connection, ConnectionRefused, EndpointClosed

from _iohelpers import EchoThread, Receiver
from _net import free_udp_port, ipv6_available

pytestmark = pytest.mark.timeout(60)


def round_trip(client, server, address, request, reply, max_bytes=65536):
    assert client.send_to(address, request) == sum(len(v) for v in request.values())
    peer, got = server.receive_from(max_bytes)
    assert got == request
    assert server.send_to(peer, reply) == sum(len(v) for v in reply.values())
    src, back = client.receive_from(max_bytes)
    assert back == reply
    return peer, src


def _serve_until_no_connections(server, within=5.0):
    """Let ``server`` process what arrives (its receive_from times out, nothing is read) until
    it holds no connection; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while server.connections:
        assert time.monotonic() < deadline
        server.settimeout(0.05)
        with pytest.raises(TimeoutError):
            server.receive_from(10)


def test_compat_module_reexports():
    import DQUIC
    from dquic import _seed

    assert DQUIC.DQUIC is dquic.sync.DQUIC
    assert DQUIC.Connection is dquic.sync.Connection
    assert DQUIC.DQUICHeader is _seed.DQUICHeader is dquic.DQUICHeader
    assert DQUIC.DQUICFrame is _seed.DQUICFrame is dquic.DQUICFrame
    assert issubclass(DQUIC.ConnectionRefused, ConnectionRefusedError)


def test_round_trip_and_reply_reuses_connection(make_dquic):
    server = make_dquic()
    client = make_dquic()
    peer, src = round_trip(client, server, server.local_address,
                           {1: b"some data stream 1", 2: b"some data stream 2"},
                           {1: b"response data stream 1", 2: b"response data stream 2"})
    assert peer == client.local_address
    assert src == server.local_address
    # the reply travelled on the connection the client opened: one connection each side
    assert len(server.connections) == 1 and len(client.connections) == 1
    # and further exchanges in both directions keep using it
    round_trip(client, server, server.local_address, {7: b"again"}, {8: b"and back"})
    assert len(server.connections) == 1 and len(client.connections) == 1


def test_unbound_client_and_localhost_name(make_dquic):
    server = make_dquic(bind=("localhost", 0))
    assert server.local_address[0] == "127.0.0.1"
    client = make_dquic(bind=None)
    assert client.local_address is None and client.sock is None
    round_trip(client, server, ("localhost", server.local_address[1]), {0: b"hi"}, {0: b"ho"})
    assert client.local_address[1] != 0


def test_connection_facade_reflects_core(make_dquic):
    server = make_dquic()
    client = make_dquic()
    round_trip(client, server, server.local_address, {1: b"x" * 5000, 2: b"y"}, {3: b"z" * 10})
    (conn,) = client.connections
    assert isinstance(conn, Connection) and isinstance(conn, dquic.sync.Connection)
    assert conn.addr == server.local_address
    assert isinstance(conn.conn_id, bytes) and conn.conn_id
    assert conn.sent_packet_number > 0 and conn.recv_packet_number > 0
    sent = conn.stream_bytes_sent
    assert sent[1] >= 5000 and sent[2] >= 1 and 3 not in sent
    # the reply was received after the server got our data, so its ACK is in: all acknowledged
    deadline = time.monotonic() + 5
    while conn.stream_bytes_ack != sent:
        assert time.monotonic() < deadline, (conn.stream_bytes_ack, sent)
        client.settimeout(0.05)
        with pytest.raises(TimeoutError):
            client.receive_from(10)
    assert conn.stats.packets_sent == conn.sent_packet_number
    assert conn.is_established
    assert conn.peer_key == server.identity.public
    (sconn,) = server.connections
    assert sconn.addr == client.local_address
    assert sconn.stream_bytes_sent.get(3, 0) >= 10


def test_connection_standalone_like_the_seed():
    c = Connection(("127.0.0.1", 9999), 42)
    assert c.addr == ("127.0.0.1", 9999) and c.conn_id == 42
    assert c.sent_packet_number == 0 and c.recv_packet_number == 0
    assert c.stream_bytes_ack == {} and c.stream_bytes_sent == {}
    assert c.stats is None
    c.sent_packet_number += 1
    c.stream_bytes_sent[1] = 10
    assert c.sent_packet_number == 1 and c.stream_bytes_sent == {1: 10}
    for bad in [("127.0.0.1", 70000), ("127.0.0.1", -1), "127.0.0.1:9999", ("127.0.0.1",),
                ("127.0.0.1", "9999"), (None, 1), ["127.0.0.1", 1]]:
        with pytest.raises(ValueError):
            Connection(bad, 1)


class _Arr:
    """A buffer exporter that is not C-contiguous."""


@pytest.mark.parametrize("bad,exc", [
    ([(1, b"x")], TypeError),
    ({"1": b"x"}, TypeError),
    ({True: b"x"}, TypeError),
    ({1.0: b"x"}, TypeError),
    ({-1: b"x"}, ValueError),
    ({2 ** 62: b"x"}, ValueError),
    ({1: "text"}, TypeError),
    ({1: 5}, TypeError),
    ({1: None}, TypeError),
    ({1: b"ok", 2: "bad"}, TypeError),
    ({1: b"ok", 2 ** 64: b"bad"}, ValueError),
    ({1: memoryview(bytes(range(10)))[::2]}, ValueError),
])
def test_bad_arguments_raise_before_anything_is_sent(make_dquic, bad, exc):
    client = make_dquic(bind=None)
    with pytest.raises(exc):
        client.send_to(("127.0.0.1", 9), bad)
    assert client.sock is None  # not even a socket was created
    assert client.connections == []


def test_bad_arguments_on_a_live_connection_send_nothing(make_dquic):
    server = make_dquic()
    client = make_dquic()
    round_trip(client, server, server.local_address, {1: b"a"}, {1: b"b"})
    with pytest.raises(TypeError):
        client.send_to(server.local_address, {1: b"valid", 2: object()})
    with pytest.raises(TypeError):
        client.send_to(server.local_address, {1: b"valid", "x": b"y"})
    with pytest.raises(TypeError):
        client.send_to(("127.0.0.1", "port"), {1: b"valid"})
    with pytest.raises(ValueError):
        client.send_to(("127.0.0.1", 65536), {1: b"valid"})
    client.send_to(server.local_address, {1: b"marker"})
    assert server.receive_from(100) == (client.local_address, {1: b"marker"})


def test_numpy_payloads(make_dquic):
    np = pytest.importorskip("numpy")
    server = make_dquic()
    client = make_dquic()
    a = np.arange(100_000, dtype=np.float64)
    b = np.arange(12, dtype=np.int32).reshape(3, 4)
    c = np.zeros(0, dtype=np.uint8)
    assert client.send_to(server.local_address, {1: a, 2: b, 3: c}) == a.nbytes + b.nbytes
    rx = Receiver(server, 1 << 20)
    for sid, arr in ((1, a), (2, b), (3, c)):
        rx.expect(client.local_address, sid, [arr.nbytes])
    rx.run(30)
    peer = client.local_address
    assert rx.messages[(peer, 1)] == [a.tobytes()]
    assert np.array_equal(np.frombuffer(rx.messages[(peer, 2)][0], dtype=np.int32).reshape(3, 4), b)
    assert rx.messages[(peer, 3)] == [b""]
    with pytest.raises(ValueError):
        client.send_to(server.local_address, {1: a[::2]})  # not contiguous
    with pytest.raises(ValueError):
        client.send_to(server.local_address, {1: np.asfortranarray(np.ones((3, 3)))})


def test_max_bytes_splits_large_messages_and_shares_the_budget(make_dquic):
    server = make_dquic()
    client = make_dquic()
    big = os.urandom(10_000)
    client.send_to(server.local_address, {5: big})
    pieces = []
    while sum(map(len, pieces)) < len(big):
        _, d = server.receive_from(1000)
        assert list(d) == [5] and len(d[5]) == 1000
        pieces.append(d[5])
    assert b"".join(pieces) == big
    # two streams and a budget smaller than both messages: the budget is shared, nothing lost
    client.send_to(server.local_address, {1: b"a" * 600, 2: b"b" * 600})
    rx = Receiver(server, 1000)
    rx.expect(client.local_address, 1, [600])
    rx.expect(client.local_address, 2, [600])
    rx.run(10)
    assert rx.messages[(client.local_address, 1)] == [b"a" * 600]
    assert rx.messages[(client.local_address, 2)] == [b"b" * 600]


def test_receive_from_serves_readable_streams_in_turn(make_dquic):
    """With messages waiting on many streams and room for one message per call,
    ``receive_from`` takes the streams in turn (ascending ids, from the one after the stream
    served last), so no stream waits behind another's backlog."""
    server = make_dquic()
    client = make_dquic()
    ids = [3 + 7 * k for k in range(60)]
    for rnd in range(3):
        client.send_to(server.local_address, {sid: b"%04d" % rnd + bytes(60) for sid in ids})
    deadline = time.monotonic() + 10
    peer = None
    while time.monotonic() < deadline:  # everything arrives (loopback: milliseconds)
        peer = server.connections[0] if server.connections else None
        if peer is not None and peer.stats.stream_bytes_received >= 3 * 60 * 65:
            break
        time.sleep(0.01)
    served = []
    for _ in range(3 * len(ids)):
        _, got = server.receive_from(64)
        assert len(got) == 1
        served.extend(got)
    assert served == ids * 3


def test_empty_messages_and_order_per_stream(make_dquic):
    server = make_dquic()
    client = make_dquic()
    expected = {sid: [] for sid in range(5)}
    for i in range(40):
        batch = {}
        for sid in range(5):
            if (i + sid) % 3:
                msg = (b"%d:%d;" % (sid, i)) * ((i * 7 + sid) % 50)
                batch[sid] = msg
                expected[sid].append(msg)
        client.send_to(server.local_address, batch)
    rx = Receiver(server, 4096)
    for sid, msgs in expected.items():
        rx.expect(client.local_address, sid, [len(m) for m in msgs])
    rx.run(30)
    for sid, msgs in expected.items():
        assert rx.messages.get((client.local_address, sid), []) == msgs
    assert any(m == b"" for msgs in expected.values() for m in msgs)


def test_settimeout_and_gettimeout(make_dquic):
    d = make_dquic()
    assert d.gettimeout() == 20.0
    d.settimeout(0.2)
    assert d.gettimeout() == 0.2
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        d.receive_from(100)
    assert 0.15 <= time.monotonic() - t0 < 5
    with pytest.raises(socket.timeout):
        d.receive_from(100)
    d.settimeout(0)
    t0 = time.monotonic()
    with pytest.raises(BlockingIOError) as info:  # non-blocking, as for a socket
        d.receive_from(100)
    assert info.value.errno == errno.EAGAIN
    assert time.monotonic() - t0 < 1
    d.settimeout(None)
    assert d.gettimeout() is None
    with pytest.raises(ValueError):
        d.settimeout(-1)
    for bad, exc in ((0, ValueError), (-5, ValueError), ("10", TypeError), (1.5, TypeError)):
        with pytest.raises(exc):
            d.receive_from(bad)


def test_unreachable_peer_raises_connection_timeout_in_time(make_dquic):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # swallows everything, answers nothing
    sink.bind(("127.0.0.1", 0))
    try:
        client = make_dquic(bind=None, handshake_timeout=0.6)
        t0 = time.monotonic()
        with pytest.raises(ConnectionTimeout) as info:
            client.send_to(sink.getsockname(), {1: b"hello?"})
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed < 3.0, elapsed
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, DQUICError)
        assert client.connections == []
    finally:
        sink.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ICMP errors reach UDP sockets on Linux")
def test_closed_port_is_refused_fast(make_dquic):
    port = free_udp_port()  # nothing listens there now
    client = make_dquic(bind=None, handshake_timeout=5.0)
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError) as info:
        client.send_to(("127.0.0.1", port), {1: b"anyone?"})
    assert time.monotonic() - t0 < 2.0
    assert isinstance(info.value, ConnectionRefused) and isinstance(info.value, DQUICError)


def test_untrusted_server_key_raises_authentication_error(make_dquic):
    server = make_dquic(identity=KeyPair.generate())
    client = make_dquic(server_key=KeyPair.generate().public, handshake_timeout=3.0)
    with pytest.raises(AuthenticationError):
        client.send_to(server.local_address, {1: b"secret"})


def test_pinned_server_key_and_trusted_clients(make_dquic):
    skey, ckey = KeyPair.generate(), KeyPair.generate()
    server = make_dquic(identity=skey, trusted_peers=[ckey.public])
    client = make_dquic(identity=ckey, server_key=skey.public)
    round_trip(client, server, server.local_address, {1: b"authenticated"}, {1: b"yes"})
    assert client.connections[0].peer_key == skey.public
    assert server.connections[0].peer_key == ckey.public
    stranger = make_dquic(identity=KeyPair.generate(), server_key=skey.public, handshake_timeout=3.0)
    with pytest.raises(AuthenticationError):
        stranger.send_to(server.local_address, {1: b"let me in"})


def test_peer_close_raises_connection_closed_then_reconnects(make_dquic):
    server = make_dquic()
    port = server.local_address[1]
    client = make_dquic()
    round_trip(client, server, server.local_address, {1: b"q"}, {1: b"a"})
    server.close()
    # the server's CONNECTION_CLOSE reaches the client: reported once, by the receive_from
    # waiting when it arrives (no other connection is open) or else by the next send_to
    deadline = time.monotonic() + 5
    reported = False
    client.settimeout(0.05)
    while client.connections and not reported:
        assert time.monotonic() < deadline
        try:
            client.receive_from(10)
        except ConnectionClosed:
            reported = True
        except TimeoutError:
            pass
    client.settimeout(5)
    if not reported:
        with pytest.raises(ConnectionClosed):
            client.send_to(("127.0.0.1", port), {1: b"still there?"})
    # a new server on the same port: the next send_to opens a new connection
    server2 = make_dquic(bind=("127.0.0.1", port))
    round_trip(client, server2, ("127.0.0.1", port), {1: b"hello again"}, {1: b"welcome"})


def test_close_is_idempotent_and_later_use_raises_ebadf(make_dquic):
    d = make_dquic()
    d.close()
    d.close()
    for call in (lambda: d.send_to(("127.0.0.1", 9), {1: b"x"}), lambda: d.receive_from(10),
                 lambda: d.bind(("127.0.0.1", 0))):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
        assert isinstance(info.value, EndpointClosed) and isinstance(info.value, DQUICError)
    never_used = DQUIC()
    never_used.close()
    with DQUIC() as ctx:
        ctx.bind(("127.0.0.1", 0))
    with pytest.raises(OSError):
        ctx.receive_from(1)


def test_close_wakes_a_blocked_receiver(make_dquic):
    d = make_dquic(timeout=None)
    errors = []

    def blocked():
        try:
            d.receive_from(100)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    # wait until the receiver is parked inside receive_from, driving the socket or waiting
    # for the I/O thread to hand over (bounded)
    deadline = time.monotonic() + 5
    while not (d._drive.active and (d._drive.holder == t.ident or d._drive.waiters)):  # noqa: SLF001 - white-box
        assert time.monotonic() < deadline
        t.join(0.01)
    d.close()
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EndpointClosed)


def test_close_right_after_send_delivers(make_dquic):
    server = make_dquic()
    client = make_dquic(linger=10.0)
    data = os.urandom(2 << 20)
    client.send_to(server.local_address, {1: data, 2: b"tail"})
    peer = client.local_address
    # close() waits for the acknowledgements (the server must read to open its window), so it
    # runs in its own thread while this one reads
    closer = threading.Thread(target=client.close)
    closer.start()
    rx = Receiver(server, 1 << 20)
    rx.expect(peer, 1, [len(data)])
    rx.expect(peer, 2, [4])
    rx.run(30)
    closer.join(15)
    assert not closer.is_alive()
    assert rx.messages[(peer, 1)] == [data]
    # the client closed its connection after delivery: the server learns it
    _serve_until_no_connections(server)


def test_unknown_option_and_option_validation():
    with pytest.raises(TypeError):
        DQUIC(no_such_option=1)
    with pytest.raises(ValueError):
        DQUIC(linger=-1)
    d = DQUIC(handshake_timeout=2.0, idle_timeout=5.0, congestion_control="newreno",
              initial_max_data=2 << 20, qlog_dir=None)
    assert d.identity is not None  # generated: the instance can accept connections
    d.close()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_ipv6_round_trip(make_dquic):
    server = make_dquic(bind=("::1", 0))
    assert server.local_address[0] == "::1"
    client = make_dquic(bind=None)
    peer, src = round_trip(client, server, ("::1", server.local_address[1]),
                           {1: b"over ipv6"}, {1: b"ack"})
    assert src == server.local_address
    assert peer == ("::1", client.local_address[1])
    big = os.urandom(300_000)
    client.send_to(src, {2: big})
    rx = Receiver(server, 1 << 16)
    rx.expect(peer, 2, [len(big)])
    rx.run(20)
    assert rx.messages[(peer, 2)] == [big]
    assert client.sock.family == socket.AF_INET6
    # an IPv4-only socket cannot reach an IPv6 peer
    v4 = make_dquic()
    with pytest.raises(OSError):
        v4.send_to(("::1", server.local_address[1]), {1: b"x"})


def test_one_thread_receives_while_another_sends(make_dquic):
    server = make_dquic()
    client = make_dquic()
    n = 300
    echo = EchoThread(server, shift=100)
    received = {101: [], 102: []}
    recv_errors = []

    def receiver():
        try:
            while len(received[101]) + len(received[102]) < 2 * n:
                _, d = client.receive_from(1 << 16)
                for sid, v in d.items():
                    received[sid].append(v)
        except BaseException as exc:  # noqa: BLE001
            recv_errors.append(exc)

    # the first send_to opens the connection; then one thread receives while this one sends
    client.send_to(server.local_address, {1: b"1:0", 2: b"2:0"})
    r = threading.Thread(target=receiver)
    r.start()
    for i in range(1, n):
        client.send_to(server.local_address, {1: b"1:%d" % i, 2: b"2:%d" % i})
    r.join(30)
    assert echo.stop()
    assert not r.is_alive()
    assert not recv_errors and not echo.errors
    assert received[101] == [b"1:%d" % i for i in range(n)]
    assert received[102] == [b"2:%d" % i for i in range(n)]


def test_server_reaches_a_new_peer_on_an_address_whose_connection_ended(make_dquic):
    server = make_dquic()
    first = make_dquic()
    port = first.local_address[1]
    round_trip(first, server, server.local_address, {1: b"hi"}, {1: b"bye"})
    first.close()
    _serve_until_no_connections(server)
    server.settimeout(10)
    # a connection the peer opened and closed leaves nothing behind: the server now opens a
    # connection itself, to whoever listens on that address (every DQUIC also accepts)
    second = make_dquic(bind=("127.0.0.1", port))
    assert server.send_to(("127.0.0.1", port), {4: b"server-initiated"}) == 16
    assert second.receive_from(100) == (server.local_address, {4: b"server-initiated"})


def test_send_to_backpressure_wakes_on_acknowledgements(make_dquic):
    """send_to blocked on a full send buffer resumes as soon as ACKs drain it (not at its timeout)."""
    server = make_dquic()
    address = server.local_address
    total = 12 << 20
    got = [0]

    def drain():
        server.settimeout(20)
        while got[0] < total:
            _, msgs = server.receive_from(1 << 20)
            got[0] += sum(len(v) for v in msgs.values())

    t = threading.Thread(target=drain)
    t.start()
    client = make_dquic(max_send_buffer=2 << 20)
    client.settimeout(20)
    start = time.monotonic()
    msg = bytes(1200)
    for _ in range(total // 1200):
        client.send_to(address, {1: msg})
    client.send_to(address, {1: bytes(total - (total // 1200) * 1200)})
    t.join(30)
    assert got[0] == total
    assert time.monotonic() - start < 15


def test_disconnect_closes_one_connection_and_the_next_send_opens_another(make_dquic):
    server = make_dquic()
    other = make_dquic()
    client = make_dquic()
    dest = server.local_address
    round_trip(client, server, dest, {1: b"q"}, {1: b"a"})
    round_trip(client, other, other.local_address, {1: b"q2"}, {1: b"a2"})
    first = {c.addr: c.conn_id for c in client.connections}[dest]
    # queued data goes before the close: the server reads it, then sees the connection end
    client.send_to(dest, {2: b"last words " * 1000})
    client.disconnect(dest)
    assert [c.addr for c in client.connections] == [other.local_address]
    peer, got = server.receive_from(1 << 20)
    assert got == {2: b"last words " * 1000}
    deadline = time.monotonic() + 5
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.connections  # its CONNECTION_CLOSE arrived
    client.disconnect(dest)  # nothing left to close: no error
    client.disconnect(("127.0.0.1", 9))  # never connected: no error
    # a new connection, and the other one untouched
    round_trip(client, server, dest, {1: b"again"}, {1: b"welcome back"})
    second = {c.addr: c.conn_id for c in client.connections}[dest]
    assert second != first
    round_trip(client, other, other.local_address, {1: b"q3"}, {1: b"a3"})
    # the seed's Connection object closes its own connection
    [conn] = [c for c in client.connections if c.addr == other.local_address]
    conn.close()
    assert [c.addr for c in client.connections] == [dest]


def test_disconnect_reports_what_linger_could_not_deliver(make_dquic):
    server = make_dquic()
    client = make_dquic(linger=0.0)
    dest = server.local_address
    round_trip(client, server, dest, {1: b"q"}, {1: b"a"})
    client.send_to(dest, {3: bytes(200_000)})
    with pytest.raises(dquic.UndeliveredData) as info:
        client.disconnect(dest)
    assert 0 < info.value.undelivered[dest] <= 200_000 + 8
    assert not client.connections
    client.send_to(dest, {4: b"x"})  # abandon: no report
    client.disconnect(dest, abandon=True)


def test_identity_is_made_only_when_needed(make_dquic):
    # a key pair costs an X25519 key generation: an instance that only connects out makes
    # none; one that accepts a connection (or is asked for its identity) makes one, once
    client = make_dquic()
    server = make_dquic()
    assert client._config.identity is None and server._config.identity is None
    round_trip(client, server, server.local_address, {1: b"q"}, {1: b"a"})
    assert client._config.identity is None
    made = server._config.identity
    assert made is not None and server.identity is made
    asked = make_dquic()
    assert asked.identity is asked.identity is not None
