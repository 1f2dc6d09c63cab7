"""Closing a connection (PROTOCOL.md §11): a graceful close acknowledges what was received,
is answered by the peer's CONNECTION_CLOSE, and is sent again while the closer waits for that
answer, so a lost close never leaves the peer's last data unacknowledged."""
from _sansio import C_ADDR, S_ADDR, plain_pair

from dquic.events import ConnectionTerminated


def _deliver(src, dst, addr, now):
    out = src.datagrams_to_send(now)
    for data, _ in out:
        dst.receive_datagram(data, addr, now)
    return out


def test_lost_close_is_sent_again_with_its_ack_and_answered():
    client, server, now = plain_pair()
    server.send_message(1, b"the last reply")
    assert _deliver(server, client, C_ADDR, now)
    assert client.read_message(1, 100)[0] == b"the last reply"
    # the client closes before its delayed acknowledgement went out; that datagram is lost
    client.close()
    lost = client.datagrams_to_send(now)
    assert len(lost) == 1
    assert client.close_sent and not client.close_settled  # not answered yet
    assert server.send_buffered > 0
    # the server probes for its unacknowledged reply; the closing client answers it
    t = server.get_timer()
    server.handle_timer(t)
    assert _deliver(server, client, C_ADDR, t)
    again = client.datagrams_to_send(t)
    assert len(again) == 1
    server.receive_datagram(again[0][0], C_ADDR, t)
    # the close carried the acknowledgement: the server's reply is delivered, and it knows
    assert server.send_buffered == 0
    ended = [e for e in server.take_events() if isinstance(e, ConnectionTerminated)]
    assert len(ended) == 1 and ended[0].by_peer and ended[0].error_code == 0
    # its one answer ends the client's wait; the client reports no second termination
    assert _deliver(server, client, S_ADDR, t)
    assert client.close_settled
    assert not server.datagrams_to_send(t + 1.0)  # draining: nothing more
    ended = [e for e in client.take_events() if isinstance(e, ConnectionTerminated)]
    assert len(ended) == 1 and not ended[0].by_peer


def test_closing_endpoint_answers_a_decreasing_share_of_packets():
    client, server, now = plain_pair()
    client.close()
    assert len(client.datagrams_to_send(now)) == 1  # lost
    answered = []
    for i in range(1, 17):
        server.send_message(1, b"x")  # the server has not heard of the close
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, S_ADDR, now)
        if client.datagrams_to_send(now):
            answered.append(i)
        now += 0.001
    assert answered == [1, 2, 4, 8, 16]


def test_close_with_an_error_does_not_wait_for_an_answer():
    client, server, now = plain_pair()
    client.close(error_code=3, reason="bad request")
    assert len(client.datagrams_to_send(now)) == 1
    assert client.close_settled


def test_both_closing_at_once_end_without_answers():
    client, server, now = plain_pair()
    client.close()
    server.close()
    c = client.datagrams_to_send(now)
    s = server.datagrams_to_send(now)
    for data, _ in c:
        server.receive_datagram(data, C_ADDR, now)
    for data, _ in s:
        client.receive_datagram(data, S_ADDR, now)
    assert client.close_settled and server.close_settled
    assert not client.datagrams_to_send(now) and not server.datagrams_to_send(now)
