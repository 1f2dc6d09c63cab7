"""The library logs connection life cycles on the ``dquic.connection`` logger (INFO: established,
how it ended, migrations; DEBUG: accepted, Retry and reset sent), each record prefixed with the
peer and connection ID, and nothing per packet."""
from __future__ import annotations

import logging

from dquic.testing.pairs import exchange
from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.keys import KeyPair

SERVER = ("10.0.0.1", 4433)
CLIENT = ("10.0.0.2", 5000)


def _pump(server, client, now, rounds=30):
    return exchange(server, client, CLIENT, SERVER, now, rounds=rounds)


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "dquic.connection"]


def test_life_cycle_is_logged_with_peer_and_connection_id(caplog):
    key = KeyPair.generate()
    server = Endpoint(Configuration(is_client=False, identity=key, idle_timeout=5.0), accept=True)
    client = Endpoint(Configuration(idle_timeout=5.0))
    with caplog.at_level(logging.INFO, logger="dquic.connection"):
        conn = client.connect(SERVER, 0.0)
        now = _pump(server, client, 0.0)
        assert conn.is_established
        established = [m for m in _messages(caplog) if "established" in m]
        assert len(established) == 2
        assert any(key.public_b64 in m for m in established)  # the client logs the server's key
        record = next(r for r in caplog.records if "established" in r.getMessage())
        assert record.peer and record.cid
        # a 1 MiB message: no record per packet
        before = len(caplog.records)
        with caplog.at_level(logging.DEBUG, logger="dquic.connection"):
            conn.send_message(1, bytes(1 << 20))
            now = _pump(server, client, now, rounds=2000)
        assert len(caplog.records) == before
        # the server's side times out idle; the client closes
        conn.close()
        now = _pump(server, client, now)
        server.handle_timer(now + 60)
        client.handle_timer(now + 60)
    messages = _messages(caplog)
    assert any(m.startswith("[10.0.0.2:5000 ") and "closed by the peer" in m for m in messages)
    assert any(m.startswith("[10.0.0.1:4433 ") and m.endswith("] closed") for m in messages)


def test_refused_client_and_idle_timeout_are_logged(caplog):
    key = KeyPair.generate()
    server = Endpoint(Configuration(is_client=False, identity=key, idle_timeout=2.0,
                                    trusted_peers=[KeyPair.generate().public]), accept=True)
    client = Endpoint(Configuration(identity=KeyPair.generate(), idle_timeout=2.0))
    with caplog.at_level(logging.DEBUG, logger="dquic.connection"):
        client.connect(SERVER, 0.0)
        now = _pump(server, client, 0.0)
        ok = Endpoint(Configuration(is_client=False, identity=key, idle_timeout=2.0), accept=True)
        other = Endpoint(Configuration(idle_timeout=2.0))
        other.connect(SERVER, now)
        now = _pump(ok, other, now)
        ok.handle_timer(now + 10)
    messages = _messages(caplog)
    assert any("accepted" in m for m in messages)
    assert any("handshake refused (code AUTHENTICATION_FAILED" in m for m in messages)
    assert any("idle timeout" in m for m in messages)


def test_refused_handshakes_name_the_key_and_are_reported_once(caplog):
    """A refused client is logged once by the server, with the key it presented (the key
    that was refused), and the event queue carries a HandshakeFailed with that key before the
    connection's ConnectionTerminated; a client without a key and one that refuses the
    server's key are reported with what is known."""
    from dquic.errors import ErrorCode
    from dquic.events import ConnectionTerminated, HandshakeFailed

    key = KeyPair.generate()
    refused_key = KeyPair.generate()
    server = Endpoint(Configuration(is_client=False, identity=key, idle_timeout=2.0,
                                    trusted_peers=[KeyPair.generate().public]), accept=True)
    with caplog.at_level(logging.INFO, logger="dquic.connection"):
        # IK: the client pins the server and presents its key in the first message
        client = Endpoint(Configuration(identity=refused_key, server_key=key.public, idle_timeout=2.0))
        client.connect(SERVER, 0.0)
        now = _pump(server, client, 0.0)
        events = server.take_events()
        failed = [ev for _, ev in events if isinstance(ev, HandshakeFailed)]
        assert len(failed) == 1
        ev = failed[0]
        assert ev.peer_key == refused_key.public and not ev.by_peer and not ev.timeout
        assert ev.error_code == ErrorCode.AUTHENTICATION_FAILED and ev.address == CLIENT
        assert "not trusted" in ev.reason
        kinds = [type(e) for _, e in events]
        assert kinds.index(HandshakeFailed) == kinds.index(ConnectionTerminated) - 1
        # the client learns it was refused (before any answer: the server revealed nothing)
        cfailed = [e for _, e in client.take_events() if isinstance(e, HandshakeFailed)]
        assert len(cfailed) == 1 and cfailed[0].by_peer and cfailed[0].peer_key is None
        # a client without a key: refused before any key is known
        other = Endpoint(Configuration(idle_timeout=2.0))
        other.connect(SERVER, now)
        _pump(server, other, now)
        failed = [e for _, e in server.take_events() if isinstance(e, HandshakeFailed)]
        assert len(failed) == 1 and failed[0].peer_key is None
    server_lines = [m for m in _messages(caplog) if m.startswith("[10.0.0.2:5000 ")]
    refusals = [m for m in server_lines if "refused" in m]
    assert len(refusals) == 2 and not any("closed" in m or "failed (" in m for m in server_lines)
    assert refusals[0].endswith("'client static key is not trusted'); peer key %s" % refused_key.public_b64)
    assert refusals[1].endswith("peer key not revealed")
    client_lines = [m for m in _messages(caplog) if m.startswith("[10.0.0.1:4433 ")]
    assert any("handshake refused by the peer (code AUTHENTICATION_FAILED" in m for m in client_lines)


def test_completed_handshakes_report_no_failure():
    server = Endpoint(Configuration(is_client=False, identity=KeyPair.generate()), accept=True)
    client = Endpoint(Configuration())
    conn = client.connect(SERVER, 0.0)
    now = _pump(server, client, 0.0)
    conn.close()
    now = _pump(server, client, now)
    server.handle_timer(now + 60)
    client.handle_timer(now + 60)
    from dquic.events import ConnectionTerminated, HandshakeFailed

    events = [ev for ep in (server, client) for _, ev in ep.take_events()]
    assert sum(isinstance(ev, ConnectionTerminated) for ev in events) == 2
    assert not any(isinstance(ev, HandshakeFailed) for ev in events)


def test_aio_server_reports_refused_clients():
    """dquic.aio.serve(on_handshake_failed=...): a refused client never reaches the handler; the
    callback gets its address and the key it presented (loopback, bounded in time)."""
    import asyncio

    from dquic import aio
    from dquic.errors import AuthenticationError, ErrorCode

    refused_key = KeyPair.generate()
    trusted_key = KeyPair.generate()

    async def main():
        failures = []
        handled = []

        async def handler(conn):
            handled.append(conn.peer_key)
            await conn.send_message(1, await conn.receive_message(1))
            await conn.flush(5)

        async def report(ev):  # a coroutine is run as a task
            failures.append(ev)

        server = await aio.serve("127.0.0.1", 0, handler, trusted_peers=[trusted_key.public],
                                 on_handshake_failed=report)
        async with server:
            port = server.address[1]
            for key in (refused_key, None):
                opts = {"identity": key} if key else {}
                try:
                    conn = await aio.connect("127.0.0.1", port, server_key=server.identity.public,
                                             handshake_timeout=5.0, **opts)
                    conn.abort()
                except AuthenticationError:
                    pass
                else:
                    raise AssertionError("the client was not refused")
            async with await aio.connect("127.0.0.1", port, server_key=server.identity.public,
                                         identity=trusted_key) as conn:
                await conn.send_message(1, b"hi")
                assert await conn.receive_message(1) == b"hi"
            for _ in range(100):
                if len(failures) == 2 and handled:
                    break
                await asyncio.sleep(0.02)
            assert server.handshake_failures == 2
        return failures, handled

    failures, handled = asyncio.run(asyncio.wait_for(main(), 30))
    assert handled == [trusted_key.public]
    assert [f.peer_key for f in failures] == [refused_key.public, None]
    assert all(f.error_code == ErrorCode.AUTHENTICATION_FAILED and not f.by_peer for f in failures)
    assert all(f.address[0] == "127.0.0.1" and f.address[1] > 0 for f in failures)


def test_sync_server_reports_refused_clients():
    """dquic.DQUIC(on_handshake_failed=...): the same for the socket-like API."""
    import time

    from dquic import DQUIC
    from dquic.errors import AuthenticationError

    refused_key = KeyPair.generate()
    failures = []
    with DQUIC(trusted_peers=[KeyPair.generate().public], on_handshake_failed=failures.append,
               linger=0) as server:
        server.bind(("127.0.0.1", 0))
        with DQUIC(identity=refused_key, server_key=server.identity.public, linger=0,
                   handshake_timeout=5.0) as client:
            try:
                client.send_to(server.local_address, {1: b"x"})
                client.flush(5)
            except AuthenticationError:
                pass
            deadline = time.monotonic() + 10
            while not failures and time.monotonic() < deadline:
                time.sleep(0.02)
        assert server.handshake_failures == 1
    assert len(failures) == 1 and failures[0].peer_key == refused_key.public
    assert failures[0].address[0] == "127.0.0.1"


def test_migration_and_stateless_resets_are_logged(caplog):
    """INFO: a peer that moved (once its new path is validated) and a stateless reset that ended
    a connection; DEBUG: a stateless reset sent for an unknown connection ID."""
    from dquic.testing import LinkConfig
    from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR, make_pair

    net, client, server, conn = make_pair(LinkConfig(delay=0.01), seed=2)
    net.run(until=lambda: conn.is_established, max_time=5)
    moved = ("198.51.100.7", 50001)
    with caplog.at_level(logging.DEBUG, logger="dquic.connection"):
        net.rebind(CLIENT_ADDR, moved)
        conn.send_message(1, bytes(200_000))  # data keeps coming from the new address
        net.run(until=lambda: server.count(1) == 1 and any(
            "peer moved" in m for m in _messages(caplog)), max_time=net.now + 5)
        server.endpoint.receive_datagram(bytes([0x41]) + bytes(range(60)), ("203.0.113.9", 9), net.now)
        token = conn.reset_token
        client.endpoint.receive_datagram(bytes([0x47]) + bytes(30) + token, SERVER_ADDR, net.now)
    messages = _messages(caplog)
    assert any(m.startswith("[198.51.100.7:50001 ") and "peer moved from ('198.51.100.7', 50000) to "
               "('198.51.100.7', 50001) (path validated)" in m for m in messages), messages
    assert any("stateless reset sent for unknown connection ID" in m for m in messages)
    assert any(m.endswith("stateless reset from the peer (it lost the connection's state)")
               for m in messages)
