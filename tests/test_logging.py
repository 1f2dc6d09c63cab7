"""The library logs connection life cycles on the ``dquic.connection`` logger (INFO: established,
how it ended, migrations; DEBUG: accepted, Retry and reset sent), each record prefixed with the
peer and connection ID, and nothing per packet."""
from __future__ import annotations

import logging

from _sansio import exchange
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
    assert any("failed (code" in m or "closed by the peer (code" in m for m in messages)
    assert any("idle timeout" in m for m in messages)
