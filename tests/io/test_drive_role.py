"""The blocking driver's role (``dquic._drive.Drive``) and its transitions, one at a time: an
API call takes the free role for its steps and gives it back, asks the I/O thread to hand it
over, and queues work for whoever drives. The endpoint is a stand-in with nothing to do; the
socket is a real one on 127.0.0.1 (no I/O thread is started)."""
from __future__ import annotations

import select
import threading
import time

import pytest

from dquic._drive import Drive
from dquic._socket import UDPSocket, Waker


class _IdleEndpoint:
    """An endpoint with no timer and nothing to send; its one event stays pending (nothing
    takes it), so every step and flush hands it to the driver's ``on_events``."""

    events = [("connection", "event")]

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass

    def trains_to_send(self, now, settle=True):
        return []

    def settle(self):
        pass


@pytest.fixture
def drive():
    events = []
    d = Drive({}, lambda: bool(events.append("events")), lambda addr, err: False, lambda: None,
              lambda exc: None)
    sock = UDPSocket()
    sock.bind(("127.0.0.1", 0))
    d.sock, d.endpoint, d.waker = sock, _IdleEndpoint(), Waker()
    d.events = events
    yield d
    d.close()


def _woken(d: Drive) -> bool:
    return d.waker.fileno() in select.select([d.waker.fileno()], [], [], 0)[0]


def test_a_waiting_call_takes_the_free_role_steps_and_gives_it_back(drive):
    me = threading.get_ident()
    with drive.cond:
        drive.active += 1
        drive.drive_or_wait(time.monotonic() + 0.01, "t")  # one step: select times out
        assert drive.holder == me and drive.epoch == 1 and drive.last_step > 0
        with pytest.raises(TimeoutError, match="late"):
            drive.drive_or_wait(time.monotonic() - 1.0, "late")  # a passed deadline
        assert drive.epoch == 1  # the same call kept the role
        drive.end_call()
        assert drive.holder is None and drive.active == 0 and drive.last_exit > 0
    assert "events" in drive.events  # its flush turned the core's events into state


def test_a_call_asks_the_io_thread_to_hand_over_and_waits(drive):
    drive.io_ident = drive.holder = threading.get_ident() + 1  # the I/O thread drives
    with drive.cond:
        drive.drive_or_wait(time.monotonic() + 0.01, "t")
        assert drive.want_handover and drive.wake_pending and _woken(drive)
        assert drive.holder == drive.io_ident  # the I/O thread lets go after its step


def test_work_queued_while_another_thread_drives_goes_with_its_next_step(drive):
    drive.holder = threading.get_ident() + 1
    with drive.cond:
        drive.kick()
        assert drive.flush_needed and _woken(drive)
        assert drive.holder != threading.get_ident()


def test_a_kick_with_the_role_free_sends_at_once_and_releases_it(drive):
    with drive.cond:
        drive.kick()
        assert drive.holder is None and not drive.flush_needed and not drive.wake_pending
        assert drive.last_step > 0  # nobody had read the socket for STEP_INTERVAL: one step


def test_a_lazy_start_waits_for_the_first_release_to_start_the_io_thread(drive):
    """``start(lazy=True)`` (a send_to made the socket) leaves the thread for the moment the
    call gives the role up; a plain start (bind) starts it at once."""
    d = Drive({}, lambda: False, lambda addr, err: False, None, lambda exc: None)
    sock = UDPSocket()
    sock.bind(("127.0.0.1", 0))
    with d.cond:
        d.start(sock, _IdleEndpoint(), lazy=True)
        assert d.thread is None
        d.kick()  # takes the free role, flushes, releases: the thread starts now
        assert d.thread is not None and d.thread.is_alive() and not d.io_wanted
        d.stop_io()
    d.thread.join(2.0)
    assert not d.thread.is_alive()
    with d.cond:
        d.close()


def _poll(d: Drive, predicate, timeout: float = 10.0) -> bool:
    # (lock held) wait for ``predicate``, looking every millisecond: the driver notifies only
    # the waiters it counts
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        d.cond.wait(0.001)
    return True


def test_detach_io_ends_a_parked_io_thread_without_it_touching_the_socket_again():
    """close() does not wait for an I/O thread parked between steps: detach_io sends what is
    left itself, and the thread ends on its own, with no socket call after it was told."""
    calls = []

    class _Sock:
        """A UDPSocket's driver-facing side that records each call the I/O thread makes."""

        pending = False
        datagrams_sent = datagrams_received = 0
        unreachable_reports = 0

        def __init__(self):
            self._real = UDPSocket()
            self._real.bind(("127.0.0.1", 0))

        def fileno(self):
            calls.append(("fileno", threading.get_ident()))
            return self._real.fileno()

        def recv_batch(self, n):
            calls.append(("recv", threading.get_ident()))
            return []

        def send_now(self, out):
            calls.append(("send", threading.get_ident()))
            return 0

        def close(self):
            self._real.close()

    d = Drive({}, lambda: False, lambda addr, err: False, None, lambda exc: None)
    sock = _Sock()
    me = threading.get_ident()
    with d.cond:
        d.start(sock, _IdleEndpoint())  # the I/O thread takes the idle role, waits in select
        assert _poll(d, lambda: d.holder is not None)
        d.want_handover = True  # as an API call that must drive asks for it
        d.wake()
        assert _poll(d, lambda: d.holder is None)
        d.holder = me  # the call drives now: the I/O thread parks until it ends
        d.epoch += 1
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        with d.cond:
            if d.io_parked:
                break
        time.sleep(0.0002)
    with d.cond:
        d.holder = None
        state = (d.io_parked, d.holder, d.error, d.pending, time.monotonic() - deadline)
        assert d.detach_io(), state
        told = len([c for c in calls if c[1] != me])
    d.close()
    d.thread.join(2.0)
    assert not d.thread.is_alive()
    assert len([c for c in calls if c[1] != me]) == told  # nothing after it was told


def test_detach_io_declines_while_the_io_thread_may_be_in_a_socket_call(drive):
    drive.thread = threading.Thread(target=lambda: None)  # started or not: never parked here
    with drive.cond:
        assert not drive.io_parked and not drive.detach_io()
        drive.io_parked = True
        drive.holder = threading.get_ident() + 1  # somebody drives
        assert not drive.detach_io()
    drive.holder = None
