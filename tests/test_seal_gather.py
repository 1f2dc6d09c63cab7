"""STREAM data is sealed straight from the send buffers into a datagram train (the packet's
buffer holds no copy of it: ``Buffer.c_push_ref``, ``finish_packet``), and copied in first on
every other path (one datagram at a time, the cryptography backend). Whichever path, cipher and
backend, the peer must open every packet and get every byte: a piece sealed from the wrong place
or at the wrong offset fails authentication or corrupts a message."""
from __future__ import annotations

import os

import pytest

from dquic.config import Configuration
from dquic.keys import KeyPair
from dquic.endpoint import Endpoint

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)


def _move(src, dst, addr, now, trains):
    n = 0
    if trains:
        for data, seg, _ in src.trains_to_send(now):
            for i in range(0, len(data), seg):
                dst.receive_datagram(bytes(data[i:i + seg]), addr, now)
                n += 1
    else:
        for data, _ in src.datagrams_to_send(now):
            dst.receive_datagram(data, addr, now)
            n += 1
    return n


@pytest.mark.parametrize("trains", [True, False], ids=["trains", "datagrams"])
@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
def test_messages_arrive_whole_whichever_way_they_are_sealed(backend, cipher, trains):
    jumbo = lambda addr: 9000  # noqa: E731 (large packets: several STREAM frames of 1 KB or more)
    server = Endpoint(Configuration(is_client=False, identity=KeyPair.generate(), pacing=False),
                      accept=True, route_mtu=jumbo)
    client = Endpoint(Configuration(cipher=cipher, pacing=False), route_mtu=jumbo)
    conn = client.connect(S_ADDR, now=0.0)
    # one large message, then many of 1-3 KB on different streams (several to a packet), and
    # small ones (copied, not referenced) between them
    sent = {1: os.urandom(300_000)}
    for sid in range(2, 60):
        sent[sid] = os.urandom(1000 + 37 * sid) if sid % 5 else os.urandom(sid)
    for sid, data in sent.items():
        conn.send_message(sid, data)
    got = {}
    now = 0.0
    for _ in range(3000):
        moved = _move(client, server, C_ADDR, now, trains) + _move(server, client, S_ADDR, now, trains)
        for peer in server.connections:
            for sid in peer.readable_streams():
                while (piece := peer.read_message(sid, 1 << 20)) is not None:
                    got[sid] = got.get(sid, b"") + piece[0]
        for ep in (client, server):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
        if len(got) == len(sent) and all(got[s] == sent[s] for s in sent):
            break
        now += 0.001 if moved else 0.01
    assert got.keys() == sent.keys()
    assert all(got[s] == sent[s] for s in sent)
    assert conn.stats.datagram_size > 1452  # (the large packets were used)
    assert conn.stats.packets_lost == 0
