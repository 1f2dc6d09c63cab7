"""The asyncio driver of ``dquic.aio``: one UDP socket, its transport and the sans-IO endpoint behind it.

Each ``connect`` (one client connection), each ``open_client`` (a ``Client``: any number of
outgoing connections) and each ``serve`` (all of a server's connections) owns one UDP socket, an ``asyncio.DatagramProtocol`` (``_Driver``) and a sans-IO
``dquic.endpoint.Endpoint``. The driver feeds received datagrams to the endpoint with the loop's
clock (``loop.time()``) as ``now``, and after every batch of input (received datagrams, a fired
timer, an application call) runs one *pass*: due timers, ``trains_to_send`` /
``datagrams_to_send`` -> the transport, events -> connection state, waking the coroutines
waiting on it, then arms its single ``loop.call_at`` timer from ``get_timer()`` when that is
earlier than the armed one (a timer that fires early only runs a pass). A batch read by the
offload transport and a ``send_message`` (when no pass is running or due) run their pass at
once, so a request leaves before its caller's next ``await`` and a reply's waiter wakes in the
next loop iteration; other passes are coalesced with ``loop.call_soon``, so a burst costs one
pass. The transport's ``pause_writing`` stops pulling datagrams from the core until
``resume_writing``. It runs on any asyncio loop (the default one and uvloop).

After the offload transport sends, it polls for an answer for the busy-poll budget
(``dquic._busypoll``: up to the ``busy_poll`` option, learnt from how recent waits ended): a
callback that the loop runs in each iteration keeps the loop's ``select`` from sleeping, so the
answer is read as soon as it arrives, while every other task and callback runs as usual.

"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .._app import split_options
from .._busypoll import DEFAULT_LIMIT as DEFAULT_BUSY_POLL, BusyPoll, can_poll, check_limit
from .._socket import (UDPSocket, no_larger_route, normalize_address, numeric_address, pick_address,
                       route_mtu, set_dont_fragment)
from ..config import Configuration
from ..endpoint import ConnectionAccepted, Endpoint
from ..errors import ConnectionClosed, ConnectionRefused, ErrorCode
from ..events import HandshakeCompleted, HandshakeFailed, MessageReceived
from ._connection import AsyncConnection, logger

if TYPE_CHECKING:
    from . import Server

#: SO_SNDBUF / SO_RCVBUF asked of the kernel.
SOCKET_BUFFER = 8 << 20
_DRIVER_OPTIONS = ("send_buffer_limit", "receive_buffer", "max_message_size", "reader_limit",
                   "linger", "socket_buffer", "offload", "busy_poll")
#: Socket reads per readiness callback of the offload transport.
RECV_BATCH = 64
#: Before the socket is released, how long at most, and how often, to look whether the peers
#: answered the closes (the closing period ends it sooner: three PTOs)
SETTLE_MAX = 2.0
SETTLE_POLL = 0.002
_sched_yield = getattr(os, "sched_yield", lambda: None)
#: A yield longer than this (seconds) let another task run: polling gives way (dquic._busypoll).
YIELD_CONTENDED = 20e-6


# ----------------------------------------------------------------------------------------------
# helpers
def _split_options(options: Dict[str, Any], is_client: bool) -> Tuple[Configuration, Dict[str, Any]]:
    """Separate driver options from ``Configuration`` fields; TypeError for unknown names."""
    fields, driver = split_options(options, _DRIVER_OPTIONS)
    cfg = Configuration(is_client=is_client, **fields)
    if not is_client and cfg.encryption and cfg.identity is None:
        from ..keys import KeyPair

        cfg.identity = KeyPair.generate()  # opportunistic: encrypted, not authenticated
    cfg.validate()
    for name in ("send_buffer_limit", "receive_buffer", "max_message_size", "reader_limit"):
        if name in driver and (not isinstance(driver[name], int) or driver[name] <= 0):
            raise ValueError(f"{name} must be a positive int")
    if driver.get("linger", 0) < 0:
        raise ValueError("linger must be >= 0")
    driver["busy_poll"] = check_limit(driver.get("busy_poll", DEFAULT_BUSY_POLL))
    return cfg, driver


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, passive: bool) -> Tuple[int, Tuple]:
    """``(family, normalized address)``; numeric hosts need no lookup, names prefer IPv4."""
    if host is None:
        host = ""
    try:
        numeric = numeric_address((host, port), passive=passive)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if numeric is not None:
        return numeric
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE if passive else 0)
    return pick_address(infos, host)


# ----------------------------------------------------------------------------------------------
class _OffloadTransport:
    """A datagram transport over ``dquic._socket.UDPSocket`` for loops with ``add_reader``
    (the default loop on Unix, uvloop): reads in batches with UDP GRO and sends the core's
    trains with UDP GSO where the kernel allows, each falling back by itself. It calls the
    protocol like an asyncio datagram transport would, plus ``segments_received`` for a GRO
    run, and offers ``send_trains``; other loops use ``create_datagram_endpoint``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: UDPSocket, protocol: "_Driver") -> None:
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._writing = False
        self._closing = False
        # busy polling (dquic._busypoll): after sending, the loop keeps looking at the socket
        # (a callback it runs each iteration keeps it from sleeping) for the budget
        self._busy = BusyPoll(protocol.options.get("busy_poll", DEFAULT_BUSY_POLL), can_poll())
        self._polling = False
        self._poll_start = self._poll_end = 0.0
        self._poll_turns = 0
        self._waiting_since: Optional[float] = None  # a wait for an answer slept from then
        loop.add_reader(sock.fileno(), self._on_readable)
        protocol.connection_made(self)  # type: ignore[arg-type]

    # the asyncio transport surface the driver uses
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sock.sock.getsockname()
        if name == "socket":
            return None  # buffers are set already; nobody else reads this socket
        return default

    def is_closing(self) -> bool:
        return self._closing

    def sendto(self, data: Any, addr: Tuple) -> None:
        self.send_trains([(data, len(data), addr)])

    def send_trains(self, trains: List[Tuple[Any, int, Tuple]]) -> None:
        if self._closing or not trains:
            return
        sock = self._sock
        if sock.pending:
            sock.queue_trains(trains)  # behind what the kernel has not taken yet
        else:
            sock.send_now(trains)
            if sock.pending:
                self._want_write()
        if self._busy.limit and not self._polling:
            self._begin_wait()

    # busy polling
    def _begin_wait(self) -> None:
        """Something was sent: an answer may come soon. Poll for the budget (the loop runs
        ``_poll`` each iteration meanwhile, so it looks at the socket without sleeping)."""
        now = self._loop.time()
        busy = self._busy
        since = self._waiting_since
        if since is not None and now - since > busy.limit:
            busy.slept(None)  # the last wait saw nothing within the limit
        budget = busy.budget
        if budget > 0.0:
            self._polling = True
            self._waiting_since = None
            self._poll_start = now
            self._poll_end = now + budget
            self._loop.call_soon(self._poll)
        else:
            self._waiting_since = now

    def _poll(self) -> None:
        if not self._polling or self._closing:
            return
        now = self._loop.time()
        if now >= self._poll_end:
            # nothing came: sleep in the loop's select from now on; the wait's end tells the
            # budget whether polling longer would have paid
            self._polling = False
            self._waiting_since = self._poll_start
            return
        self._poll_turns += 1
        if not self._poll_turns & 3:  # every fourth turn: a loop turn costs little already
            _sched_yield()
            if self._loop.time() - now > YIELD_CONTENDED:
                # the yield let another task run: the CPU is wanted, stop polling
                self._polling = False
                self._busy.contended()
                return
        self._loop.call_soon(self._poll)

    def _answered(self) -> None:
        """Something arrived: the wait (polling or sleeping) ended."""
        if self._polling:
            self._polling = False
            self._busy.caught()
        else:
            since = self._waiting_since
            if since is not None:
                self._waiting_since = None
                self._busy.slept(self._loop.time() - since)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        if self._writing:
            self._loop.remove_writer(fd)
            self._writing = False
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    # loop callbacks
    def _on_readable(self) -> None:
        batch = self._sock.recv_batch(RECV_BATCH)
        if batch:
            if self._polling or self._waiting_since is not None:
                self._answered()
            self._protocol.segments_received(batch)
        if self._sock.unreachable_reports:
            self._protocol.unreachable(self._sock.unreachable())

    def _want_write(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
            self._protocol.pause_writing()

    def _on_writable(self) -> None:
        sock = self._sock
        sock.flush()
        if not sock.pending:
            self._loop.remove_writer(sock.fileno())
            self._writing = False
            self._protocol.resume_writing()


async def _open_transport(loop: asyncio.AbstractEventLoop, driver: "_Driver", family: int,
                          address: Tuple) -> None:
    """Bind a UDP socket to ``address`` and connect ``driver`` to it: through
    ``_OffloadTransport`` where the loop supports ``add_reader``, else through
    ``create_datagram_endpoint``."""
    if driver.options.get("offload", True):
        # an IPv6 socket serves IPv4 peers too (IPv4-mapped addresses, reported as IPv4)
        sock = UDPSocket(family, driver.options.get("socket_buffer", SOCKET_BUFFER),
                         dual_stack=family == socket.AF_INET6)
        try:
            sock.bind(address)
            _OffloadTransport(loop, sock, driver)
            return
        except NotImplementedError:  # e.g. the proactor loop: no add_reader
            sock.close()
        except BaseException:
            sock.close()
            raise
    await loop.create_datagram_endpoint(lambda: driver, local_addr=address, family=family)


class _Driver(asyncio.DatagramProtocol):
    """Drives one sans-IO ``Endpoint`` from an asyncio datagram transport (module docstring)."""

    def __init__(self, endpoint: Endpoint, loop: asyncio.AbstractEventLoop,
                 options: Dict[str, Any], server: Optional["Server"] = None) -> None:
        self.endpoint = endpoint
        # which connections have something to read is all _dispatch needs: no event per
        # stream (MessageReceived), one entry per connection in endpoint.readable
        endpoint.message_events = False
        self.loop = loop
        self.options = options
        self.server = server
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.conns: Dict[Any, "AsyncConnection"] = {}
        self._scheduled = False
        self._in_run = False  # a pass is running
        self._sent_now = False  # send_now ran a pass since the last pass the loop ran
        self._held = False  # the previous pass held its output for a connect() that completed
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at: Optional[float] = None
        self._paused = False
        self._send_trains: Any = None  # the transport's send_trains, if it has one
        self.lost: "asyncio.Future[None]" = loop.create_future()
        self.datagrams_in = 0
        self.datagrams_out = 0

    # protocol callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # the offload transport takes the core's trains as they are; others, datagrams
        self._send_trains = getattr(transport, "send_trains", None)
        sock = transport.get_extra_info("socket")
        # path MTU discovery up to the local route's MTU, where datagrams cannot fragment
        udp = getattr(transport, "_sock", None)
        if isinstance(udp, UDPSocket):
            df = udp.dont_fragment
        else:
            df = sock is not None and set_dont_fragment(
                sock, sock.family == socket.AF_INET6 and not sock.getsockopt(
                    socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        self.endpoint.route_mtu = route_mtu if df else no_larger_route
        size = self.options.get("socket_buffer", SOCKET_BUFFER)
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
                except (OSError, AttributeError):
                    pass

    def datagram_received(self, data: bytes, addr: Tuple) -> None:
        self.datagrams_in += 1
        self.endpoint.receive_datagram(data, normalize_address(addr), self.loop.time())
        self.schedule()

    def unreachable(self, items: List[Tuple[Tuple, int]]) -> None:
        """The kernel reported destinations unreachable (ICMP): a connection this side opened
        that is still in its handshake to such an address fails at once with
        ``ConnectionRefused`` instead of waiting out the handshake timeout."""
        for addr, err in items:
            for conn in list(self.conns.values()):
                if (self.server is None and not conn._established.done() and not conn._terminated
                        and normalize_address(conn._core.peer_addr) == addr):
                    what = "refused (port unreachable)" if err == errno.ECONNREFUSED else "unreachable"
                    conn._on_terminated(ConnectionRefused(err, f"connection to {addr} {what}"))
                    conn.abort(ErrorCode.CONNECTION_REFUSED)

    def segments_received(self, batch: List[Tuple[bytes, Tuple, int]]) -> None:
        """A batch of reads from ``_OffloadTransport``: ``(data, addr, segment_size)`` with
        ``segment_size`` 0 for a lone datagram (addresses already normalised). The batch is
        all the socket had, so its pass runs now rather than one loop iteration later: a
        reply's waiter wakes in the next iteration, and what the pass sends leaves at once."""
        ep = self.endpoint
        now = self.loop.time()
        for data, addr, seg in batch:
            if seg:
                ep.receive_segments(data, seg, addr, now)
                self.datagrams_in += -(-len(data) // seg)
            else:
                ep.receive_datagram(data, addr, now)
                self.datagrams_in += 1
        if self._scheduled:
            return  # a pass is due in this iteration anyway
        self._run(now)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on an unconnected socket: the handshake / idle timers decide
        logger.debug("socket error: %r", exc)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.lost.done():
            self.lost.set_result(None)
        for conn in list(self.conns.values()):
            conn._on_terminated(ConnectionClosed("socket closed"), final=True)
        self.conns.clear()
        self.transport = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.schedule()

    # passes ----------------------------------------------------------------------------------
    def schedule(self) -> None:
        """Run a pass soon (coalesced): call after anything that gives the core work."""
        if not self._scheduled and self.transport is not None:
            self._scheduled = True
            self.loop.call_soon(self._pass)

    def send_now(self) -> None:
        """The application queued a message: run a pass now, so that it leaves before the
        caller's next ``await`` (a request does not wait for the next loop iteration), unless
        a pass is running or due in this iteration. Further sends before the loop's next pass
        are coalesced into that pass, as ``schedule`` does."""
        if (self._in_run or self._scheduled or self._sent_now or self._paused
                or self.transport is None):
            self.schedule()
            return
        self._run(self.loop.time())
        self._sent_now = True

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        # the loop may run a timer up to its clock resolution early: it fired at its deadline
        now = self.loop.time()
        self._run(now if at is None else max(now, at))

    def _pass(self) -> None:
        self._scheduled = False
        self._run(self.loop.time())

    def _run(self, now: float) -> None:
        transport = self.transport
        if transport is None:
            return
        self._in_run = True
        try:
            self._run_pass(now)
        finally:
            self._in_run = False

    def _run_pass(self, now: float) -> None:
        self._sent_now = False
        ep = self.endpoint
        transport = self.transport
        assert transport is not None  # (_run looked)
        ep.handle_timer(now)  # (returns at once when no deadline has passed)
        if (self.server is None and ep.events and not self._held
                and any(type(ev) is HandshakeCompleted for _, ev in ep.events)):
            # a connection this side opened completed its handshake: the coroutine waiting in
            # connect() usually sends at once, so what this pass would send (the acknowledgement
            # that ends the handshake) waits one loop iteration to leave in the same datagram
            self._held = True
            self._dispatch()
            self.schedule()
            return
        self._held = False
        if not self._paused:
            send_trains = self._send_trains
            if send_trains is not None:
                # (the polled connections' bookkeeping waits until the trains are out)
                trains = ep.trains_to_send(now, settle=False)
                if trains:
                    send_trains(trains)
                    for data, seg, _ in trains:
                        self.datagrams_out += -(-len(data) // seg)
                ep.settle()
            else:
                out = ep.datagrams_to_send(now)
                if out:
                    sendto = transport.sendto
                    for data, addr in out:
                        sendto(data, addr)
                    self.datagrams_out += len(out)
        self._dispatch()
        conns = self.conns
        for core in ep.take_active():  # only the connections this pass touched
            conn = conns.get(core)
            if conn is not None:
                conn._service()
        if self.transport is None:
            return
        t = ep.get_timer()
        if t is not None and t <= now:
            if not self._paused:
                # output waits already (reading a message opened flow-control window): one
                # more pass soon, in this loop's next iteration
                self.schedule()
                return
            t = now + 0.001  # nothing can be sent until resume_writing: do not spin
        at = self._timer_at
        # A deadline that moved later keeps the armed timer: it fires early, and its pass
        # arms the one due then (a request/response exchange moves the deadlines with every
        # packet; cancelling and arming a loop timer each time would cost more than that).
        if t is not None and (at is None or t < at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = t
            self._timer = self.loop.call_at(t, self._on_timer)

    def _dispatch(self) -> None:
        ep = self.endpoint
        events = ep.events  # taken one at a time, as next_event does: handling one may add more
        while events:
            core, ev = events.popleft()
            conn = self.conns.get(core)
            if type(ev) is MessageReceived:
                if conn is not None:
                    conn._need_pull = True  # (what _on_event does with it, without the walk)
                continue
            if type(ev) is HandshakeFailed:
                if self.server is not None:
                    self.server._handshake_failed(ev)
                continue
            if isinstance(ev, ConnectionAccepted):
                if self.server is not None and conn is None:
                    conn = AsyncConnection(self, core, self.options, owns_driver=False)
                    self.conns[core] = conn
                continue
            if conn is not None:
                conn._on_event(ev)
        readable = ep.readable
        if readable:
            # the connections with something new to read (after the events: a connection
            # accepted in this pass gets its AsyncConnection from its ConnectionAccepted)
            conns = self.conns
            for core in readable:
                conn = conns.get(core)
                if conn is not None:
                    conn._need_pull = True
            readable.clear()

    def close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # for the owners of the socket (Server, Client)
    def sockname(self) -> Tuple:
        assert self.transport is not None
        return normalize_address(self.transport.get_extra_info("sockname"))

    def live_connections(self) -> List["AsyncConnection"]:
        return [c for c in self.conns.values() if not c._terminated]

    async def wait_connections(self) -> None:
        """Until every connection on this socket has ended, and the peers answered the
        connections' graceful closes (``close_settled``: a lost close is sent again while the
        socket is open; the closing period bounds the wait)."""
        conns = list(self.conns.values())
        if conns:
            await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        deadline = self.loop.time() + SETTLE_MAX
        while (self.loop.time() < deadline
               and not all(c.close_settled or not c.is_closed for c in self.endpoint.connections)):
            await asyncio.sleep(SETTLE_POLL)

    async def release(self) -> None:
        """Close the socket and wait until the loop let it go."""
        self.close_transport()
        await asyncio.shield(self.lost)


