"""dquic.testing.pairs: two sans-IO endpoints back to back (core_pair, exchange), their expired
timers (run_due_timers) and a fixed-delay wire (Wire)."""
from __future__ import annotations

import pytest

from dquic.config import Configuration
from dquic.testing.pairs import Wire, core_pair, exchange, run_due_timers

C_ADDR = ("192.0.2.1", 1000)
S_ADDR = ("198.51.100.1", 2000)


class _Recorder:
    """A sans-IO endpoint that sends what it is given and records what arrives and when."""

    def __init__(self, outgoing=(), timer=None):
        self.outgoing = list(outgoing)
        self.received = []
        self.timer = timer
        self.timer_runs = []

    def datagrams_to_send(self, now):
        out, self.outgoing = self.outgoing, []
        return out

    def receive_datagram(self, data, addr, now):
        self.received.append((data, addr, now))

    def get_timer(self):
        return self.timer

    def handle_timer(self, now):
        self.timer_runs.append(now)
        self.timer = None


def _plain_pair():
    return core_pair(Configuration(encryption=False), Configuration(is_client=False, encryption=False),
                     C_ADDR, S_ADDR)


def test_exchange_until_stops_at_the_condition_without_stepping():
    client, server = _plain_pair()
    now = exchange(server, client, C_ADDR, S_ADDR, 5.0, step=0.25,
                   until=lambda: client.is_established and server.is_established)
    assert client.is_established and server.is_established
    assert now >= 5.0 and (now - 5.0) % 0.25 == 0  # whole steps, none after the last round


def test_exchange_without_until_stops_once_quiet():
    a, b = _Recorder([(b"one", S_ADDR)]), _Recorder([(b"two", C_ADDR)])
    now = exchange(b, a, C_ADDR, S_ADDR, 1.0, rounds=30, step=0.5)
    assert b.received == [(b"one", C_ADDR, 1.0)] and a.received == [(b"two", S_ADDR, 1.0)]
    assert now == 2.0  # the moving round and the quiet round, one step each


class _Chatty(_Recorder):
    def datagrams_to_send(self, now):
        return [(b"more", S_ADDR)]


def test_exchange_gives_up_after_its_rounds():
    a, b = _Chatty(), _Recorder()
    assert exchange(b, a, C_ADDR, S_ADDR, 0.0, rounds=3, step=1.0, until=lambda: False) == 3.0
    assert len(b.received) == 3


def test_run_due_timers_runs_only_the_expired_ones_in_order():
    due, later, none, exact = (_Recorder(timer=1.0), _Recorder(timer=2.5), _Recorder(),
                               _Recorder(timer=2.0))
    assert run_due_timers(2.0, due, later, none, exact) == [due, exact]
    assert due.timer_runs == [2.0] and exact.timer_runs == [2.0]
    assert later.timer_runs == [] and none.timer_runs == []
    assert run_due_timers(2.0) == []


def test_wire_delivers_after_the_one_way_delay_then_runs_due_timers():
    client = _Recorder([(b"hello", S_ADDR)])
    server = _Recorder([(b"welcome", C_ADDR)], timer=0.3)
    wire = Wire(client, C_ADDR, server, S_ADDR, one_way=0.25)
    wire.collect(0.0)
    assert wire.next_time() == 0.25
    wire.advance(0.2)
    assert server.received == [] and client.received == []
    wire.advance(0.25)
    assert server.received == [(b"hello", C_ADDR, 0.25)]
    assert client.received == [(b"welcome", S_ADDR, 0.25)]
    assert wire.next_time() == 0.3 and server.timer_runs == []
    wire.advance(0.3)
    assert server.timer_runs == [0.3] and wire.next_time() is None


def test_wire_refuses_a_datagram_to_a_third_address():
    wire = Wire(_Recorder([(b"x", ("203.0.113.9", 9))]), C_ADDR, _Recorder(), S_ADDR, 0.01)
    with pytest.raises(RuntimeError, match="not to the other side"):
        wire.collect(0.0)
