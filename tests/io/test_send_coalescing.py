"""A burst of small ``send_to`` calls leaves packed into few datagrams (``DQUIC``'s ``nodelay``
option, off by default), and what a burst held back goes without another call from the
application; with ``nodelay=True`` each call's messages leave at once."""
from __future__ import annotations

import threading
import time

import pytest

from dquic.sync import CORK_GAP

pytestmark = pytest.mark.timeout(60)

COUNT = 200


def _warm(client, server):
    addr = server.local_address
    client.send_to(addr, {0: b"hello"})
    assert server.receive_from(100)[1] == {0: b"hello"}
    return addr


def _receive(server, count, deadline_s=20.0):
    got = {}
    deadline = time.monotonic() + deadline_s
    while sum(len(v) for v in got.values()) < count:
        assert time.monotonic() < deadline, f"{sum(len(v) for v in got.values())} of {count}"
        _, msgs = server.receive_from(1 << 20)
        for sid, data in msgs.items():
            got.setdefault(sid, []).append(data)
    return got


def _burst(client, server, ids):
    addr = _warm(client, server)
    before = client._drive.datagrams_out
    for sid in ids:
        assert client.send_to(addr, {sid: sid.to_bytes(8, "big") * 8}) == 64
    got = _receive(server, len(ids))
    assert got == {sid: [sid.to_bytes(8, "big") * 8] for sid in ids}
    return client._drive.datagrams_out - before


def test_options():
    from dquic.sync import DQUIC

    with DQUIC() as d, DQUIC(nodelay=True) as e:
        assert d._cork_gap == CORK_GAP and e._cork_gap == 0.0


def test_a_burst_on_new_ids_leaves_packed(make_dquic):
    server = make_dquic()
    client = make_dquic(bind=None)
    client._cork_gap = 60.0  # every call counts as part of the burst, however slow the machine
    packed = _burst(client, server, range(10, 10 + COUNT))
    # 64-byte messages with their frames: about fifteen to a 1200-byte datagram
    assert packed <= COUNT // 5, packed

    server2 = make_dquic()
    eager = make_dquic(bind=None, nodelay=True)
    each = _burst(eager, server2, range(10, 10 + COUNT))
    assert each >= 3 * packed, (each, packed)


def test_what_a_burst_held_back_goes_without_another_call(make_dquic):
    server = make_dquic()
    client = make_dquic(bind=None)
    client._cork_gap = 60.0
    addr = _warm(client, server)
    time.sleep(0.3)  # acknowledgements done: no timer of the client's is due soon
    start = time.monotonic()
    for sid in (5, 6, 7):
        client.send_to(addr, {sid: b"tail %d" % sid})
    # the client makes no call from here on: its I/O thread sends what waits
    assert _receive(server, 3) == {5: [b"tail 5"], 6: [b"tail 6"], 7: [b"tail 7"]}
    assert time.monotonic() - start < 0.25  # (2 ms at most but for scheduling; the next timer: seconds)


def test_a_burst_while_another_thread_waits_in_receive_from_goes_at_once(make_dquic):
    """A thread waiting in ``receive_from`` drives the socket (it sleeps in select): a burst
    from another thread must wake it to send, not wait for that call to end."""
    server = make_dquic()
    client = make_dquic(bind=None)
    client._cork_gap = 60.0
    addr = _warm(client, server)
    time.sleep(0.3)  # acknowledgements done: no timer of the client's is due soon
    client.settimeout(4.0)
    waiting = threading.Thread(target=_expect_timeout, args=(client,), daemon=True)
    waiting.start()
    time.sleep(0.2)  # it now holds the driver's role, in select
    start = time.monotonic()
    for sid in (5, 6, 7):
        client.send_to(addr, {sid: b"burst %d" % sid})
    assert _receive(server, 3) == {5: [b"burst 5"], 6: [b"burst 6"], 7: [b"burst 7"]}
    assert time.monotonic() - start < 0.25  # (2 ms at most but for scheduling; the next timer: seconds)
    waiting.join(10)


def _expect_timeout(dq):
    """``receive_from`` on ``dq`` with nothing to come: it times out."""
    try:
        dq.receive_from(100)
    except TimeoutError:
        return
    raise AssertionError("something arrived")
