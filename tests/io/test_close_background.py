"""``close()`` of a ``DQUIC`` whose socket ``send_to`` made returns once its CONNECTION_CLOSE is
sent; the I/O thread waits for the peer's answer (sending the close again when the peer's next
packet arrives) and then closes the socket. A socket the application bound is released before
``close()`` returns, after the answer, as before."""
from __future__ import annotations

import socket
import time

from _iohelpers import EchoThread

RTT = 0.2  # the relay delays each direction by half of it


def _poll(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def _echo_once(client, relay) -> None:
    client.send_to(relay.address, {0: b"ping"})
    _, back = client.receive_from(100)
    assert back == {0: b"ping"}


def test_close_returns_before_the_answer_and_the_io_thread_waits_for_it(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    echo = EchoThread(server)
    try:
        client = make_dquic(bind=None, linger=5.0)
        _echo_once(client, relay)
        thread = client._drive.thread
        assert len(server.connections) == 1
        t0 = time.monotonic()
        client.close()
        took = time.monotonic() - t0
        # the close is on its way; its answer is a round trip away
        assert took < RTT / 2, took
        assert thread.is_alive() and not client._drive.sock.closed
        # the I/O thread reads the answer, then closes the socket and ends
        thread.join(5 * RTT + 2.0)
        assert not thread.is_alive()
        assert client._drive.sock.closed and client._drive.waker is None
        assert _poll(lambda: not server.connections, 2.0)  # the server has the close
    finally:
        assert echo.stop()
    assert not echo.errors


def test_a_lost_close_goes_out_again_from_the_io_thread(make_relay, make_dquic):
    """The close is lost; when the server's next packet reaches the client after ``close()``
    returned, the I/O thread answers it with the close again and the server learns of it
    (with ``close()`` closing the socket at once it would not, until its idle timeout)."""
    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    client = make_dquic(bind=None, linger=5.0)
    client.send_to(relay.address, {0: b"hello"})
    addr, got = server.receive_from(100)
    assert got == {0: b"hello"}
    server.send_to(addr, {0: b"back"})  # also acknowledges the client's message
    assert client.receive_from(100)[1] == {0: b"back"}
    time.sleep(RTT)  # the client's acknowledgement of "back" reaches the server
    relay.blackhole = True
    thread = client._drive.thread
    client.close()  # its CONNECTION_CLOSE is lost
    time.sleep(0.05)  # (the relay drops it as it comes)
    assert thread.is_alive(), "the closing period (3 PTO) is several round trips here"
    assert len(server.connections) == 1
    relay.blackhole = False
    server.send_to(addr, {0: b"late"})  # reaches the closing client, which closes again
    assert _poll(lambda: not server.connections, 3.0)
    thread.join(5.0)
    assert not thread.is_alive() and client._drive.sock.closed


def test_a_bound_socket_is_released_before_close_returns(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    echo = EchoThread(server)
    try:
        client = make_dquic(linger=5.0)  # bound by the application
        port = client.local_address[1]
        _echo_once(client, relay)
        t0 = time.monotonic()
        client.close()
        took = time.monotonic() - t0
        assert took >= RTT * 0.9, took  # it waited for the server's answer
        assert client._drive.sock.closed
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(("127.0.0.1", port))  # the port is free again
    finally:
        assert echo.stop()
    assert not echo.errors


def test_at_exit_the_interpreter_waits_for_a_close_the_io_thread_finishes(make_relay, make_dquic):
    """The I/O threads are daemon threads: the exit hook joins one that still waits for the
    answer to a close (here lost for good: until the closing period ends, well within
    ``linger``)."""
    from dquic._drive import _FINISHING, _finish_closes_at_exit

    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    client = make_dquic(bind=None, linger=20.0)
    client.send_to(relay.address, {0: b"hello"})
    assert server.receive_from(100)[1] == {0: b"hello"}
    time.sleep(RTT)  # acknowledged
    relay.blackhole = True
    thread = client._drive.thread
    client.close()
    assert thread.is_alive() and client._drive in _FINISHING
    t0 = time.monotonic()
    _finish_closes_at_exit()
    assert not thread.is_alive() and client._drive.sock.closed
    assert time.monotonic() - t0 < 10.0
    assert client._drive not in _FINISHING


def test_a_failure_of_the_io_thread_while_it_finishes_still_closes_the_socket(make_relay, make_dquic,
                                                                                monkeypatch):
    import threading

    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    client = make_dquic(bind=None, linger=5.0)
    client.send_to(relay.address, {0: b"hello"})
    addr, _ = server.receive_from(100)
    time.sleep(RTT)
    relay.blackhole = True
    drive = client._drive
    thread = drive.thread
    client.close()
    assert thread.is_alive() and not drive.sock.closed
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))

    def broken(*args, **kwargs):
        raise RuntimeError("endpoint failed")

    monkeypatch.setattr(drive.endpoint, "receive_datagram", broken)
    relay.blackhole = False
    server.send_to(addr, {0: b"late"})  # the closing client's endpoint fails on it
    thread.join(5.0)
    assert not thread.is_alive()
    assert [str(e) for e in failures] == ["endpoint failed"]
    assert drive.sock.closed and drive.waker is None and drive.finishing is None


def test_many_fresh_clients_leave_no_socket_or_thread_behind(make_dquic):
    """A client per request, closed at once each time: every socket the I/O threads were left
    to close is closed once the answers came (descriptors back to where they were)."""
    import os
    import sys
    import threading

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("counts descriptors in /proc/self/fd")
    from dquic.sync import DQUIC

    server = make_dquic()
    echo = EchoThread(server)
    try:
        before = len(os.listdir("/proc/self/fd"))
        threads = []
        for i in range(40):
            with DQUIC(linger=5.0) as client:
                client.settimeout(10)
                client.send_to(server.local_address, {0: b"%d" % i})
                assert client.receive_from(100)[1] == {0: b"%d" % i}
                threads.append(client._drive.thread)
        for t in threads:
            t.join(5.0)
        assert not any(t.is_alive() for t in threads)
        assert not [t for t in threading.enumerate() if t in threads]
        assert _poll(lambda: len(os.listdir("/proc/self/fd")) <= before, 2.0), (
            len(os.listdir("/proc/self/fd")), before)
        assert _poll(lambda: not server.connections, 2.0)
    finally:
        assert echo.stop()
    assert not echo.errors


def test_a_forked_child_has_no_close_to_finish(make_relay, make_dquic):
    """The parent's finishing I/O thread does not exist in a forked child: the child's exit
    hook has nothing to wait for (and the set's lock is new)."""
    import os
    import sys

    import pytest

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        pytest.skip("needs fork")
    from dquic import _drive

    server = make_dquic()
    relay = make_relay(server.local_address, delay=RTT / 2)
    client = make_dquic(bind=None, linger=5.0)
    client.send_to(relay.address, {0: b"hello"})
    assert server.receive_from(100)[1] == {0: b"hello"}
    time.sleep(RTT)
    relay.blackhole = True
    client.close()
    assert client._drive in _drive._FINISHING
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without the parent's exit handlers
        try:
            t0 = time.monotonic()
            _drive._finish_closes_at_exit()
            ok = not _drive._FINISHING and time.monotonic() - t0 < 0.05
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert client._drive in _drive._FINISHING  # the parent's is still under way
