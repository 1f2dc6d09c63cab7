"""An in-process lossy UDP relay on loopback, for tests over real sockets.

``LossyRelay(server_addr, loss=..., reorder=..., duplicate=..., delay=...)`` listens on a
client-facing UDP socket (``relay.address``); every datagram a client sends there is forwarded
to ``server_addr`` from a server-facing socket dedicated to that client (like a NAT, so the
server sees one distinct address per client), and the server's answers travel back the same
way. On the way each datagram may be dropped, duplicated, delayed or reordered, with every
decision drawn from ``random.Random(seed)`` (the sequence of decisions repeats for a given
seed; real-time interleaving of course does not).

A single background thread does the forwarding; queues are bounded (``max_queue`` datagrams
waiting in total, beyond which datagrams are dropped and counted as ``overflow``).

Usage::

    with LossyRelay(server.local_address, loss=0.05, reorder=0.05, duplicate=0.02, seed=1) as relay:
        client.send_to(relay.address, {...})
    print(relay.counters)
"""
from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .._socket import Waker

__all__ = ["LossyRelay", "RelayCounters"]


class RelayCounters:
    """What the relay did, per direction where it matters."""

    __slots__ = ("received", "forwarded", "dropped", "duplicated", "reordered", "overflow",
                 "to_server", "to_client", "clients", "send_errors")
    received: int
    forwarded: int
    dropped: int
    duplicated: int
    reordered: int
    overflow: int
    to_server: int
    to_client: int
    clients: int
    send_errors: int

    def __init__(self) -> None:
        for k in self.__slots__:
            setattr(self, k, 0)

    def as_dict(self) -> Dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return "RelayCounters(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


class LossyRelay:
    """Forward UDP between clients and one server with seeded impairments (module docstring).

    ``loss``, ``duplicate``, ``reorder``: probabilities per datagram in [0, 1].
    ``delay``: base one-way delay (s); ``jitter``: extra uniform random delay in [0, jitter).
    ``reorder_delay``: extra delay of a datagram picked for reordering (so later ones overtake).
    ``direction``: impair "both" ways, only "to_server" or only "to_client".
    ``blackhole``: when set (attribute, may change while running), every datagram is dropped.
    ``max_clients``: distinct client addresses served (later ones are ignored).
    """

    def __init__(
        self,
        server_addr: Tuple,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        reorder_delay: float = 0.005,
        direction: str = "both",
        seed: int = 0,
        max_queue: int = 8192,
        max_clients: int = 64,
        host: Optional[str] = None,
    ) -> None:
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if delay < 0 or jitter < 0 or reorder_delay < 0:
            raise ValueError("delays must be >= 0")
        if direction not in ("both", "to_server", "to_client"):
            raise ValueError("direction must be 'both', 'to_server' or 'to_client'")
        self.server_addr = tuple(server_addr[:2])
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.reorder_delay = reorder_delay
        self.direction = direction
        self.blackhole = False
        self.max_queue = max_queue
        self.max_clients = max_clients
        self.counters = RelayCounters()
        self._rng = random.Random(seed)
        self._family = socket.AF_INET6 if ":" in self.server_addr[0] else socket.AF_INET
        self._host = host or ("::1" if self._family == socket.AF_INET6 else "127.0.0.1")
        self._front = self._make_socket()
        self._front.bind((self._host, 0))
        self._upstream: Dict[Tuple, socket.socket] = {}  # client addr -> server-facing socket
        self._client_of: Dict[int, Tuple] = {}  # upstream fileno -> client addr
        self._queue: List[Tuple[float, int, bytes, socket.socket, Tuple, bool]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._waker = Waker()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._closed = False

    def _make_socket(self) -> socket.socket:
        s = socket.socket(self._family, socket.SOCK_DGRAM)
        s.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            except OSError:
                pass
        return s

    # ----------------------------------------------------------------------------------------
    @property
    def address(self) -> Tuple:
        """The client-facing address: clients send here instead of to the server."""
        return self._front.getsockname()[:2]

    def start(self) -> "LossyRelay":
        """Start the forwarding thread (idempotent). Returns self."""
        if self._closed:
            raise RuntimeError("relay is stopped")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dquic-relay", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop forwarding, join the thread and close every socket (idempotent)."""
        if self._closed:
            return
        self._stopping = True
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(5.0)
        self._closed = True
        for s in [self._front, *self._upstream.values()]:
            s.close()
        self._waker.close()

    def __enter__(self) -> "LossyRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def queued(self) -> int:
        """Datagrams currently waiting for their release time."""
        return len(self._queue)

    # ----------------------------------------------------------------------------------------
    def _impaired(self, to_server: bool) -> bool:
        return self.direction == "both" or (self.direction == "to_server") == to_server

    def _enqueue(self, data: bytes, out: socket.socket, dest: Tuple, to_server: bool, now: float) -> None:
        c = self.counters
        c.received += 1
        if self.blackhole:
            c.dropped += 1
            return
        copies = 1
        extra = 0.0
        if self._impaired(to_server):
            rng = self._rng
            if self.loss and rng.random() < self.loss:
                c.dropped += 1
                return
            if self.duplicate and rng.random() < self.duplicate:
                copies = 2
                c.duplicated += 1
            if self.reorder and rng.random() < self.reorder:
                extra = self.reorder_delay
                c.reordered += 1
            if self.jitter:
                extra += rng.random() * self.jitter
            base = self.delay
        else:
            base = 0.0
        for i in range(copies):
            if len(self._queue) >= self.max_queue:
                c.overflow += 1
                c.dropped += 1
                return
            self._seq += 1
            heapq.heappush(self._queue, (now + base + extra * (i == 0), self._seq, data, out, dest, to_server))

    def _upstream_for(self, client: Tuple) -> Optional[socket.socket]:
        s = self._upstream.get(client)
        if s is None:
            if len(self._upstream) >= self.max_clients:
                return None
            s = self._make_socket()
            s.bind((self._host, 0))
            self._upstream[client] = s
            self._client_of[s.fileno()] = client
            self.counters.clients += 1
        return s

    def _drain(self, sock: socket.socket, now: float) -> None:
        front = sock is self._front
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors surfacing on the socket: ignore, keep draining
            if front:
                up = self._upstream_for(addr[:2])
                if up is not None:
                    self._enqueue(data, up, self.server_addr, True, now)
            else:
                if tuple(addr[:2]) != self.server_addr:
                    continue
                client = self._client_of.get(sock.fileno())
                if client is not None:
                    self._enqueue(data, self._front, client, False, now)

    def _release(self, now: float) -> None:
        q = self._queue
        c = self.counters
        while q and q[0][0] <= now:
            _, _, data, out, dest, to_server = heapq.heappop(q)
            # count first, so a receiver that got the datagram never sees stale counters
            c.forwarded += 1
            if to_server:
                c.to_server += 1
            else:
                c.to_client += 1
            try:
                out.sendto(data, dest)
            except OSError:
                c.send_errors += 1
                c.forwarded -= 1
                if to_server:
                    c.to_server -= 1
                else:
                    c.to_client -= 1

    def _run(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            timeout = 0.5
            if self._queue:
                timeout = max(0.0, min(timeout, self._queue[0][0] - now))
            socks = [self._front, *self._upstream.values()]
            wake_fd = self._waker.fileno()
            fds: List[Any] = [wake_fd, *socks]  # select takes descriptors and sockets alike
            readable, _, _ = select.select(fds, [], [], timeout)
            now = time.monotonic()
            for s in readable:
                if s == wake_fd:
                    self._waker.drain()
                    continue
                self._drain(s, now)
            self._release(time.monotonic())
