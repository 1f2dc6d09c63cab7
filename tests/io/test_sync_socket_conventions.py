"""DQUIC behaves like a socket where a Python networking user expects it: non-blocking mode,
a descriptor for select(), errno-carrying connection errors."""
from __future__ import annotations

import errno
import select
import selectors
import time

import pytest

from dquic import ConnectionClosed

pytestmark = pytest.mark.timeout(60)


def test_setblocking_false_is_settimeout_zero(make_dquic):
    d = make_dquic()
    d.setblocking(False)
    assert d.gettimeout() == 0.0 and d.getblocking() is False
    with pytest.raises(BlockingIOError) as info:
        d.receive_from(100)
    assert info.value.errno == errno.EAGAIN
    d.setblocking(True)
    assert d.gettimeout() is None and d.getblocking() is True


def test_non_blocking_send_to_a_new_peer_is_in_progress_then_goes_through(make_dquic):
    server = make_dquic()
    client = make_dquic()
    client.setblocking(False)
    addr = server.local_address
    with pytest.raises(BlockingIOError) as info:
        client.send_to(addr, {1: b"first"})
    assert info.value.errno == errno.EINPROGRESS
    deadline = time.monotonic() + 10
    while True:  # the handshake goes on in the background
        try:
            assert client.send_to(addr, {1: b"hello"}) == 5
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert server.receive_from(100)[1] == {1: b"hello"}


def test_fileno_is_readable_exactly_while_a_message_is_ready(make_dquic):
    server = make_dquic()
    client = make_dquic()
    fd = server.fileno()
    assert isinstance(fd, int) and fd >= 0
    assert select.select([fd], [], [], 0.05)[0] == []
    client.send_to(server.local_address, {1: b"one", 2: b"two"})
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)  # accepted anywhere a socket is
    try:
        assert sel.select(10.0), "never became readable"
        addr, got = server.receive_from(100)
        assert got == {1: b"one", 2: b"two"}
        assert sel.select(0.05) == []  # all read: no longer readable
        client.send_to(server.local_address, {3: b"three"})
        assert sel.select(10.0)
        assert server.receive_from(100)[1] == {3: b"three"}
    finally:
        sel.close()


def test_connection_closed_is_a_connection_reset_error_with_errno():
    exc = ConnectionClosed("connection closed by peer", 5, "bye")
    assert isinstance(exc, ConnectionResetError)
    assert exc.errno == errno.ECONNRESET and exc.error_code == 5 and exc.reason == "bye"
    assert "connection closed by peer" in str(exc)
