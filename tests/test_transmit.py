"""One transmit implementation: ``datagrams_to_send`` is ``datagram_trains`` one datagram at a
time. Two identical connection pairs (same seeded randomness, no packet protection), one driven
through each API, put the same datagrams on the wire byte for byte, trains split at their
segment size; the endpoint's two forms agree the same way."""
from __future__ import annotations

import random

import pytest

from dquic.config import Configuration
from dquic.connection import CoreConnection
from dquic.endpoint import Endpoint
from dquic.testing.pairs import run_due_timers

C_ADDR = ("192.0.2.1", 4433)
S_ADDR = ("198.51.100.7", 4433)
STEP = 0.001


def _rand(seed):
    return random.Random(seed).randbytes


def _pair(seed):
    client = CoreConnection(Configuration(encryption=False), S_ADDR, random_bytes=_rand(seed))
    server = CoreConnection(Configuration(is_client=False, encryption=False), C_ADDR,
                            peer_cid=client.host_cid, original_dcid=client.original_dcid,
                            random_bytes=_rand(seed + 1))
    client.connect(0.0)
    return client, server


def _split(transmits):
    """Trains as the datagrams they hold, each with its address."""
    out = []
    for data, seg, addr in transmits:
        data = bytes(data)
        assert seg > 0 and 0 < len(data)
        out.extend((data[i:i + seg], addr) for i in range(0, len(data), seg))
    return out


def _run(trains, max_segments):
    """Drive one pair through a handshake and a transfer with a loss; every datagram in order."""
    client, server = _pair(7)
    wire = []
    now = 0.0
    for step in range(400):
        if step == 20:
            for sid in range(4):
                client.send_message(sid, bytes([sid]) * 30_000)
        for conn, peer, src in ((client, server, C_ADDR), (server, client, S_ADDR)):
            if trains:
                out = _split(conn.datagram_trains(now, 16 * 1500, max_segments))
            else:
                out = [(bytes(d), a) for d, a in conn.datagrams_to_send(now)]
            for i, (d, addr) in enumerate(out):
                wire.append(d)
                if step == 40 and i == 1:
                    continue  # one datagram lost: recovery runs on both sides alike
                peer.receive_datagram(d, src, now)
        run_due_timers(now, client, server)
        now += STEP
    assert sum(len(m) for m in _read(server)) == 4 * 30_000
    return wire


def _read(conn):
    out = []
    for sid in conn.readable_streams():
        while (piece := conn.read_message(sid, 1 << 20)) is not None:
            out.append(piece[0])
    return out


@pytest.mark.parametrize("max_segments", [1, 8, 64])
def test_datagrams_to_send_is_datagram_trains_one_datagram_at_a_time(max_segments):
    one_by_one = _run(False, 1)
    trains = _run(True, max_segments)
    assert len(one_by_one) > 100
    assert trains == one_by_one


def test_trains_carry_several_datagrams_of_one_size():
    client, server = _pair(3)
    now = 0.0
    for _ in range(20):
        for d, a in client.datagrams_to_send(now):
            server.receive_datagram(d, C_ADDR, now)
        for d, a in server.datagrams_to_send(now):
            client.receive_datagram(d, S_ADDR, now)
        now += STEP
    assert client.is_established and server.is_established
    client.send_message(1, b"x" * 20_000)
    transmits = client.datagram_trains(now, 65000, 64)
    assert all(addr == S_ADDR for _, _, addr in transmits)
    trains = [t for t in transmits if len(t[0]) > t[1]]
    assert trains  # several datagrams back to back
    for t in trains:
        datagrams = _split([t])
        assert all(len(d) == t[1] for d, _ in datagrams[:-1]) and len(datagrams[-1][0]) <= t[1]
        assert all(d[0] & 0xC0 == 0x40 for d, _ in datagrams)  # each a short-header packet


def test_endpoint_forms_agree():
    def drive(trains):
        server = Endpoint(Configuration(is_client=False, encryption=False), accept=True,
                          random_bytes=_rand(11), reset_key=b"r" * 32, token_key=b"t" * 32)
        client = Endpoint(Configuration(encryption=False), random_bytes=_rand(12),
                          reset_key=b"s" * 32, token_key=b"u" * 32)
        conn = client.connect(S_ADDR, now=0.0)
        wire = []
        now = 0.0
        for step in range(200):
            if step == 10:
                conn.send_message(5, b"y" * 50_000)
            for ep, peer, src in ((client, server, C_ADDR), (server, client, S_ADDR)):
                out = (_split(ep.trains_to_send(now)) if trains
                       else [(bytes(d), a) for d, a in ep.datagrams_to_send(now)])
                for d, _ in out:
                    wire.append(d)
                    peer.receive_datagram(d, src, now)
            run_due_timers(now, client, server)
            now += STEP
        return wire
    one_by_one = drive(False)
    assert len(one_by_one) > 40
    assert drive(True) == one_by_one
