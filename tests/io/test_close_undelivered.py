"""close() and flush() tell the application what was not delivered: data a peer had not
acknowledged when linger ran out is reported (UndeliveredData, with bytes per peer), never
dropped silently."""
from __future__ import annotations

import logging
import threading

import pytest

from dquic import UndeliveredData

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


def _stalled_pair(make_dquic, **client_options):
    """A server that never reads (so its flow-control window stops the sender after about
    1 MiB) and a client that queued 8 MiB to it."""
    server = make_dquic()
    client = make_dquic(**client_options)
    addr = server.local_address
    assert client.send_to(addr, {i: bytes([i]) * MIB for i in range(8)}) == 8 * MIB
    return server, client, addr


@pytest.mark.parametrize("linger", [0.0, 0.3])
def test_close_raises_with_what_the_peer_did_not_acknowledge(make_dquic, linger):
    server, client, addr = _stalled_pair(make_dquic, linger=linger)
    with pytest.raises(UndeliveredData) as info:
        client.close()
    undelivered = info.value.undelivered
    assert list(undelivered) == [addr]
    assert 5 * MIB <= undelivered[addr] <= 8 * MIB + 8 * 8  # stream bytes: messages + length prefixes
    assert info.value.errno is not None
    # the endpoint is closed all the same
    with pytest.raises(OSError):
        client.send_to(addr, {1: b"late"})


def test_close_abandon_logs_instead_of_raising(make_dquic, caplog):
    server, client, addr = _stalled_pair(make_dquic, linger=0.0)
    with caplog.at_level(logging.WARNING, logger="dquic"):
        assert client.close(abandon=True) is None
    assert any("unacknowledged" in r.getMessage() for r in caplog.records)


def test_with_block_raises_on_undelivered_data(make_dquic):
    server = make_dquic()
    from dquic import DQUIC

    with pytest.raises(UndeliveredData):
        with DQUIC(linger=0.0) as client:
            client.send_to(server.local_address, {1: b"x" * (4 * MIB)})


def test_close_after_everything_was_acknowledged_returns_quietly(make_dquic):
    server = make_dquic()
    client = make_dquic(linger=10.0)
    addr = server.local_address
    client.send_to(addr, {1: b"a" * MIB, 2: b"b" * 1000})
    got = {}
    while len(got) < 2 or len(got[1]) < MIB:
        _, d = server.receive_from(1 << 21)
        for sid, v in d.items():
            got[sid] = got.get(sid, b"") + v
    assert client.close() is None


def test_flush_times_out_with_an_account_then_succeeds_once_the_peer_reads(make_dquic):
    server, client, addr = _stalled_pair(make_dquic, linger=0.0)
    with pytest.raises(UndeliveredData) as info:
        client.flush(0.3)
    assert info.value.undelivered[addr] > 0
    received = []

    def reader():
        total = 0
        while total < 8 * MIB:
            _, d = server.receive_from(1 << 21)
            total += sum(len(v) for v in d.values())
        received.append(total)

    t = threading.Thread(target=reader)
    t.start()
    try:
        client.flush(20.0)  # everything acknowledged: returns
    finally:
        t.join(30)
    assert received == [8 * MIB]
    assert client.close() is None
