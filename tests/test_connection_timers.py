"""The connection's timer table: every armed deadline by kind, and get_timer its minimum."""
from dquic.testing.pairs import exchange
from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.keys import KeyPair

SERVER = ("10.0.0.1", 4433)
CLIENT = ("10.0.0.2", 5000)


def _pair(**options):
    server = Endpoint(Configuration(is_client=False, identity=KeyPair.generate(), **options), accept=True)
    client = Endpoint(Configuration(**options))
    conn = client.connect(SERVER, 0.0)
    return server, client, conn


def _pump(server, client, now):
    exchange(server, client, CLIENT, SERVER, now, rounds=20, step=0.0)


def test_timer_table_names_each_deadline_and_get_timer_is_its_minimum():
    server, client, conn = _pair(keep_alive=5.0, idle_timeout=20.0)
    assert set(conn.timers) == {"handshake", "idle"}
    assert conn.timers["handshake"] == conn.config.handshake_timeout
    first = client.datagrams_to_send(0.0)
    assert first
    timers = conn.timers
    assert set(timers) == {"loss", "handshake", "idle"}  # the first flight is in flight
    assert conn.get_timer() == min(timers.values())
    for data, _ in first:
        server.receive_datagram(data, CLIENT, 0.01)
    _pump(server, client, 0.01)
    assert conn.is_established
    timers = conn.timers
    assert "handshake" not in timers
    assert "keep_alive" in timers and "idle" in timers
    assert conn.get_timer() == min(timers.values())


def test_expired_kinds_run_by_kind():
    server, client, conn = _pair(keep_alive=5.0, idle_timeout=20.0)
    _pump(server, client, 0.01)
    ka = conn.timers["keep_alive"]
    client.handle_timer(ka)
    sent = client.datagrams_to_send(ka)
    assert sent  # the keep-alive PING
    idle = conn.timers["idle"]
    conn.handle_timer(idle + 60.0)
    assert conn.is_terminated and conn.timers == {} and conn.get_timer() is None


def test_request_ack_makes_the_peer_acknowledge_without_its_ack_delay():
    # one message to a peer with nothing to send back: it acknowledges after its ACK delay
    # (25 ms), unless asked with a PING (two ack-eliciting packets are acknowledged at once)
    from _sansio import C_ADDR as c_addr, S_ADDR as s_addr, plain_pair

    for ask in (False, True):
        client, server, now = plain_pair(step=0.05)
        client.request_ack()  # nothing unacknowledged: nothing to ask
        assert client.datagrams_to_send(now) == []
        client.send_message(1, b"x")
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, c_addr, now)
        assert server.datagrams_to_send(now) == []  # the ACK waits for its delay
        if ask:
            client.request_ack()
            for d, _ in client.datagrams_to_send(now):
                server.receive_datagram(d, c_addr, now)
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, s_addr, now)
        assert client.send_buffered == (0 if ask else 2)  # the message and its length prefix
