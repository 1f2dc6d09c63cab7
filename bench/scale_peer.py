"""The processes of the many-connections benchmark (bench/test_bench_scale.py).

``python bench/scale_peer.py server KIND [--max-connections M] [--idle-timeout S]`` runs one dquic
server on 127.0.0.1:0 with default options (encryption on, no keep-alive) apart from
``max_connections`` and ``idle_timeout``, prints ``PORT <n>`` and echoes every message back to
its sender on the same stream. ``KIND`` is ``sync`` (the blocking ``dquic.DQUIC``: the
application loop is ``receive_from`` -> ``send_to``) or ``aio`` (``dquic.aio.serve`` with a
handler per connection: ``receive_message`` -> ``send_message``). Its stdin is a control
channel, one command a line, one answer line each on stdout:

* ``stats``: ``STATS {"pid": ..., "rss_kib": ..., "connections": ...}`` (``connections`` lists
  the live connections, so ask for it after memory was measured);
* end of input: the process exits (so it never outlives the benchmark).

``python bench/scale_peer.py holder PORT [--connections C] [--net K] [--idle-timeout S]
[--handshake-timeout S]`` holds
up to C idle client connections to 127.0.0.1:PORT. It is light on purpose: each connection is a
sans-IO ``dquic.endpoint.Endpoint`` with its own UDP socket (the sync server keeps one connection
per peer address, so each needs its own source address: sockets are bound to 127.K.<j>.1, 20,000
per address), all driven by one ``selectors`` loop with a heap of timers, so per-event cost on
this side does not grow with the number of connections. It raises its RLIMIT_NOFILE for C
sockets as far as it may (the hard limit needs CAP_SYS_RESOURCE) and prints ``READY <n>``, n the
connections it can hold; more connections take more holder processes, each with its own K.
Commands on stdin, one ``RESULT {json}`` line on stdout each:

* ``open COUNT CONCURRENCY TIMEOUT``: open COUNT more connections, at most CONCURRENCY at once in
  progress; each completes its handshake and exchanges one 64-byte request / echo, then stays
  idle. Starts none after TIMEOUT seconds (those in progress then finish or fail within their
  handshake timeout). Reports ``opened``, ``failed`` (with reasons), ``seconds``,
  and the handshake rates over the first and last tenth of the connections (completions per
  second, a tenth of them divided by the time from the previous tenth's last completion, or
  from the start, to that tenth's last completion) and every handshake's completion time
  (``hs_times``, seconds after ``t0``, the command's start on the monotonic clock, which all
  processes share);
* ``check CONCURRENCY TIMEOUT``: one more 64-byte request / echo on every open connection (at
  most CONCURRENCY outstanding); reports ``answered``, ``failed``, ``unanswered``, ``seconds``;
* ``quit`` (or end of input): exit without closing (the server forgets the connections when
  it is stopped).
"""
from __future__ import annotations

import heapq
import json
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REQUEST = b"q" * 64
PER_SOURCE_ADDRESS = 20_000  # below the 28,000 ephemeral ports of a default Linux range


def rss_kib(pid: int = 0) -> int:
    """VmRSS of ``pid`` (this process when 0) in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def _options(argv, **defaults):
    """``--name value`` pairs after the positional arguments (ints or floats)."""
    out = dict(defaults)
    args = []
    it = iter(argv)
    for a in it:
        if a.startswith("--"):
            key = a[2:].replace("-", "_")
            if key not in defaults:
                raise SystemExit(f"unknown option {a}")
            out[key] = type(defaults[key])(next(it))
        else:
            args.append(a)
    return args, out


# ----------------------------------------------------------------------------------------------
# server
def _stdin_lines():
    """Lines of stdin as they come (unbuffered reads: safe to mix with select)."""
    buf = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode().strip()


def serve_sync(max_connections: int, idle_timeout: float) -> None:
    import threading

    from dquic.errors import ConnectionClosed, ConnectionTimeout
    from dquic.sync import DQUIC

    d = DQUIC(max_connections=max_connections, idle_timeout=idle_timeout)
    d.bind(("127.0.0.1", 0))
    print("PORT", d.local_address[1], flush=True)

    def control():
        for line in _stdin_lines():
            if line == "stats":
                stats = {"pid": os.getpid(), "rss_kib": rss_kib(), "connections": len(d.connections)}
                print("STATS", json.dumps(stats), flush=True)
        os._exit(0)

    threading.Thread(target=control, daemon=True).start()
    while True:
        peer, data = d.receive_from(1 << 16)
        try:
            d.send_to(peer, data)
        except (ConnectionClosed, ConnectionTimeout):
            pass  # that client went away: nothing to echo to


def serve_aio(max_connections: int, idle_timeout: float) -> None:
    import asyncio

    import dquic.aio

    async def echo(conn):
        while True:
            sid, data = await conn.receive_message()
            await conn.send_message(sid, data)

    async def main():
        server = await dquic.aio.serve("127.0.0.1", 0, echo, max_connections=max_connections,
                                       idle_timeout=idle_timeout)
        print("PORT", server.address[1], flush=True)
        loop = asyncio.get_running_loop()
        buf = bytearray()

        def on_stdin():
            chunk = os.read(0, 4096)
            if not chunk:
                os._exit(0)
            buf.extend(chunk)
            while b"\n" in buf:
                i = buf.index(b"\n")
                line = bytes(buf[:i]).decode().strip()
                del buf[:i + 1]
                if line == "stats":
                    stats = {"pid": os.getpid(), "rss_kib": rss_kib(),
                             "connections": len(server.connections)}
                    print("STATS", json.dumps(stats), flush=True)

        loop.add_reader(0, on_stdin)
        await server.serve_forever()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# holder
CONNECTING, WAITING, OPEN, FAILED = range(4)


class _Slot:
    """One held connection: its socket, its sans-IO endpoint and where it stands."""

    __slots__ = ("index", "sock", "ep", "conn", "state", "deadline", "checking")

    def __init__(self, index, sock, ep):
        self.index = index
        self.sock = sock
        self.ep = ep
        self.conn = None
        self.state = CONNECTING
        self.deadline = None
        self.checking = False


class Holder:
    def __init__(self, port: int, idle_timeout: float, handshake_timeout: float, net: int = 1,
                 capacity: int = 0) -> None:
        from dquic.config import Configuration
        from dquic.endpoint import Endpoint
        from dquic.events import ConnectionTerminated, HandshakeCompleted, MessageReceived

        self._Endpoint = Endpoint
        self._events = (HandshakeCompleted, MessageReceived, ConnectionTerminated)
        self.server = ("127.0.0.1", port)
        self.net = net
        self.capacity = capacity
        self.config = Configuration(is_client=True, idle_timeout=idle_timeout,
                                    handshake_timeout=handshake_timeout)
        self.sel = selectors.DefaultSelector()
        self.sel.register(0, selectors.EVENT_READ, None)  # the control channel
        self.slots = []
        self.heap = []  # (deadline, slot index); stale entries are skipped
        self.in_flight = 0  # connections opening, or requests of a check outstanding
        self.hs_times = []  # handshake completion times (monotonic) of the current open
        self.failures = {}
        self.send_errors = 0
        self.answered = 0
        self.stdin_buf = b""

    # driving ---------------------------------------------------------------------------------
    def _service(self, slot: _Slot, now: float) -> None:
        """After input or a timer: handle events, send, re-arm the slot's timer."""
        HandshakeCompleted, MessageReceived, ConnectionTerminated = self._events
        ep = slot.ep
        sock = slot.sock
        for _ in range(4):
            for conn, ev in ep.take_events():
                t = type(ev)
                if t is HandshakeCompleted:
                    self.hs_times.append(now)
                    conn.send_message(0, REQUEST)
                    slot.state = WAITING
                elif t is MessageReceived:
                    got = b""
                    while True:
                        piece = conn.read_message(ev.stream_id, 1 << 16)
                        if piece is None:
                            break
                        got += piece[0]
                    if got == REQUEST and slot.state == WAITING:
                        slot.state = OPEN
                        self.in_flight -= 1
                        if slot.checking:
                            slot.checking = False
                            self.answered += 1
                elif t is ConnectionTerminated:
                    if slot.state in (CONNECTING, WAITING):
                        self.in_flight -= 1
                    if slot.state != FAILED:
                        reason = ev.reason or f"code {ev.error_code}"
                        self.failures[reason] = self.failures.get(reason, 0) + 1
                    slot.state = FAILED
            out = ep.datagrams_to_send(now)
            if not out:
                break
            for data, addr in out:
                try:
                    sock.sendto(data, addr)
                except OSError:
                    self.send_errors += 1  # loss recovery resends
        t = ep.get_timer()
        if t is not None and t <= now:
            t = now + 0.001  # a due timer that changed nothing: look again shortly, no spin
        if t != slot.deadline:
            slot.deadline = t
            if t is not None:
                heapq.heappush(self.heap, (t, slot.index))

    def poll(self, max_wait) -> bool:
        """One loop turn: wait for input or the next timer (at most ``max_wait`` s; None: no
        limit), handle it. True if the control channel has input."""
        heap = self.heap
        timeout = max_wait
        if heap:
            until = max(0.0, heap[0][0] - time.monotonic())
            timeout = until if timeout is None else min(timeout, until)
        control = False
        ready = self.sel.select(timeout)
        now = time.monotonic()
        for key, _ in ready:
            slot = key.data
            if slot is None:
                control = True
                continue
            sock = slot.sock
            ep = slot.ep
            for _ in range(16):
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # an ICMP error: the handshake timer decides
                ep.receive_datagram(data, addr, now)
            self._service(slot, now)
        while heap and heap[0][0] <= now:
            t, i = heapq.heappop(heap)
            slot = self.slots[i]
            if slot.deadline != t:
                continue  # re-armed since
            slot.deadline = None
            slot.ep.handle_timer(now)
            self._service(slot, now)
        return control

    def _start_one(self) -> None:
        i = len(self.slots)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((f"127.{self.net}.{i // PER_SOURCE_ADDRESS}.1", 0))
        slot = _Slot(i, sock, self._Endpoint(self.config))
        self.slots.append(slot)
        self.sel.register(sock.fileno(), selectors.EVENT_READ, slot)
        now = time.monotonic()
        slot.conn = slot.ep.connect(self.server, now)
        self.in_flight += 1
        self._service(slot, now)

    # commands ------------------------------------------------------------------------------
    def open(self, count: int, concurrency: int, timeout: float) -> dict:
        first = len(self.slots)
        if self.capacity:
            count = min(count, self.capacity - first)
        target = first + count
        self.hs_times = []
        self.failures = {}
        t0 = time.monotonic()
        deadline = t0 + timeout
        # every connection started is in flight until it is open or failed; none is started
        # after the deadline, and those in progress then get their handshake timeout to finish
        # (so nothing is left running in the background)
        hard_stop = deadline + self.config.handshake_timeout + 5.0
        while not (len(self.slots) == target and self.in_flight == 0):
            now = time.monotonic()
            if now >= deadline:
                if self.in_flight <= 0 or now >= hard_stop:
                    break
            else:
                while self.in_flight < concurrency and len(self.slots) < target:
                    self._start_one()
            self.poll(0.05)
        seconds = time.monotonic() - t0
        mine = self.slots[first:]
        times = sorted(self.hs_times)
        out = {"opened": sum(1 for s in mine if s.state == OPEN),
               "failed": sum(1 for s in mine if s.state == FAILED),
               "started": len(mine), "seconds": seconds, "failures": self.failures,
               "send_errors": self.send_errors, "holder_rss_kib": rss_kib()}
        out.update(tenth_rates(t0, times))
        out["t0"] = t0
        out["hs_times"] = [round(t - t0, 6) for t in times]
        return out

    def check(self, concurrency: int, timeout: float) -> dict:
        todo = [s for s in self.slots if s.state == OPEN]
        self.answered = 0
        self.failures = {}
        failed_before = sum(1 for s in self.slots if s.state == FAILED)
        t0 = time.monotonic()
        deadline = t0 + timeout
        i = 0
        while (i < len(todo) or self.in_flight) and time.monotonic() < deadline:
            while self.in_flight < concurrency and i < len(todo):
                slot = todo[i]
                i += 1
                if slot.state != OPEN:
                    continue
                slot.conn.send_message(0, REQUEST)
                slot.state = WAITING
                slot.checking = True
                self.in_flight += 1
                self._service(slot, time.monotonic())
            self.poll(0.05)
        failed = sum(1 for s in self.slots if s.state == FAILED) - failed_before
        return {"connections": len(todo), "answered": self.answered, "failed": failed,
                "unanswered": len(todo) - self.answered - failed,
                "seconds": time.monotonic() - t0, "failures": self.failures}

    def run(self) -> None:
        print("READY", self.capacity, flush=True)
        while True:
            if not self.poll(None):
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                return
            self.stdin_buf += chunk
            while b"\n" in self.stdin_buf:
                line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "open":
                    result = self.open(int(words[1]), int(words[2]), float(words[3]))
                elif words[0] == "check":
                    result = self.check(int(words[1]), float(words[2]))
                elif words[0] == "quit":
                    return
                else:
                    result = {"error": f"unknown command {words[0]!r}"}
                print("RESULT", json.dumps(result), flush=True)


def tenth_rates(t0: float, times: list) -> dict:
    """Completion rates over the first and the last tenth of sorted completion ``times`` (the
    first tenth is timed from ``t0``, the start of the ramp)."""
    n = len(times)
    if n == 0:
        return {"first_tenth_hs_s": None, "last_tenth_hs_s": None}
    k = max(1, n // 10)
    first = k / max(times[k - 1] - t0, 1e-9)
    start_last = times[n - k - 1] if n > k else t0
    last = k / max(times[n - 1] - start_last, 1e-9)
    return {"first_tenth_hs_s": first, "last_tenth_hs_s": last}


def raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE towards ``want`` (the hard limit too where allowed: that takes
    CAP_SYS_RESOURCE, which a root process in a container may lack); returns the soft limit
    obtained."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard  # as far as the hard limit goes
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


#: File descriptors a holder keeps for itself (stdio, the selector, imports).
FD_RESERVE = 64


def main(argv) -> None:
    role = argv[0] if argv else ""
    if role == "server":
        args, opts = _options(argv[1:], max_connections=4096, idle_timeout=30.0)
        kind = args[0] if args else "sync"
        if kind == "sync":
            serve_sync(opts["max_connections"], opts["idle_timeout"])
        elif kind == "aio":
            serve_aio(opts["max_connections"], opts["idle_timeout"])
        else:
            raise SystemExit(f"unknown server kind {kind}")
    elif role == "holder":
        args, opts = _options(argv[1:], idle_timeout=3600.0, handshake_timeout=10.0,
                              connections=1000, net=1)
        limit = raise_fd_limit(opts["connections"] + FD_RESERVE)
        capacity = min(opts["connections"], limit - FD_RESERVE)
        Holder(int(args[0]), opts["idle_timeout"], opts["handshake_timeout"], opts["net"],
               capacity).run()
    else:
        raise SystemExit("usage: scale_peer.py server sync|aio [...] | holder PORT [...]")


if __name__ == "__main__":
    main(sys.argv[1:])
