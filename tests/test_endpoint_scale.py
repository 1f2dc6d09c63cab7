"""The endpoint's cost follows events, not the number of connections it holds.

A server endpoint with a few hundred idle connections is driven through one request, a timer
pass and a datagram for an unknown connection ID; the connections' methods are counted (the
endpoint builds its connections from ``dquic.endpoint.Connection``, replaced here by a counting
subclass), and the counts must not depend on how many idle connections there are. The timer
heap is also checked against a brute-force minimum under random deadline changes.
"""
from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dquic.endpoint as endpoint_module
from dquic.testing.pairs import exchange
from dquic.config import Configuration
from dquic.connection import CoreConnection
from dquic.endpoint import Endpoint
from dquic.keys import KeyPair
from dquic.events import ConnectionTerminated, HandshakeCompleted, MessageReceived

SERVER = ("10.0.0.1", 4433)


class CountingConnection(CoreConnection):
    """Counts the calls an endpoint makes on a connection (class-wide tallies)."""

    calls: "collections.Counter[str]" = collections.Counter()

    def get_timer(self):
        CountingConnection.calls["get_timer"] += 1
        return super().get_timer()

    def handle_timer(self, now):
        CountingConnection.calls["handle_timer"] += 1
        return super().handle_timer(now)

    def datagrams_to_send(self, now):
        CountingConnection.calls["datagrams_to_send"] += 1
        return super().datagrams_to_send(now)

    def datagram_trains(self, now, max_bytes=65000, max_segments=64):
        CountingConnection.calls["datagram_trains"] += 1
        return super().datagram_trains(now, max_bytes, max_segments)

    def is_stateless_reset(self, datagram):
        CountingConnection.calls["is_stateless_reset"] += 1
        return super().is_stateless_reset(datagram)


class Net:
    """A server endpoint and one client endpoint per connection, on a lossless in-memory path
    with a virtual clock (1 ms one way)."""

    def __init__(self, monkeypatch, n: int, encryption: bool = False) -> None:
        monkeypatch.setattr(endpoint_module, "CoreConnection", CountingConnection)
        cfg = Configuration(encryption=encryption, idle_timeout=300.0)
        self.now = 0.0
        scfg = cfg.copy(is_client=False, identity=KeyPair.generate() if encryption else None)
        self.server = Endpoint(scfg, accept=True, max_connections=n + 16,
                               max_handshakes=n + 16)
        self.clients = {}  # address -> client endpoint
        self.cfg = cfg
        self.received = []

    def client(self, i: int):
        addr = ("10.1.%d.%d" % (i // 250, i % 250 + 1), 5000 + i)
        ep = Endpoint(self.cfg)
        self.clients[addr] = ep
        return addr, ep

    def pump(self, rounds: int = 50) -> None:
        """Move datagrams both ways until nothing is in flight (timers only when due)."""
        for _ in range(rounds):
            moved = False
            for addr, ep in self.clients.items():
                for data, dest in ep.datagrams_to_send(self.now):
                    self.server.receive_datagram(data, addr, self.now)
                    moved = True
            for data, dest in self.server.datagrams_to_send(self.now):
                ep = self.clients.get(dest)
                if ep is not None:
                    ep.receive_datagram(data, SERVER, self.now)
                    moved = True
            for ep in [self.server, *self.clients.values()]:
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
            for _, ev in self.server.take_events():
                if type(ev) is MessageReceived:
                    self.received.append(ev)
            if not moved:
                return
            self.now += 0.001

    def settle(self, until: float) -> None:
        """Let virtual time pass, running every due timer (the connections go idle)."""
        while True:
            nxt = [t for t in (ep.get_timer() for ep in [self.server, *self.clients.values()])
                   if t is not None]
            if not nxt or min(nxt) > until:
                self.now = until
                return
            self.now = max(self.now, min(nxt))
            for ep in [self.server, *self.clients.values()]:
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
            self.pump()


def _open(monkeypatch, n: int) -> Net:
    net = Net(monkeypatch, n)
    conns = []
    for i in range(n):
        addr, ep = net.client(i)
        conns.append(ep.connect(SERVER, net.now))
    net.pump()
    for c in conns:
        c.send_message(1, b"hello")
    net.pump()
    net.settle(net.now + 1.0)  # past every ACK delay and PTO: all idle
    assert net.server.connection_count == n
    assert net.server.handshakes_in_progress == 0
    return net


def _one_request(net: Net):
    addr, ep = next(iter(net.clients.items()))
    conn = ep.connections[0]
    conn.send_message(7, b"x" * 64)
    CountingConnection.calls.clear()
    net.pump()
    return dict(CountingConnection.calls)


@pytest.mark.parametrize("n", [20, 400])
def test_one_request_visits_only_its_connection(monkeypatch, n):
    net = _open(monkeypatch, n)
    calls = _one_request(net)
    # one request on one connection: the server's and that client's connection only, a few
    # calls each (not one per idle connection)
    assert calls.get("get_timer", 0) <= 20, calls
    assert calls.get("datagrams_to_send", 0) + calls.get("datagram_trains", 0) <= 20, calls
    assert calls.get("handle_timer", 0) <= 4, calls


@pytest.mark.parametrize("n", [20, 400])
def test_timer_pass_runs_only_due_connections(monkeypatch, n):
    net = _open(monkeypatch, n)
    CountingConnection.calls.clear()
    t = net.server.get_timer()
    assert t is not None and t > net.now  # idle: the next deadline is an idle timeout
    net.server.handle_timer(net.now)
    assert net.server.datagrams_to_send(net.now) == []
    assert sum(CountingConnection.calls.values()) == 0, CountingConnection.calls


def test_unknown_connection_id_does_not_scan_connections(monkeypatch):
    net = _open(monkeypatch, 300)
    CountingConnection.calls.clear()
    resets = net.server.resets_sent
    net.server.receive_datagram(bytes([0x41]) + bytes(range(60)), ("10.9.9.9", 9), net.now)
    assert CountingConnection.calls.get("is_stateless_reset", 0) == 0
    assert net.server.resets_sent == resets + 1


def test_stateless_reset_found_by_token_among_many(monkeypatch):
    net = _open(monkeypatch, 50)
    addr, ep = list(net.clients.items())[17]
    conn = ep.connections[0]
    token = conn.reset_token
    assert token is not None
    CountingConnection.calls.clear()
    ep.receive_datagram(bytes([0x47]) + bytes(30) + token, SERVER, net.now)
    assert CountingConnection.calls["is_stateless_reset"] == 1
    assert conn.is_closed
    events = [ev for _, ev in ep.take_events()]
    assert any(isinstance(ev, ConnectionTerminated) and ev.reason == "stateless reset" for ev in events)


def test_maps_are_emptied_when_connections_end(monkeypatch):
    net = _open(monkeypatch, 30)
    # each client maps the reset token of the server connection ID it uses (the server's
    # transport parameters carry it); clients give none for their first ID, and tokens of
    # spare IDs count only once used (RFC 9000 §10.3.1)
    assert net.server._by_token == {}
    assert sum(len(ep._by_token) for ep in net.clients.values()) == 30
    for ep in net.clients.values():
        ep.connections[0].close()
    net.pump()
    net.settle(net.now + 5.0)
    for ep in [net.server, *net.clients.values()]:
        assert ep.connection_count == 0
        assert ep._by_cid == {} and ep._by_token == {} and ep._half_open == {}
        assert ep._entry == {} and ep._work == {}
        assert ep.get_timer() is None


def test_half_open_count_and_retry_threshold(monkeypatch):
    net = Net(monkeypatch, 64)
    net.server.retry_threshold = 5
    for i in range(8):
        addr, ep = net.client(i)
        ep.connect(SERVER, net.now)
        for data, _ in ep.datagrams_to_send(net.now):
            net.server.receive_datagram(data, addr, net.now)
    assert net.server.handshakes_in_progress == 5
    assert net.server.retries_sent == 3
    net.pump()
    assert net.server.handshakes_in_progress == 0
    assert net.server.connection_count == 8  # the three sent a Retry came back with its token


def test_idle_timeouts_fire_through_the_heap(monkeypatch):
    net = _open(monkeypatch, 40)
    net.settle(net.now + 400.0)
    assert net.server.connection_count == 0
    assert all(ep.connection_count == 0 for ep in net.clients.values())


# --------------------------------------------------------------------------------------------
# the heap alone, with stand-in connections


class _Stub:
    pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.one_of(st.none(), st.integers(0, 40))),
                min_size=1, max_size=400))
def test_heap_top_is_the_earliest_deadline(ops):
    ep = Endpoint(Configuration(encryption=False))
    stubs = [_Stub() for _ in range(16)]
    truth = {}
    for i, due in ops:
        d = None if due is None else float(due)
        ep._set_deadline(stubs[i], d)
        if d is None:
            truth.pop(i, None)
        else:
            truth[i] = d
        top = ep._top()
        expected = min(truth.values()) if truth else None
        assert (None if top is None else top[0]) == expected
        if top is not None:
            assert truth[stubs.index(top[2])] == top[0]


def test_heap_stays_compact_under_churn():
    ep = Endpoint(Configuration(encryption=False))
    stubs = [_Stub() for _ in range(50)]
    rng = random.Random(1)
    for k in range(20000):
        # deadlines that keep moving earlier leave dead entries behind
        ep._set_deadline(rng.choice(stubs), 1e6 - k)
    assert len(ep._heap) <= 2 * len(stubs) + 1100
    assert ep._top()[0] == min(e[3] for e in ep._entry.values())


def test_handshake_completes_and_messages_arrive(monkeypatch):
    """The counting harness itself delivers (so the counts above describe real exchanges)."""
    net = Net(monkeypatch, 4, encryption=True)
    conns = []
    for i in range(3):
        _, ep = net.client(i)
        conns.append(ep.connect(SERVER, net.now))
    net.pump()
    for c in conns:
        assert c.is_established
        c.send_message(3, b"ping")
    net.pump()
    assert len(net.received) == 3
    assert not any(isinstance(ev, HandshakeCompleted) for _, ev in net.server.take_events())


def test_retry_race_with_an_earlier_copy_accepted_without_it():
    """Under load the server may send a Retry for one copy of a client's first packet and accept
    a later copy directly (fewer handshakes in progress by then): the client keeps to the
    connection that answered its Retry and completes the handshake."""
    key = KeyPair.generate()
    server = Endpoint(Configuration(is_client=False, identity=key), accept=True)
    client = Endpoint(Configuration())
    conn = client.connect(SERVER, 0.0)
    first = client.datagrams_to_send(0.0)
    client_addr = ("10.1.0.1", 5000)
    server.require_retry = True
    for data, _ in first:
        server.receive_datagram(data, client_addr, 0.001)
    retry = server.datagrams_to_send(0.001)
    assert server.retries_sent == 1 and server.connection_count == 0
    server.require_retry = False
    for data, _ in first:  # a duplicate (or a retransmission) of the first packet
        server.receive_datagram(data, client_addr, 0.002)
    direct = server.datagrams_to_send(0.002)
    assert server.connection_count == 1 and direct
    now = 0.003
    for data, _ in retry + direct:  # the Retry first, then the other connection's answer
        client.receive_datagram(data, SERVER, now)
    exchange(server, client, client_addr, SERVER, now, rounds=20)
    events = [ev for _, ev in client.take_events()]
    assert not any(isinstance(ev, ConnectionTerminated) for ev in events), events
    assert conn.is_established and conn.handshake_confirmed
    answered = [c for c in server.connections if c.handshake_confirmed]
    assert len(answered) == 1 and answered[0].host_cid == conn.peer_cid


def test_reset_tokens_of_unused_connection_ids_do_not_count(monkeypatch):
    """RFC 9000 §10.3.1: only the token of the peer's connection ID in use ends a connection;
    a spare ID's token (given with NEW_CONNECTION_ID, never used) does not."""
    net = _open(monkeypatch, 3)
    addr, ep = next(iter(net.clients.items()))
    conn = ep.connections[0]
    spares = [tok for seq, (cid, tok) in conn._cids.peer_cids.items() if cid != conn.peer_cid and tok]
    assert spares, "the server issued a spare connection ID"
    ep.receive_datagram(bytes([0x47]) + bytes(30) + spares[0], SERVER, net.now)
    assert not conn.is_closed
    ep.receive_datagram(bytes([0x47]) + bytes(30) + conn.reset_token, SERVER, net.now)
    assert conn.is_closed


def test_trains_sent_before_their_bookkeeping_settles(monkeypatch):
    """``trains_to_send(settle=False)`` builds the trains but leaves the polled connections'
    bookkeeping (deadline, events) for ``settle()``, or for the next call that needs it."""
    net = _open(monkeypatch, 2)
    addr, ep = next(iter(net.clients.items()))
    conn = ep.connections[0]
    conn.send_message(7, b"x" * 64)
    CountingConnection.calls.clear()
    trains = ep.trains_to_send(net.now, settle=False)
    assert len(trains) == 1 and trains[0][2] == SERVER
    assert CountingConnection.calls == {"datagram_trains": 1}  # no deadline read yet
    ep.settle()
    assert CountingConnection.calls == {"datagram_trains": 1, "get_timer": 1}
    ep.settle()  # nothing left
    assert CountingConnection.calls["get_timer"] == 1
    # a call that needs the bookkeeping settles first by itself
    conn.send_message(7, b"y" * 64)
    ep.trains_to_send(net.now, settle=False)
    timer = ep.get_timer()
    assert CountingConnection.calls["get_timer"] == 2 and timer == conn.get_timer()
