"""dquic.testing.udp: sans-IO endpoints on loopback sockets, one selector loop (drive)."""
from __future__ import annotations

import selectors
import time

import pytest

from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.events import MessageReceived
from dquic.keys import KeyPair
from dquic.testing.udp import SocketEndpoint, drive

pytestmark = pytest.mark.timeout(60)


class _Reader(SocketEndpoint):
    """Reads every message it is sent; echoes it when ``echo``."""

    def __init__(self, endpoint, sel, echo):
        super().__init__(endpoint, sel)
        self.echo = echo
        self.got = []

    def on_event(self, conn, ev):
        if isinstance(ev, MessageReceived):
            while (piece := conn.read_message(ev.stream_id, 1 << 16)) is not None:
                self.got.append(piece[0])
                if self.echo:
                    conn.send_message(ev.stream_id, piece[0])


def test_a_message_and_its_echo_over_loopback_then_a_rebinding():
    sel = selectors.DefaultSelector()
    server = _Reader(Endpoint(Configuration(is_client=False, identity=KeyPair.generate()),
                              accept=True), sel, echo=True)
    client = _Reader(Endpoint(Configuration()), sel, echo=False)
    try:
        conn = client.ep.connect(server.sock.getsockname(), time.monotonic())
        conn.send_message(0, b"ping")
        assert drive([client, server], sel, lambda: client.got == [b"ping"], 20)
        old_port = client.sock.getsockname()[1]
        client.bind()  # a new source port: the server follows the connection there
        assert client.sock.getsockname()[1] != old_port
        conn.send_message(0, b"again")
        assert drive([client, server], sel, lambda: client.got == [b"ping", b"again"], 20)
        assert server.got == [b"ping", b"again"]
        # nothing more to wait for: the deadline ends the loop
        assert not drive([client, server], sel, lambda: False, 0.05)
    finally:
        client.close()
        server.close()
        sel.close()
    assert client.sock is None and server.sock is None
