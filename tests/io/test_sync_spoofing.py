"""The blocking DQUIC API against a spoofed Initial from a live client's own address (loopback):
one unauthenticated datagram must not take the address away from the established connection."""
from __future__ import annotations

import socket
import time

import pytest

from dquic.config import Configuration
from dquic.endpoint import Endpoint

pytestmark = pytest.mark.timeout(60)


def _forged_initial(server_addr):
    """A valid-looking first Initial (1200 bytes) from a throwaway client: it needs no key."""
    ep = Endpoint(Configuration())
    now = time.monotonic()
    ep.connect(server_addr, now)
    (data, _), = ep.datagrams_to_send(now)
    assert len(data) >= 1200
    return data


def _send_from_port(port, data, dest):
    """Send ``data`` from 127.0.0.1:``port``, which the real client holds (it set SO_REUSEPORT),
    through a second socket that closes at once; False if the kernel refuses the bind."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
    except (AttributeError, OSError):
        s.close()
        return False
    try:
        s.sendto(data, dest)
    finally:
        s.close()
    return True


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _live_server_connections(server):
    with server._cond:
        return [c for c in server._endpoint.connections if not c.is_closed]


def test_spoofed_initial_from_a_live_clients_address_does_not_take_its_replies(make_dquic):
    server = make_dquic(handshake_timeout=2.0)
    client = make_dquic(timeout=5.0)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    caddr = client.local_address
    saddr = server.local_address
    client.send_to(saddr, {1: b"hello"})
    assert server.receive_from(100) == (caddr, {1: b"hello"})
    (real,) = server.connections
    # somebody else sends one Initial from the client's address and port
    forged = _forged_initial(saddr)
    if not _send_from_port(caddr[1], forged, saddr):
        # the kernel would not share the port: hand the datagram to the server as if received
        with server._cond:
            server._endpoint.receive_datagram(forged, caddr, time.monotonic())
            server._process_events()
            server._drive.flush_needed = True
            server._drive.wake()
    _wait_for(lambda: len(_live_server_connections(server)) == 2)
    # the server's replies still go to the real client, and the client's still arrive
    for i in range(3):
        assert server.send_to(caddr, {2: b"reply %d" % i}) == 7
        assert client.receive_from(100) == (saddr, {2: b"reply %d" % i})
        client.send_to(saddr, {3: b"more %d" % i})
        assert server.receive_from(100) == (caddr, {3: b"more %d" % i})
    # the application sees one connection for that address: the established one
    assert [c.conn_id for c in server.connections] == [real.conn_id]
    assert server.connections[0].is_established
    # the half-open connection never confirms: it ends at the handshake timeout, and then the
    # established connection is still the one in use
    _wait_for(lambda: len(_live_server_connections(server)) == 1, timeout=10.0)
    assert server.send_to(caddr, {4: b"later"}) == 5
    assert client.receive_from(100) == (saddr, {4: b"later"})
    assert [c.conn_id for c in server.connections] == [real.conn_id]
    with server._cond:
        assert len(server._peers) == 1 and not server._contenders


def test_a_restarted_client_on_the_same_port_takes_over_once_its_handshake_is_confirmed(make_dquic):
    """The peer restarted (new connection from the same address, old one silently gone): the new
    connection gets the address when its handshake is confirmed, and the old one is closed."""
    server = make_dquic()
    first = make_dquic(timeout=5.0)
    port = first.local_address[1]
    saddr = server.local_address
    first.send_to(saddr, {1: b"first"})
    assert server.receive_from(100) == (("127.0.0.1", port), {1: b"first"})
    (old,) = server.connections
    # the client goes away without a word: its CONNECTION_CLOSE never leaves the socket
    first._drive.sock.queue_trains = lambda trains: None
    first.close()
    second = make_dquic(bind=("127.0.0.1", port), timeout=5.0)
    second.send_to(saddr, {1: b"second"})
    assert server.receive_from(100) == (("127.0.0.1", port), {1: b"second"})
    assert server.send_to(("127.0.0.1", port), {2: b"to the new one"}) == 14
    assert second.receive_from(100) == (saddr, {2: b"to the new one"})
    _wait_for(lambda: [c.conn_id for c in server.connections] != [old.conn_id]
              and len(server.connections) == 1)
    assert server.connections[0].conn_id != old.conn_id
