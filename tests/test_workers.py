"""Workers on one port (dquic.workers): the kernel steers datagrams by the worker byte of the
connection ID, over real loopback sockets.

The many-connection run is ``DQUIC_WORKERS_CONNECTIONS=2000 python -m pytest -q
tests/test_workers.py -k many_connections`` (the default suite runs it with 240 connections).
"""
import asyncio
import os
import random
import selectors
import signal
import socket
import sys
import time

import pytest

from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.events import ConnectionTerminated, HandshakeCompleted, MessageReceived
from dquic.testing.udp import SocketEndpoint, drive
from dquic.workers import WorkerPool, attach_steering, steering_program

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_ATTACH_REUSEPORT_CBPF is Linux's")

MESSAGE = 4096


def _group(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
        s.setblocking(False)
        socks.append(s)
    return socks


def _drain(socks, timeout=1.0):
    """What each socket received: lists of datagrams, until ``timeout`` passes quietly."""
    got = [[] for _ in socks]
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    while sel.select(0.1 if any(got) else timeout):
        for key, _ in sel.select(0):
            try:
                while True:
                    got[key.data].append(socks[key.data].recv(2048))
            except BlockingIOError:
                pass
    sel.close()
    return got


def test_cbpf_sees_the_udp_payload_at_offset_0():
    socks = _group(3)
    try:
        attach_steering(socks[0], [(0x30, 0, 0, 0), (0x16, 0, 0, 0)])  # return payload[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for b in [0, 1, 2, 1, 0, 2, 2]:
                c.sendto(bytes([b]) + b"x" * 20, socks[0].getsockname())
            got = _drain(socks)
        assert [[d[0] for d in g] for g in got] == [[0, 0], [1, 1], [2, 2, 2]]
    finally:
        for s in socks:
            s.close()


def _short(cid):
    return bytes([0x40]) + cid + os.urandom(40)


def _long(ptype, dcid):
    return bytes([0xC0 | ptype << 4]) + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid \
        + b"\x08" + os.urandom(8) + os.urandom(40)


def test_steering_program_routes_by_worker_byte_and_spreads_initials():
    n, off = 4, 3  # a 2-byte fleet server ID, then the worker byte
    socks = _group(n)
    try:
        attach_steering(socks[0], steering_program(n, off))
        dst = socks[0].getsockname()
        rng = random.Random(1)
        sent = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(200):
                w = rng.randrange(n)
                cid = bytes([rng.getrandbits(8), 9, 9, w]) + os.urandom(4)
                kind = rng.choice(["short", "handshake", "initial"])
                pkt = _short(cid) if kind == "short" else _long(2 if kind == "handshake" else 0, cid)
                sent.append((kind, w, cid))
                # a fresh source port each time: the 4-tuple hash would scatter these
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c2:
                    c2.sendto(pkt, dst)
            got = _drain(socks)
        where = {}
        for i, g in enumerate(got):
            for d in g:
                cid = d[1:9] if not d[0] & 0x80 else d[6:14]
                where[cid] = i
        assert len(where) == 200
        for kind, w, cid in sent:
            assert where[cid] == w  # Initials: byte % 4 == byte here, all workers accept
        # worker 2 drains: Initials naming it go elsewhere, its other packets still reach it
        attach_steering(socks[1], steering_program(n, off, [True, True, False, True]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for kind in ("short", "handshake", "initial"):
                for k in range(10):
                    cid = bytes([k, 9, 9, 2]) + os.urandom(4)
                    pkt = _short(cid) if kind == "short" else _long(2 if kind == "handshake" else 0, cid)
                    c.sendto(pkt, dst)
            got = _drain(socks)
        assert [len(g) for g in got][2] == 20
        assert sum(len(g) for g in got) == 30
        assert all(d[0] & 0xB0 == 0x80 for i, g in enumerate(got) if i != 2 for d in g)
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
async def _echo(conn):
    while True:
        stream_id, data = await conn.receive_message()
        await conn.send_message(stream_id, data)


class _Client(SocketEndpoint):
    """A sans-IO client endpoint with its own UDP socket, holding several connections; it can
    rebind (a new socket, so a new source port) mid-transfer, as a NAT rebinding would."""

    def __init__(self, server, count, messages, sel):
        # keep_alive: a client whose address changed while it had nothing to send is heard
        # from again (its PING moves the server to the new address), as behind a real NAT
        super().__init__(Endpoint(Configuration(idle_timeout=20.0, handshake_timeout=20.0,
                                                keep_alive=0.2)), sel)
        self.server = server
        self.rebinds = 0
        self.rebound_at = 0.0
        now = time.monotonic()
        self.conns = {}
        for _ in range(count):
            conn = self.ep.connect(server, now)
            payload = [os.urandom(MESSAGE) for _ in range(messages)]
            self.conns[conn] = {"sent": payload, "got": bytearray(), "ended": None,
                                "queued": False}
        self.flush(now)

    def rebind(self):
        self.bind()
        self.rebinds += 1
        self.rebound_at = time.monotonic()

    def on_event(self, conn, ev):
        st = self.conns.get(conn)
        if st is None:
            return
        if isinstance(ev, HandshakeCompleted) and not st["queued"]:
            for m in st["sent"]:
                conn.send_message(0, m)
            st["queued"] = True
        elif isinstance(ev, MessageReceived):
            while (r := conn.read_message(ev.stream_id, 1 << 20)) is not None:
                st["got"] += r[0]
        elif isinstance(ev, ConnectionTerminated):
            st["ended"] = ev

    def done(self, conn):
        st = self.conns[conn]
        return st["ended"] is not None or len(st["got"]) == MESSAGE * len(st["sent"])


def _close_all(clients, sel):
    """Close every client connection (so the workers drain at once) and the client sockets."""
    now = time.monotonic()
    for c in clients:
        for conn, st in c.conns.items():
            if st["ended"] is None:
                conn.close()
        c.flush(now)
    drive(clients, sel, lambda: all(st["ended"] is not None for c in clients
                                     for st in c.conns.values()), 5)
    for c in clients:
        c.close()
    sel.close()


def _owner(conn, pool):
    """The worker that holds ``conn``: the worker byte of the connection ID it sends to."""
    return conn.peer_cid[pool.cid_offset]


def _sync_echo(server):
    while True:
        peer, messages = server.receive_from(1 << 20)
        server.send_to(peer, messages)


def _run_many(n_conns, n_clients, messages, max_time, sync=False, **options):
    with WorkerPool(("127.0.0.1", 0), 4, _sync_echo if sync else _echo, sync=sync,
                    drain_timeout=5.0, linger=1.0, **options) as pool:
        assert pool.steering and pool.workers == 4
        sel = selectors.DefaultSelector()
        per = n_conns // n_clients
        clients = []
        t0 = time.monotonic()
        for _ in range(n_clients):
            clients.append(_Client(pool.address, per, messages, sel))
        rng = random.Random(7)
        # every client rebinds once when a third of its echo is back, and again at two thirds
        marks = {c: [1 / 3 + rng.random() * 0.1, 2 / 3 + rng.random() * 0.1] for c in clients}

        def tick():
            for c in clients:
                m = marks[c]
                if not m:
                    continue
                total = sum(len(s["got"]) for s in c.conns.values())
                # (an address may change only once the handshake is confirmed: RFC 9000 §9)
                if total >= m[0] * per * messages * MESSAGE and all(
                        k.handshake_confirmed for k in c.conns) and \
                        time.monotonic() - c.rebound_at > 0.3:
                    m.pop(0)
                    c.rebind()

        every = lambda: all(c.done(conn) for c in clients for conn in c.conns)  # noqa: E731
        assert drive(clients, sel, every, max_time, tick), "transfers did not finish"
        elapsed = time.monotonic() - t0
        time.sleep(0.3)  # the workers publish their counters every 0.1 s
        stats = pool.stats()
        for c in clients:
            assert c.rebinds >= 1
            for conn, st in c.conns.items():
                assert st["ended"] is None, st["ended"]
                assert bytes(st["got"]) == b"".join(st["sent"])
        owners = [_owner(conn, pool) for c in clients for conn in c.conns]
        peer_cids = [conn.peer_cid for c in clients for conn in c.conns]
        rebinds = sum(c.rebinds for c in clients)
        _close_all(clients, sel)
    assert sum(s["misrouted"] for s in stats) == 0, stats
    assert sum(s["accepted"] for s in stats) == per * n_clients
    assert sorted(set(owners)) == [0, 1, 2, 3]
    assert [s["accepted"] for s in stats] == [owners.count(i) for i in range(4)]
    return elapsed, stats, rebinds, peer_cids


def test_many_connections_rebinding_across_four_workers():
    n = int(os.environ.get("DQUIC_WORKERS_CONNECTIONS", "240"))
    n_clients = max(1, n // 8)
    elapsed, stats, rebinds, _ = _run_many(n, n_clients, messages=4, max_time=60 + n * 0.1)
    print("\n%d connections on %d client sockets (%d rebindings), 4 workers: %.1f s; "
          "datagrams per worker %s, accepted %s, misrouted %d"
          % (n, n_clients, rebinds, elapsed, [s["datagrams"] for s in stats],
             [s["accepted"] for s in stats], sum(s["misrouted"] for s in stats)))


def test_sync_api_workers_with_rebinding():
    """The same over ``DQUIC`` (sync=True): each worker's handler runs a receive_from loop.
    (DQUIC knows a connection by its peer's address: one connection per client socket.)"""
    elapsed, stats, rebinds, _ = _run_many(32, 32, messages=4, max_time=60, sync=True)
    assert rebinds >= 32


def test_workers_behind_a_fleet_server_id():
    """With a fleet server ID, a QUIC-LB balancer configured with its length reads it from
    every connection ID; the worker byte follows it (the balancer's nonce)."""
    from dquic.quic_lb import LoadBalancerConfig

    _, _, _, cids = _run_many(40, 5, messages=2, max_time=60, server_id=b"\x00\x03")
    balancer = LoadBalancerConfig(0, 2, 5)  # 8-byte IDs: first octet, 2-byte server ID, nonce
    assert {balancer.server_id_of(c) for c in cids} == {b"\x00\x03"}
    assert {c[3] for c in cids} == {0, 1, 2, 3}


def test_fallback_to_one_worker_where_the_kernel_refuses(monkeypatch):
    import dquic.workers as workers

    def refuse(sock, program):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(workers, "attach_steering", refuse)
    with pytest.warns(RuntimeWarning, match="serving with one worker"):
        pool = WorkerPool(("127.0.0.1", 0), 4, _echo, drain_timeout=2.0, linger=0.5).start()
    try:
        assert pool.workers == 1 and not pool.steering and len(pool.pids()) == 1
        sel = selectors.DefaultSelector()
        c = _Client(pool.address, 4, 1, sel)
        assert drive([c], sel, lambda: all(c.done(k) for k in c.conns), 30)
        assert all(st["ended"] is None for st in c.conns.values())
        _close_all([c], sel)
    finally:
        pool.close()


def test_sigkill_loses_only_that_workers_connections():
    with WorkerPool(("127.0.0.1", 0), 4, _echo, drain_timeout=5.0, linger=1.0,
                    restart_delay=0.1) as pool:
        sel = selectors.DefaultSelector()
        clients = [_Client(pool.address, 8, 1, sel) for _ in range(5)]
        conns = [(c, conn) for c in clients for conn in c.conns]
        assert drive(clients, sel, lambda: all(c.done(k) for c, k in conns), 30)
        victim = _owner(conns[0][1], pool)
        old_pid = pool.pids()[victim]
        os.kill(old_pid, signal.SIGKILL)
        # every connection sends once more; the victim's are answered by its restarted
        # process with a stateless reset, the others are echoed
        for c, conn in conns:
            st = c.conns[conn]
            st["sent"].append(os.urandom(MESSAGE))
            conn.send_message(0, st["sent"][-1])
            c.rebind() if conn is next(iter(c.conns)) else None
        assert drive(clients, sel, lambda: all(c.done(k) for c, k in conns), 30)
        lost = [conn for c, conn in conns if _owner(conn, pool) == victim]
        kept = [(c, conn) for c, conn in conns if _owner(conn, pool) != victim]
        assert lost and kept
        for c, conn in conns:
            st = c.conns[conn]
            if conn in lost:
                assert st["ended"] is not None and st["ended"].reason == "stateless reset"
            else:
                assert st["ended"] is None and bytes(st["got"]) == b"".join(st["sent"])
        assert pool.restarts == 1 and pool.pids()[victim] not in (None, old_pid)
        time.sleep(0.3)
        stats = pool.stats()
        assert stats[victim]["resets_sent"] >= 1
        assert sum(s["misrouted"] for s in stats) == 0
        # the restarted worker accepts new connections again
        fresh = _Client(pool.address, 12, 1, sel)
        assert drive([fresh], sel, lambda: all(fresh.done(k) for k in fresh.conns), 30)
        assert all(st["ended"] is None for st in fresh.conns.values())
        _close_all(clients + [fresh], sel)


def test_sigterm_drains_a_worker():
    with WorkerPool(("127.0.0.1", 0), 4, _echo, drain_timeout=10.0, linger=1.0) as pool:
        sel = selectors.DefaultSelector()
        first = _Client(pool.address, 16, 1, sel)
        assert drive([first], sel, lambda: all(first.done(k) for k in first.conns), 30)
        victim = _owner(next(iter(first.conns)), pool)
        pool.stop_worker(victim)
        deadline = time.monotonic() + 5
        while pool.stats()[victim]["state"] < 3 and time.monotonic() < deadline:  # DRAINING
            time.sleep(0.02)
        # new connections avoid the draining worker; its open connections still work
        fresh = _Client(pool.address, 24, 1, sel)
        for conn in first.conns:
            st = first.conns[conn]
            st["sent"].append(os.urandom(MESSAGE))
            conn.send_message(0, st["sent"][-1])
        both = [first, fresh]
        assert drive(both, sel, lambda: all(c.done(k) for c in both for k in c.conns), 30)
        assert all(_owner(k, pool) != victim for k in fresh.conns)
        for c in both:
            for st in c.conns.values():
                assert st["ended"] is None and bytes(st["got"]) == b"".join(st["sent"])
        # once its clients leave, the drained worker exits 0 and is not restarted
        for conn in first.conns:
            if _owner(conn, pool) == victim:
                conn.close()
        assert drive(both, sel, lambda: pool.wait_worker(victim, 0) is not None, 15)
        assert pool.wait_worker(victim, 0) == 0
        time.sleep(0.3)
        assert pool.pids()[victim] is None and pool.restarts == 0
        _close_all(both, sel)


def test_cli_serve_with_workers(tmp_path):
    """``dquic serve --workers 2`` receives files sent with ``dquic send``; SIGTERM stops it."""
    import re
    import subprocess

    out_dir = tmp_path / "in"
    files = []
    for i in range(4):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(os.urandom(50_000 + i))
        files.append(f)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "dquic", "serve", "--workers", "2", "--host", "127.0.0.1",
         "--port", "0", "--out", str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = server.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) with 2 workers \(steered by connection "
                      r"ID\), server key (\S+)", line)
        assert m, line
        port, key = m.group(1), m.group(2)
        for f in files:  # one connection per file: they spread over the workers
            r = subprocess.run([sys.executable, "-m", "dquic", "send", f"127.0.0.1:{port}",
                                str(f), "--server-key", key, "--no-progress"],
                               capture_output=True, text=True, timeout=60, env=env)
            assert r.returncode == 0, r.stdout + r.stderr
        for f in files:
            assert (out_dir / f.name).read_bytes() == f.read_bytes()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rest, _ = server.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            rest, _ = server.communicate()
    assert server.returncode == 0, rest
    assert "stopped" in rest
