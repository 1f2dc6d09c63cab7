"""Who drives the core: API calls that wait drive it themselves, the I/O thread takes over when
the application is away, and threads hand the role over without stalling one another."""
from __future__ import annotations

import os
import threading
import time

from dquic import sync

from _iohelpers import EchoThread


def _wait_until(predicate, limit: float, step: float = 0.01) -> float:
    """Poll ``predicate`` (without driving anything) until true; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < limit, "condition not reached in time"
        time.sleep(step)
    return time.monotonic() - start


def test_io_thread_finishes_a_lossy_transfer_while_the_application_sleeps(make_relay, make_dquic):
    server = make_dquic()
    relay = make_relay(server.local_address, loss=0.05, reorder=0.05)
    client = make_dquic()
    payload = os.urandom(2 << 20)
    client.send_to(relay.address, {3: payload})
    conn = client.connections[0]
    # the client application makes no call from here on: its I/O thread must retransmit and
    # take the acknowledgements; the server application reads meanwhile in another thread
    got = []

    def read():
        buf = bytearray()
        while len(buf) < len(payload):
            _, d = server.receive_from(1 << 20)
            buf += d[3]
        got.append(bytes(buf))

    t = threading.Thread(target=read)
    t.start()
    _wait_until(lambda: conn.send_buffered == 0, 20.0)
    t.join(20)
    assert got == [payload]
    assert relay.counters.dropped > 0  # the loss really happened and was repaired


def test_acknowledgement_goes_out_while_the_receiving_application_is_busy(make_dquic):
    server = make_dquic()
    client = make_dquic()
    client.send_to(server.local_address, {0: b"warm-up"})
    assert server.receive_from(100)[1] == {0: b"warm-up"}
    conn = client.connections[0]
    client.send_to(server.local_address, {0: b"x" * 5000})
    # the server application takes the message and then does something else for a while
    assert server.receive_from(10_000)[1] == {0: b"x" * 5000}
    took = _wait_until(lambda: conn.send_buffered == 0, 5.0, 0.002)
    assert took < 0.5  # acknowledged by the server's I/O thread, not at its next call


def test_one_datagram_each_way_per_request_and_reply(make_dquic):
    server = make_dquic()
    client = make_dquic()
    echo = EchoThread(server)
    try:
        dest = server.local_address
        client.send_to(dest, {1: b"hello"})
        client.receive_from(100)
        out0, in0 = client.datagrams_out, client.datagrams_in
        n = 300
        for i in range(n):
            client.send_to(dest, {1: b"%05d" % i})
            assert client.receive_from(100)[1] == {1: b"%05d" % i}
        # the acknowledgements ride with the requests and replies
        assert client.datagrams_out - out0 <= n * 1.1
        assert client.datagrams_in - in0 <= n * 1.1
    finally:
        assert echo.stop()
    assert not echo.errors


def test_a_new_connection_takes_few_datagrams(make_dquic):
    """Handshake and a first request/reply: the client sends its Initial and then one datagram
    (the acknowledgement of message 2, its first 1-RTT frames and the request, coalesced);
    the server sends message 2 with its first 1-RTT frames, then the reply with HANDSHAKE_DONE
    (PROTOCOL.md §6). One more each is allowed for a timer on a busy machine; before the
    coalescing the client sent 5."""
    server = make_dquic()
    client = make_dquic()
    echo = EchoThread(server)
    try:
        client.send_to(server.local_address, {1: b"hello"})
        assert client.receive_from(100)[1] == {1: b"hello"}
        assert client.datagrams_out <= 3, client.datagrams_out
        assert server.datagrams_out <= 3, server.datagrams_out
    finally:
        assert echo.stop()
    assert not echo.errors


def test_many_threads_share_one_endpoint(make_dquic):
    server = make_dquic()
    client = make_dquic()
    errors = []
    echo = EchoThread(server, shift=1000)
    dest = server.local_address
    client.send_to(dest, {0: b"open"})
    per_sender = 200
    senders = 4
    received = {1000 + s: [] for s in range(1, senders + 1)}
    lock = threading.Lock()

    def send(sid):
        try:
            for i in range(per_sender):
                client.send_to(dest, {sid: b"%d:%d" % (sid, i)})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def receive():
        try:
            while True:
                with lock:
                    if sum(len(v) for v in received.values()) >= senders * per_sender:
                        return
                try:
                    _, d = client.receive_from(1 << 16)
                except TimeoutError:
                    continue
                with lock:
                    for sid, v in d.items():
                        if sid in received:
                            received[sid].append(v)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    client.settimeout(0.5)
    threads = [threading.Thread(target=send, args=(s,)) for s in range(1, senders + 1)]
    threads += [threading.Thread(target=receive) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert echo.stop()
    assert not any(t.is_alive() for t in threads)
    assert not errors and not echo.errors
    for s in range(1, senders + 1):
        assert received[1000 + s] == [b"%d:%d" % (s, i) for i in range(per_sender)]


def test_handover_constant_is_short():
    # the I/O thread's takeover delay bounds how late an acknowledgement can be
    assert 0 < sync.IDLE_HANDOVER <= 0.01


def test_an_idle_endpoint_does_not_spin(make_dquic):
    import resource

    server = make_dquic(timeout=1.0)
    client = make_dquic()
    client.send_to(server.local_address, {0: b"hi"})
    assert server.receive_from(10)[1] == {0: b"hi"}
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        server.receive_from(10)  # nothing comes: a second of waiting in the driver's seat
    except TimeoutError:
        pass
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert cpu < 0.2  # a driver or I/O thread spinning instead of sleeping would use ~1 s


BACKLOG = 3000  # messages of the backlog tests


def _warm_pair(make_dquic):
    server = make_dquic()
    client = make_dquic()
    client.send_to(server.local_address, {0: b"warm-up"})
    assert server.receive_from(100)[1] == {0: b"warm-up"}
    return server, client


def _read_backlog(server, client):
    """The server application waits in receive_from when BACKLOG messages on stream 1 start
    to come (from a thread), and reads them one call each, checking each."""
    def send():
        time.sleep(0.1)  # the server application is waiting in receive_from by then
        for i in range(BACKLOG):
            client.send_to(server.local_address, {1: i.to_bytes(4, "big") * 16})

    sender = threading.Thread(target=send)
    sender.start()
    try:
        for i in range(BACKLOG):
            _, got = server.receive_from(1 << 16)
            assert got == {1: i.to_bytes(4, "big") * 16}
    finally:
        sender.join(10)


def test_reading_a_backlog_on_one_stream_never_waits(make_dquic, monkeypatch):
    # A receive_from loop that drives the endpoint itself (it was waiting when the messages
    # came) takes messages already in the core one call each (at most one per stream and
    # call) without pausing: a quiet socket between the calls is not a due timer that spins.
    # (Each call paused 1 ms once the socket had been quiet three times: such a loop read
    # about 900 messages a second.)
    import dquic._drive as drive_module

    server, client = _warm_pair(make_dquic)
    me = threading.get_ident()
    waits = []
    real_select = drive_module.select.select

    def select(r, w, x, timeout=None):
        if (threading.get_ident() == me and (timeout is None or timeout > 0)
                and any(p.conn.readable_streams() for p in server._ready)):
            waits.append(timeout)  # this thread waited while a message was ready for it
        return real_select(r, w, x, timeout)

    monkeypatch.setattr(drive_module.select, "select", select)
    _read_backlog(server, client)
    assert waits == []


def test_back_to_back_calls_do_not_wake_the_io_thread_at_each_end(make_dquic, monkeypatch):
    # Calls that find their data at once hold the driver's role for a moment each: the I/O
    # thread must not take them for one long call, sleep until "it" ends, and be woken by
    # every one of them (a futex wake and a GIL hand-over per call; it was woken at 24-70 %
    # of the calls of such a loop)
    import dquic._drive as drive_module

    server, client = _warm_pair(make_dquic)
    me = threading.get_ident()
    waited = [False]
    calls = [0, 0]  # calls that found their data at once, those whose end woke the I/O thread
    real_release = drive_module.Drive.release
    real_drive_or_wait = drive_module.Drive.drive_or_wait

    def drive_or_wait(self, *args):
        if threading.get_ident() == me:
            waited[0] = True
        return real_drive_or_wait(self, *args)

    def release(self):
        if threading.get_ident() == me:
            if not waited[0]:
                calls[0] += 1
                calls[1] += bool(self.io_asleep)
            waited[0] = False
        real_release(self)

    monkeypatch.setattr(drive_module.Drive, "release", release)
    monkeypatch.setattr(drive_module.Drive, "drive_or_wait", drive_or_wait)
    _read_backlog(server, client)
    assert calls[0] > BACKLOG // 10  # (most calls find a message ready)
    assert calls[1] <= calls[0] // 50
