"""A receive_from waiting for a peer whose connection ended raises that connection's error
(once, after whatever it had sent was read) instead of timing out."""
from __future__ import annotations

import threading
import time

import pytest

from dquic import AuthenticationError, ConnectionClosed, KeyPair

pytestmark = pytest.mark.timeout(60)


def test_waiting_receive_from_raises_when_the_server_closes(make_dquic):
    server = make_dquic()
    client = make_dquic(timeout=10.0)
    addr = server.local_address
    client.send_to(addr, {1: b"hello"})
    peer, got = server.receive_from(100)
    server.send_to(peer, {1: b"last words"})
    closer = threading.Timer(0.3, server.close)
    closer.start()
    try:
        assert client.receive_from(100) == (addr, {1: b"last words"})  # data first
        start = time.monotonic()
        with pytest.raises(ConnectionClosed):
            client.receive_from(100)
        assert time.monotonic() - start < 5.0  # promptly, not at the 10 s timeout
    finally:
        closer.join()
    # reported once: the next receive_from waits (and times out) like any other
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.receive_from(100)


def test_refused_handshake_raises_in_receive_from(make_dquic):
    allowed = KeyPair.generate()
    server = make_dquic(trusted_peers=[allowed.public])
    client = make_dquic(identity=KeyPair.generate(), timeout=10.0)  # not on the list
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        try:
            client.send_to(server.local_address, {1: b"let me in"})
        except AuthenticationError:
            raise
        # the handshake completed on the client's side before the server refused it
        client.receive_from(100)
    assert time.monotonic() - start < 9.0  # within the handshake timeout, not receive_from's
