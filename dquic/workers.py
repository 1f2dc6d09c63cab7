"""Workers on one port: N processes serving one UDP address, steered by connection ID (Linux).

A Python server uses one core. ``WorkerPool`` runs N worker processes, each a full
``dquic.aio`` server (its own ``Endpoint``, event loop and handler tasks) on its own
``SO_REUSEPORT`` socket bound to the same address, and makes the kernel deliver each datagram
to the worker that holds its connection, also after the client's address changed:

* **Connection IDs name the worker.** Worker ``i`` issues QUIC-LB plaintext connection IDs
  (``dquic.quic_lb``) whose server ID is ``server_id + bytes([i])``: the fleet's server ID (none
  by default) with the worker index appended, as in the draft's load-balancer chains. A QUIC-LB
  balancer configured with the fleet's server ID length reads the worker byte as part of the
  nonce; the kernel reads it at a fixed position: CID byte ``1 + len(server_id)``.
* **A classic BPF program steers** (``SO_ATTACH_REUSEPORT_CBPF``; it sees the UDP payload at
  offset 0): a short-header packet, or a long-header packet other than Initial (their DCIDs are
  always ours), goes to the socket whose index is that byte; an Initial (a DCID the client chose
  at random, or after a Retry one of ours) goes to ``table[byte % N]``, where the table maps
  each index to itself while that worker accepts connections and to an accepting worker while
  it does not. An index the program returns outside the group makes the kernel fall back to its
  4-tuple hash.
* **The parent owns the sockets.** It creates and binds all N (the group's socket order is the
  worker order, which the program's indices rely on), attaches the program, and forks the
  workers, which inherit theirs. A worker that dies leaves its socket in the group (the parent
  still holds it): datagrams for it wait in its buffer until the parent has restarted it, and
  the new process, with the same key pair (so the same stateless-reset key), answers packets of
  its predecessor's connections with stateless resets, so those clients fail within about a
  round trip. Other workers never notice.
* **Draining.** SIGTERM to a worker (``stop_worker``) makes it ask the parent to take it out
  of the Initial table (the parent re-attaches the program), then stop accepting, let its
  connections finish (up to ``drain_timeout``, then close them cleanly), and exit 0. A drained
  worker is not restarted until ``start_worker`` is called; one that exits otherwise is
  restarted after ``restart_delay``.

A Retry names the worker that sent it (its source connection ID is one of that worker's), so
the client's next Initial returns to it; only a Retry sent just before its worker started
draining can lead the client to another worker, which then accepts the connection under the
drained worker's ID: that connection's later packets reach the drained worker and are reset.

Where the kernel refuses ``SO_REUSEPORT`` or the program (not Linux, or an old or restricted
kernel), the pool warns and serves with one worker. Each worker counts the datagrams it received
whose connection ID names another worker (``stats()["misrouted"]``): 0 when steering works.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._socket import UDPSocket, normalize_address, resolve_address
from .endpoint import Endpoint

__all__ = ["WorkerPool", "serve_workers", "steering_program", "attach_steering",
           "MAX_WORKERS"]

logger = logging.getLogger("dquic.workers")

#: Worker indices are one byte of the connection ID; the steering table is a chain of jumps.
MAX_WORKERS = 64
#: ``busy_poll`` of a worker unless the pool's options set it: off. A pool is meant to keep
#: every core busy with its workers; a worker polling for an answer would take CPU its
#: siblings (or the load) need (dquic._busypoll).
WORKER_BUSY_POLL = 0.0
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>

# classic BPF opcodes (<linux/filter.h>)
_LD_B_ABS = 0x30   # A = packet[k] (byte)
_ALU_AND_K = 0x54  # A &= k
_ALU_MOD_K = 0x94  # A %= k
_JEQ_K = 0x15      # A == k ? jt : jf
_JSET_K = 0x45     # A & k ? jt : jf
_RET_A = 0x16      # return A
_RET_K = 0x06      # return k

# per-worker shared counters (multiprocessing.Array of int64, STATS_WIDTH per worker)
_STATS = ("state", "datagrams", "misrouted", "accepted", "resets_sent", "connections", "pid")
_STATS_WIDTH = len(_STATS)
# worker states
STARTING, RUNNING, DRAIN_REQUESTED, DRAINING, EXITED = range(5)


def steering_program(workers: int, cid_offset: int,
                     accepting: Optional[Sequence[bool]] = None) -> List[Tuple[int, int, int, int]]:
    """The classic BPF program (``(code, jt, jf, k)`` instructions) that picks the socket of a
    datagram in a group of ``workers`` sockets, the worker index being byte ``cid_offset`` of
    the destination connection ID (module docstring). ``accepting[i]`` false takes worker ``i``
    out of the Initial table."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError("workers must be 1..%d" % MAX_WORKERS)
    acc = [True] * workers if accepting is None else [bool(a) for a in accepting]
    live = [i for i in range(workers) if acc[i]] or list(range(workers))
    table = [i if acc[i] else live[i % len(live)] for i in range(workers)]
    prog = [
        (_LD_B_ABS, 0, 0, 0),                 # 0: A = first byte
        (_JSET_K, 2, 0, 0x80),                # 1: long header? -> 4
        (_LD_B_ABS, 0, 0, 1 + cid_offset),    # 2: short header: the worker byte of the DCID
        (_RET_A, 0, 0, 0),                    # 3
        (_ALU_AND_K, 0, 0, 0x30),             # 4: long packet type
        (_JEQ_K, 2, 0, 0x00),                 # 5: Initial? -> 8
        (_LD_B_ABS, 0, 0, 6 + cid_offset),    # 6: Handshake: our DCID, its worker byte
        (_RET_A, 0, 0, 0),                    # 7
        (_LD_B_ABS, 0, 0, 6 + cid_offset),    # 8: Initial: spread over the accepting workers
        (_ALU_MOD_K, 0, 0, workers),          # 9
    ]
    for i in range(workers - 1):
        prog.append((_JEQ_K, 0, 1, i))
        prog.append((_RET_K, 0, 0, table[i]))
    prog.append((_RET_K, 0, 0, table[workers - 1]))
    return prog


def attach_steering(sock: socket.socket, program: Sequence[Tuple[int, int, int, int]]) -> None:
    """Attach ``program`` to the SO_REUSEPORT group of ``sock`` (replacing the group's
    program). OSError where the kernel refuses."""
    raw = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class _WorkerEndpoint(Endpoint):
    """A server endpoint that counts the datagrams it receives whose connection ID names
    another worker (a short header or a non-Initial long header: IDs this pool issued)."""

    def __init__(self, *args: Any, worker: int, cid_offset: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.worker = worker
        self._short_pos = 1 + cid_offset
        self._long_pos = 6 + cid_offset
        self.datagrams = 0
        self.misrouted = 0
        self.accepted = 0
        self._in_segments = False

    def _count(self, data: Any, start: int, end: int) -> None:
        self.datagrams += 1
        first = data[start]
        if first & 0x80:
            if not first & 0x30:
                return  # Initial: the DCID may be the client's
            pos = start + self._long_pos
        else:
            pos = start + self._short_pos
        if pos < end and data[pos] != self.worker:
            self.misrouted += 1

    def receive_datagram(self, data: bytes, addr: Tuple, now: float) -> None:
        if not self._in_segments and data:
            self._count(data, 0, len(data))
        super().receive_datagram(data, addr, now)

    def receive_segments(self, data: bytes, segment_size: int, addr: Tuple, now: float) -> None:
        n = len(data)
        if segment_size > 0:
            for off in range(0, n, segment_size):
                self._count(data, off, min(off + segment_size, n))
        self._in_segments = True
        try:
            super().receive_segments(data, segment_size, addr, now)
        finally:
            self._in_segments = False

    def _accept(self, *args: Any) -> Any:
        self.accepted += 1
        return super()._accept(*args)


def _set_parent_death_signal() -> None:
    """Linux: this worker gets SIGTERM when the parent dies (no orphans serving on)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # pragma: no cover
            pass


class WorkerPool:
    """N worker processes serving ``handler`` on one address (module docstring).

    ``handler`` is what ``dquic.aio.serve`` takes: ``async def handler(conn)``, run in the
    worker that holds the connection. ``options`` are those of ``dquic.aio.serve``
    (``Configuration`` fields and driver options, ``max_connections``; ``busy_poll`` is off in
    workers unless given: ``WORKER_BUSY_POLL``). With ``sync=True``,
    ``handler(server)`` is called once in each worker with a bound ``dquic.DQUIC`` (options
    those of ``DQUIC``) and serves it, typically a ``receive_from`` loop; once the worker has
    drained, ``server`` is closed, so ``receive_from`` raises ``EndpointClosed`` (which ends
    the worker normally). ``server_id`` is the
    fleet's QUIC-LB server ID (the worker index is appended; plaintext mode only, since the
    kernel cannot decrypt). Without ``identity`` one key pair is generated for all workers
    (``identity``): clients see one server. ``start()`` binds and forks; ``close()`` drains
    every worker and releases the sockets; ``with WorkerPool(...) as pool`` does both.
    """

    def __init__(self, address: Tuple, workers: int, handler: Callable[[Any], Any], *,
                 sync: bool = False, drain_timeout: float = 30.0, restart_delay: float = 0.2,
                 **options: Any) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError("workers must be 1..%d" % MAX_WORKERS)
        if options.get("lb_key") is not None and workers > 1:
            raise ValueError("workers on one port need plaintext QUIC-LB connection IDs "
                             "(the kernel's steering program cannot decrypt): no lb_key")
        self.sync = sync
        self.requested_workers = workers
        self.workers = workers
        self.handler = handler
        self.drain_timeout = drain_timeout
        self.restart_delay = restart_delay
        self._base_sid = bytes(options.pop("server_id", None) or b"")
        self.cid_offset = 1 + len(self._base_sid)
        self.max_connections = int(options.pop("max_connections", 4096))
        if options.get("encryption", True) and options.get("identity") is None:
            from .keys import KeyPair

            options["identity"] = KeyPair.generate()
        self.identity = options.get("identity")
        self.options = options
        self.token_key = os.urandom(32)  # Retry tokens: any worker checks any worker's
        self._address = address
        self._ctx = multiprocessing.get_context("fork")
        self._socks: List[socket.socket] = []
        self._procs: List[Optional[Any]] = []
        self._stopped: List[bool] = []  # drained on purpose: not restarted
        self._accepting: List[bool] = []
        self._died_at: List[Optional[float]] = []
        self._stats: Any = None
        self._lock = threading.Lock()
        self._monitor: Optional[threading.Thread] = None
        self._closing = False
        self.restarts = 0
        self.steering = False
        self.local_address: Optional[Tuple] = None

    # ----------------------------------------------------------------------------------------
    def start(self) -> "WorkerPool":
        """Bind the sockets, attach the steering program, start the workers and the monitor."""
        family, addr = resolve_address(self._address, passive=True)
        n = self.workers
        socks = self._bind(family, addr, n)
        if n > 1:
            try:
                attach_steering(socks[0], steering_program(n, self.cid_offset))
                self.steering = True
            except OSError as exc:
                for s in socks:
                    s.close()
                msg = ("dquic workers: the kernel refused connection-ID steering (%s); serving "
                       "with one worker" % exc)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                logger.warning("%s", msg)
                n = self.workers = 1
                socks = self._bind(family, addr, 1)
        self._socks = socks
        self.local_address = normalize_address(socks[0].getsockname())
        self._stats = self._ctx.Array("q", n * _STATS_WIDTH, lock=False)
        self._procs = [None] * n
        self._stopped = [False] * n
        self._accepting = [True] * n
        self._died_at = [None] * n
        for i in range(n):
            self._spawn(i)
        self._monitor = threading.Thread(target=self._watch, name="dquic-workers", daemon=True)
        self._monitor.start()
        return self

    def _bind(self, family: int, addr: Tuple, n: int) -> List[socket.socket]:
        socks: List[socket.socket] = []
        try:
            for i in range(n):
                s = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(s)
                if n > 1:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    except (AttributeError, OSError) as exc:
                        raise OSError("SO_REUSEPORT: %s" % exc) from None
                if family == socket.AF_INET6:
                    try:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    except OSError:
                        pass
                s.bind(addr if i == 0 else socks[0].getsockname())
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    @property
    def address(self) -> Tuple:
        """The address the workers serve (the port chosen if 0 was asked for)."""
        assert self.local_address is not None, "start() first"
        return self.local_address

    def _spawn(self, i: int) -> None:
        base = i * _STATS_WIDTH
        for k in range(_STATS_WIDTH):
            self._stats[base + k] = 0
        p = self._ctx.Process(target=_worker_main, args=(self, i), name="dquic-worker-%d" % i,
                              daemon=True)
        p.start()
        self._procs[i] = p
        self._stats[base + _STATS.index("pid")] = p.pid or 0
        self._died_at[i] = None

    def _steer(self) -> None:
        if self.steering:
            attach_steering(self._socks[0], steering_program(self.workers, self.cid_offset,
                                                             self._accepting))

    def _watch(self) -> None:
        """The monitor thread: restarts workers that died, re-steers when one drains."""
        while not self._closing:
            time.sleep(0.02)
            with self._lock:
                if self._closing:
                    return
                changed = False
                now = time.monotonic()
                for i, p in enumerate(self._procs):
                    state = self._stats[i * _STATS_WIDTH]
                    if state == DRAIN_REQUESTED:
                        self._stopped[i] = True
                        if self._accepting[i]:
                            self._accepting[i] = False
                            changed = True
                        self._stats[i * _STATS_WIDTH] = DRAINING
                    elif state == RUNNING and not self._accepting[i] and not self._stopped[i]:
                        self._accepting[i] = True
                        changed = True
                    if p is None or p.is_alive():
                        continue
                    if self._stopped[i]:
                        if p.exitcode is not None:
                            p.join(0)
                            self._procs[i] = None
                        continue
                    died = self._died_at[i]
                    if died is None:
                        logger.warning("dquic worker %d (pid %s) exited with %s; restarting",
                                       i, p.pid, p.exitcode)
                        died = self._died_at[i] = now
                        if self._accepting[i]:
                            self._accepting[i] = False  # new connections elsewhere meanwhile
                            changed = True
                    if now - died >= self.restart_delay:
                        p.join(0)
                        self.restarts += 1
                        self._spawn(i)
                if changed:
                    try:
                        self._steer()
                    except OSError as exc:  # pragma: no cover
                        logger.warning("dquic workers: re-steering failed: %s", exc)

    # ----------------------------------------------------------------------------------------
    def pids(self) -> List[Optional[int]]:
        """The process ID of each worker (None: not running)."""
        return [p.pid if p is not None and p.is_alive() else None for p in self._procs]

    def stats(self) -> List[Dict[str, int]]:
        """Per worker: ``state``, ``datagrams`` received, ``misrouted`` (datagrams whose
        connection ID names another worker), connections ``accepted``, stateless ``resets_sent``,
        live ``connections``, ``pid``; counters of the current process, updated every 0.1 s."""
        return [{name: self._stats[i * _STATS_WIDTH + k] for k, name in enumerate(_STATS)}
                for i in range(self.workers)]

    def stop_worker(self, i: int) -> None:
        """Drain worker ``i`` (SIGTERM): no new connections, existing ones finish; then it exits
        and stays stopped until ``start_worker(i)``."""
        with self._lock:
            self._stopped[i] = True
            p = self._procs[i]
        if p is not None and p.is_alive():
            os.kill(p.pid, signal.SIGTERM)

    def start_worker(self, i: int) -> None:
        """Start worker ``i`` again after ``stop_worker`` (it waits for the old one to exit)."""
        p = self._procs[i]
        if p is not None:
            p.join(self.drain_timeout + 5)
        with self._lock:
            self._stopped[i] = False
            self._spawn(i)

    def wait_worker(self, i: int, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for worker ``i``'s current process to exit: its exit code (None: still running)."""
        p = self._procs[i]
        if p is None:
            return 0
        p.join(timeout)
        return p.exitcode

    def serve_forever(self) -> None:
        """Block until SIGINT/SIGTERM (main thread) or ``close()``."""
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and not self._closing:
            stop.wait(0.2)

    def close(self, timeout: Optional[float] = None) -> None:
        """Drain every worker (SIGTERM), wait up to ``timeout`` (default ``drain_timeout`` + 5 s),
        kill what is left, release the sockets."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._monitor is not None:
            self._monitor.join()
        procs = [p for p in self._procs if p is not None]
        for p in procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + (self.drain_timeout + 5 if timeout is None else timeout)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        for s in self._socks:
            s.close()

    def __enter__(self) -> "WorkerPool":
        if self.local_address is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def worker_options(self, index: int) -> Dict[str, Any]:
        """The options worker ``index`` runs with: the pool's, with its QUIC-LB server ID and,
        unless given, busy polling off (``WORKER_BUSY_POLL``)."""
        options = dict(self.options)
        options["server_id"] = self._base_sid + bytes([index])
        options.setdefault("busy_poll", WORKER_BUSY_POLL)
        return options


def serve_workers(address: Tuple, workers: int, handler: Callable[[Any], Any],
                  **options: Any) -> None:
    """Serve ``handler`` (as for ``dquic.aio.serve``, or with ``sync=True`` a function given
    each worker's ``DQUIC``) with ``workers`` processes on ``address`` until SIGINT/SIGTERM,
    then drain them (``WorkerPool``)."""
    pool = WorkerPool(address, workers, handler, **options)
    pool.start()
    try:
        pool.serve_forever()
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------
# the worker process
def _worker_main(pool: WorkerPool, index: int) -> None:
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (SIGTERM)
    for j, s in enumerate(pool._socks):
        if j != index:
            s.close()
    try:
        if pool.sync:
            _sync_worker(pool, index, pool._socks[index])
        else:
            asyncio.run(_worker(pool, index, pool._socks[index]))
    finally:
        pool._stats[index * _STATS_WIDTH] = EXITED


def _sync_worker(pool: WorkerPool, index: int, sock: socket.socket) -> None:
    from .errors import EndpointClosed
    from .sync import DQUIC

    options = pool.worker_options(index)
    server = DQUIC(max_connections=pool.max_connections, **options)
    endpoint = server._endpoint = _WorkerEndpoint(
        server._config, accept=True, max_connections=pool.max_connections,
        token_key=pool.token_key, worker=index, cid_offset=pool.cid_offset)
    with server._cond:
        server._start(UDPSocket(sock.family, server._socket_buffer, offload=server._offload,
                                sock=sock))
    stats = pool._stats
    base = index * _STATS_WIDTH
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def publish() -> None:
        _publish(stats, base, endpoint)

    def supervise() -> None:  # publishes the counters; drains on SIGTERM (as _worker)
        while not stop.wait(0.1):
            publish()
        stats[base] = DRAIN_REQUESTED
        deadline = time.monotonic() + 2.0
        while stats[base] == DRAIN_REQUESTED and time.monotonic() < deadline:
            time.sleep(0.01)
        endpoint.accept = False
        deadline = time.monotonic() + pool.drain_timeout
        while endpoint.connection_count and time.monotonic() < deadline:
            publish()
            time.sleep(0.05)
        publish()
        server.close(abandon=True)

    supervisor = threading.Thread(target=supervise, name="dquic-worker", daemon=True)
    stats[base] = RUNNING
    supervisor.start()
    try:
        pool.handler(server)
    except EndpointClosed:
        pass
    finally:
        stop.set()
        supervisor.join(pool.drain_timeout + 5)
        server.close(abandon=True)


def _publish(stats: Any, base: int, endpoint: "_WorkerEndpoint") -> None:
    """A worker's counters into its row of the pool's shared array (the parent reads them)."""
    stats[base + 1] = endpoint.datagrams
    stats[base + 2] = endpoint.misrouted
    stats[base + 3] = endpoint.accepted
    stats[base + 4] = endpoint.resets_sent
    stats[base + 5] = endpoint.connection_count


async def _worker(pool: WorkerPool, index: int, sock: socket.socket) -> None:
    from .aio import Server
    from .aio._driver import SOCKET_BUFFER, _Driver, _OffloadTransport, _split_options

    loop = asyncio.get_running_loop()
    options = pool.worker_options(index)
    cfg, driver_opts = _split_options(options, is_client=False)
    endpoint = _WorkerEndpoint(cfg, accept=True, max_connections=pool.max_connections,
                               token_key=pool.token_key, worker=index,
                               cid_offset=pool.cid_offset)
    server = Server(pool.handler, cfg)
    driver = _Driver(endpoint, loop, driver_opts, server=server)
    server._driver = driver
    usock = UDPSocket(sock.family, driver_opts.get("socket_buffer", SOCKET_BUFFER),
                      offload=driver_opts.get("offload", True), sock=sock)
    _OffloadTransport(loop, usock, driver)
    stats = pool._stats
    base = index * _STATS_WIDTH

    def publish() -> None:
        _publish(stats, base, endpoint)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stats[base] = RUNNING
    while not stop.is_set():
        publish()
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    # drain: out of the Initial table first, then stop accepting, let connections finish
    stats[base] = DRAIN_REQUESTED
    deadline = loop.time() + 2.0
    while stats[base] == DRAIN_REQUESTED and loop.time() < deadline:
        await asyncio.sleep(0.01)
    endpoint.accept = False
    deadline = loop.time() + pool.drain_timeout
    while endpoint.connection_count and loop.time() < deadline:
        publish()
        await asyncio.sleep(0.05)
    server.close()
    await server.wait_closed()
    publish()
