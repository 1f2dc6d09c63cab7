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
