"""``Endpoint(message_events=False)``: what the drivers use to learn which connections have
something to read, one entry per connection instead of a ``MessageReceived`` per stream."""
from __future__ import annotations

from dquic.config import Configuration
from dquic.endpoint import ConnectionAccepted, Endpoint
from dquic.events import MessageReceived

SERVER = ("192.0.2.1", 4433)
CLIENTS = [("198.51.100.7", 5000), ("198.51.100.8", 5001)]


def _drive(server, clients, now, rounds=40):
    for _ in range(rounds):
        for client, addr in zip(clients, CLIENTS):
            for data, _ in client.datagrams_to_send(now):
                server.receive_datagram(data, addr, now)
        for data, dest in server.datagrams_to_send(now):
            clients[CLIENTS.index(dest)].receive_datagram(data, SERVER, now)
        for ep in (server, *clients):
            deadline = ep.get_timer()
            if deadline is not None and deadline <= now:
                ep.handle_timer(now)
        now += 0.001
    return now


def _setup(message_events):
    server = Endpoint(Configuration(is_client=False, encryption=False), accept=True,
                      message_events=message_events)
    clients = [Endpoint(Configuration(encryption=False)) for _ in CLIENTS]
    conns = [c.connect(SERVER, now=0.0) for c in clients]
    return server, clients, conns


def _read_all(conn):
    out = {}
    for sid in conn.readable_streams():
        while (piece := conn.read_message(sid, 1 << 16)) is not None:
            out[sid] = out.get(sid, b"") + piece[0]
    return out


def test_readable_lists_each_connection_once_without_message_events():
    server, clients, conns = _setup(False)
    for i, conn in enumerate(conns):
        for sid in range(20):
            conn.send_message(sid, b"%d:%d" % (i, sid))
    now = _drive(server, clients, 0.0)
    events = server.take_events()
    assert not [ev for _, ev in events if isinstance(ev, MessageReceived)]
    accepted = [c for c, ev in events if isinstance(ev, ConnectionAccepted)]
    assert len(accepted) == 2
    readable = server.take_readable()
    assert sorted(map(id, readable)) == sorted(map(id, accepted))  # each once, 20 streams each
    assert server.readable == {} and server.take_readable() == []
    for conn in readable:
        got = _read_all(conn)
        assert len(got) == 20
        i = int(got[0].split(b":")[0])
        assert got == {sid: b"%d:%d" % (i, sid) for sid in range(20)}
    # nothing new: nothing listed; a new message lists its connection again
    now = _drive(server, clients, now, rounds=5)
    assert server.take_readable() == []
    conns[1].send_message(7, b"again")
    now = _drive(server, clients, now, rounds=5)
    (conn,) = server.take_readable()
    assert conn.read_message(7, 100) == (b"again", True)
    assert not [ev for _, ev in server.take_events() if isinstance(ev, MessageReceived)]


def test_message_events_by_default():
    """The default (what the sans-IO example in the README relies on): one MessageReceived per
    stream that becomes readable, and nothing listed in ``readable``."""
    server, clients, conns = _setup(True)
    for sid in range(5):
        conns[0].send_message(sid, b"x")
    _drive(server, clients, 0.0)
    got = sorted(ev.stream_id for _, ev in server.take_events() if isinstance(ev, MessageReceived))
    assert got == list(range(5))
    assert server.take_readable() == []
