"""Helpers shared by the sans-IO tests (importable from tests/ as a plain module)."""
from __future__ import annotations

from dquic.testing.pairs import core_pair, exchange


def injectable_pair(**server_kw):
    """A simulated client and server without packet protection (``make_pair`` over a 5 ms
    link, the server's configuration extended by ``server_kw``) that exchanged one message
    and then settled, ready for ``inject``: ``(net, client, server, conn)``."""
    from dquic.config import Configuration
    from dquic.testing import LinkConfig
    from dquic.testing.apps import make_pair

    scfg = Configuration(is_client=False, encryption=False, **server_kw)
    net, client, server, conn = make_pair(LinkConfig(delay=0.005), encryption=False,
                                          server_config=scfg, seed=1)
    conn.send_message(0, b"hello")
    net.run(until=lambda: server.count(0) == 1, max_time=5)
    # let what the client still has in flight (acknowledgements) arrive: an injected packet
    # must follow the client's last real one, or the server acknowledges it out of order at
    # once and the client, which never sent that packet number, closes first
    net.run_for(0.05)
    return net, client, server, conn


def inject(net, conn, server, frames, client_addr, pn_bump: int = 0, now: float = 0.0) -> int:
    """Send a short-header packet with ``frames`` to ``server`` as if the client connection
    ``conn`` had sent it (no packet protection); returns its packet number. ``net`` None: the
    two are connected by hand (``core_pair``), and the packet arrives at ``now``."""
    from dquic import _codec as codec
    from dquic import _frames as framing

    sp = conn._spaces[1]
    pn = sp.next_pn + pn_bump
    sp.next_pn = pn + 1
    buf = codec.Buffer(capacity=4096)
    trunc, pn_len = codec.encode_packet_number(pn, sp.largest_acked)
    codec.push_short_header(buf, conn.peer_cid, trunc, pn_len)
    for f in frames:
        framing.push_frame(buf, f)
    while buf.tell() < 24:
        buf.push_uint8(0)
    if net is None:
        server.receive_datagram(buf.data, client_addr, now)
        return pn
    server.receive_datagram(buf.data, client_addr, net.now)
    net.poll()
    return pn


C_ADDR = ("192.0.2.1", 1000)
S_ADDR = ("198.51.100.1", 2000)


def plain_pair(step: float = 0.01):
    """Two ``CoreConnection``s without packet protection, connected by ``exchange`` (client at
    ``C_ADDR``, server at ``S_ADDR``): ``(client, server, now)``."""
    from dquic.config import Configuration

    client, server = core_pair(Configuration(encryption=False),
                               Configuration(is_client=False, encryption=False), C_ADDR, S_ADDR)
    now = exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=50, step=step)
    return client, server, now


def rebind_mid_transfer(net, receiver, stream_id, data, progress, new_addr):
    """A NAT rebinding in the middle of a transfer between a pair on a 10 ms, 50 Mbit/s link:
    once ``receiver`` got ``progress`` bytes the client moves to ``new_addr`` (a link like the
    old one), then the run goes on until the message ``data`` arrived whole on ``stream_id``."""
    from dquic.testing import LinkConfig
    from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR

    net.run(until=lambda: receiver.bytes_received > progress, max_time=30)
    net.rebind(CLIENT_ADDR, new_addr)
    net.link(new_addr, SERVER_ADDR, LinkConfig(delay=0.01, bandwidth=50e6))
    # when the server sends, the client must send something for the server to learn the new
    # address: its ACKs do
    net.run(until=lambda: receiver.count(stream_id) == 1, max_time=120)
    assert receiver.stream_messages(stream_id) == [data]
