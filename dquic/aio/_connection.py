"""The objects coroutines use (``dquic.aio`` re-exports them): ``AsyncConnection``, one connection,
with its byte-stream views ``StreamReader`` / ``StreamWriter`` and the stream errors.

A connection is told of its core connection's events by the driver (``dquic.aio._driver``), moves
received data out of the core as the application reads it and wakes the coroutines that wait on
it; what it queues goes out with the driver's next pass.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import logging
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, Optional, Tuple

from .._app import as_buffer, check_stream_id, termination_error
from .._socket import normalize_address
from ..errors import ConnectionClosed, DQUICError, ErrorCode, UndeliveredData
from ..events import (
    ConnectionTerminated,
    DatagramAcknowledged,
    DatagramLost,
    DatagramReceived,
    HandshakeCompleted,
    MessageReceived,
    StopSendingReceived,
    StreamReset,
)

if TYPE_CHECKING:
    from ._driver import _Driver

logger = logging.getLogger("dquic.aio")

#: Default for ``send_buffer_limit``: unacknowledged bytes above which sends wait.
SEND_BUFFER_LIMIT = 4 << 20
#: Default for ``receive_buffer``: bytes of whole unread messages held per connection.
RECEIVE_BUFFER = 4 << 20
#: Default for ``max_message_size``: largest message assembled in memory.
MAX_MESSAGE_SIZE = 64 << 20
#: Default for ``reader_limit``: bytes a ``StreamReader`` buffers ahead of the application.
READER_LIMIT = 1 << 20
#: Received unreliable datagrams kept for ``receive_datagram`` (older ones are dropped).
DATAGRAM_QUEUE = 1024
#: Default for ``linger``: how long ``close()`` waits for queued data to be acknowledged.
LINGER = 10.0
#: Largest piece moved out of the core at once.
_PIECE = 1 << 20


class StreamResetError(DQUICError):
    """The peer reset the stream (RESET_STREAM) or asked us to stop sending on it."""

    def __init__(self, stream_id: int, error_code: int, message: str = "") -> None:
        super().__init__(errno.ECONNRESET, message or f"stream {stream_id} reset by the peer "
                                                      f"(code {error_code})")
        self.stream_id = stream_id
        self.error_code = error_code


class MessageTooLarge(DQUICError):
    """A received message exceeded ``max_message_size``; the stream was stopped."""

    def __init__(self, stream_id: int, limit: int) -> None:
        super().__init__(errno.EMSGSIZE, f"message on stream {stream_id} exceeds "
                                         f"max_message_size ({limit} bytes)")
        self.stream_id = stream_id


def _wake(waiters: List["asyncio.Future[Any]"]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


# ----------------------------------------------------------------------------------------------
class _Inbox:
    """Whole messages received and not yet taken, in arrival order, for ``receive_message()``
    and ``receive_message(stream_id)``: taking the next message of one stream costs the same
    however many messages of other streams wait (a scan of one queue made each such call cost
    the number of messages queued before it).

    ``order`` holds ``(stream_id, data)`` in arrival order. While the next message of a stream
    is found near the front, that is all. Once a search goes deeper, the inbox keeps an index
    as well (until it is empty): ``by_stream`` maps a stream id to its waiting messages (a
    list of one, or a deque). A message taken by stream then stays in ``order`` until
    ``take_any`` meets it (``stale`` counts such entries per stream: always that stream's
    oldest in ``order``), and ``order`` is rebuilt without them once they are more than half
    of it."""

    __slots__ = ("order", "by_stream", "stale", "nstale", "n")

    #: How far ``take_stream`` looks for a stream's message before it builds the index.
    SCAN = 16

    def __init__(self) -> None:
        self.order: Deque[Tuple[int, bytes]] = collections.deque()
        self.by_stream: Optional[Dict[int, Any]] = None  # the index, once built
        self.stale: Dict[int, int] = {}
        self.nstale = 0
        self.n = 0  # messages waiting, counted while the index exists (else len(order))

    def __len__(self) -> int:
        return len(self.order) if self.by_stream is None else self.n

    def __iter__(self) -> Iterator[Tuple[int, bytes]]:
        """The waiting messages, ``(stream_id, data)`` in arrival order."""
        return _skip_stale(list(self.order), dict(self.stale))

    def append(self, sid: int, data: bytes) -> None:
        self.order.append((sid, data))
        if self.by_stream is not None:
            self.n += 1
            self._index(sid, data)

    def extend(self, items: List[Tuple[int, bytes]]) -> None:
        self.order.extend(items)
        if self.by_stream is not None:
            self.n += len(items)
            for sid, data in items:
                self._index(sid, data)

    def _index(self, sid: int, data: bytes) -> None:
        by_stream = self.by_stream
        assert by_stream is not None
        q = by_stream.get(sid)
        if q is None:
            by_stream[sid] = [data]  # (one waiting message: a list is cheaper than a deque)
        elif type(q) is list:
            by_stream[sid] = collections.deque((q[0], data))
        else:
            q.append(data)

    def _unindex(self, sid: int) -> bytes:
        """The oldest waiting message of ``sid`` out of the index (one waits)."""
        by_stream = self.by_stream
        assert by_stream is not None
        q = by_stream[sid]
        if type(q) is list:
            del by_stream[sid]
            return q[0]
        data = q.popleft()
        if not q:
            del by_stream[sid]
        return data

    def take_any(self) -> Optional[Tuple[int, bytes]]:
        order = self.order
        if self.by_stream is None:
            return order.popleft() if order else None
        if not self.n:
            return None
        self.n -= 1
        stale = self.stale
        while order:
            item = order.popleft()
            sid = item[0]
            n = stale.get(sid) if stale else None
            if n:
                if n == 1:
                    del stale[sid]
                else:
                    stale[sid] = n - 1
                self.nstale -= 1
                continue
            self._unindex(sid)
            if not self.n:
                self._plain()
            return item
        return None

    def take_stream(self, sid: int) -> Optional[Tuple[int, bytes]]:
        if self.by_stream is None:
            order = self.order
            for i, item in enumerate(order):
                if item[0] == sid:
                    del order[i]
                    return item
                if i >= self.SCAN:
                    break
            else:
                return None
            self.by_stream = {}
            self.n = len(order)
            for s, data in order:
                self._index(s, data)
        if sid not in self.by_stream:
            return None
        data = self._unindex(sid)
        self.n -= 1
        self._mark_stale(sid, 1)
        return sid, data

    def take_all(self, sid: int) -> List[bytes]:
        """Every waiting message of ``sid``, oldest first, out of the inbox."""
        if self.by_stream is None:
            out = [data for s, data in self.order if s == sid]
            if out:
                self.order = collections.deque(item for item in self.order if item[0] != sid)
            return out
        q = self.by_stream.pop(sid, None)
        if q is None:
            return []
        out = list(q)
        self.n -= len(out)
        self._mark_stale(sid, len(out))
        return out

    def _mark_stale(self, sid: int, n: int) -> None:
        if not self.n:
            self._plain()
            return
        self.stale[sid] = self.stale.get(sid, 0) + n
        self.nstale += n
        if self.nstale > 32 and 2 * self.nstale > len(self.order):
            self.order = collections.deque(_skip_stale(self.order, self.stale))
            self.nstale = 0

    def _plain(self) -> None:
        """Empty: back to a plain queue, without the index."""
        self.order.clear()
        self.by_stream = None
        self.stale.clear()
        self.nstale = 0


def _skip_stale(items: Any, stale: Dict[int, int]) -> Iterator[Tuple[int, bytes]]:
    """``items`` (arrival order) without the entries ``stale`` counts, per stream the oldest
    ones (``stale`` is used up on the way)."""
    for item in items:
        k = stale.get(item[0])
        if k:
            if k == 1:
                del stale[item[0]]
            else:
                stale[item[0]] = k - 1
            continue
        yield item


class StreamReader:
    """Byte-stream reading of one stream (``AsyncConnection.open_stream``): the payloads of the
    peer's messages on that stream, concatenated; EOF when the peer closed its half."""

    def __init__(self, conn: "AsyncConnection", stream_id: int, limit: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._limit = limit
        self._buf = bytearray()
        self._eof = False
        self._exc: Optional[BaseException] = None
        self._want = 0
        self._waiters: List["asyncio.Future[None]"] = []

    def __repr__(self) -> str:
        return f"<StreamReader stream={self.stream_id} buffered={len(self._buf)} eof={self._eof}>"

    # fed by the connection
    def _fill(self, core: Any) -> bool:
        """Move readable bytes out of the core up to the buffer limit; True if any moved."""
        moved = False
        target = max(self._limit, self._want)
        while len(self._buf) < target:
            piece = core.read_message(self.stream_id, min(_PIECE, target - len(self._buf)))
            if piece is None:
                break
            if piece[0]:
                self._buf += piece[0]
                moved = True
        if moved:
            _wake(self._waiters)
        return moved

    def _feed(self, data: bytes) -> None:
        if data:
            self._buf += data
            _wake(self._waiters)

    def _feed_eof(self) -> None:
        if not self._eof:
            self._eof = True
            _wake(self._waiters)

    def _set_exception(self, exc: BaseException) -> None:
        if not self._eof and self._exc is None:
            self._exc = exc
            _wake(self._waiters)

    async def _wait(self) -> None:
        if self._exc is not None and not self._buf:
            raise self._exc
        fut = self._conn._loop.create_future()
        self._waiters.append(fut)
        self._conn._refill(self.stream_id)
        await fut

    def _consumed(self) -> None:
        self._conn._refill(self.stream_id)

    # application side
    def at_eof(self) -> bool:
        """True when the peer ended the stream and every byte was read."""
        return self._eof and not self._buf

    def exception(self) -> Optional[BaseException]:
        return self._exc

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one unless at EOF: then ``b''``); ``n < 0`` reads to EOF."""
        if n == 0:
            return b""
        if n < 0:
            parts: List[bytes] = []
            while True:
                while not self._buf and not self._eof:
                    await self._wait()
                if not self._buf:
                    return b"".join(parts)
                parts.append(bytes(self._buf))
                self._buf.clear()
                self._consumed()
        while not self._buf and not self._eof:
            await self._wait()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._consumed()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``asyncio.IncompleteReadError`` if the stream ends first."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._want = n
        try:
            while len(self._buf) < n:
                if self._eof:
                    partial = bytes(self._buf)
                    self._buf.clear()
                    raise asyncio.IncompleteReadError(partial, n)
                await self._wait()
        finally:
            self._want = 0
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._consumed()
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including ``separator``; ``asyncio.IncompleteReadError`` at EOF,
        ``asyncio.LimitOverrunError`` if none comes within the reader's limit."""
        if not separator:
            raise ValueError("separator must not be empty")
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                end = i + len(separator)
                data = bytes(self._buf[:end])
                del self._buf[:end]
                self._consumed()
                return data
            if len(self._buf) >= self._limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", len(self._buf))
            if self._eof:
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, None)
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._wait()

    async def readline(self) -> bytes:
        """A line ending in ``b"\\n"`` (or the rest of the stream at EOF)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> "StreamReader":
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class StreamWriter:
    """Byte-stream writing on one stream: each ``write`` is one message; ``close`` ends our half
    of the stream (FIN)."""

    def __init__(self, conn: "AsyncConnection", stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._closing = False

    def __repr__(self) -> str:
        return f"<StreamWriter stream={self.stream_id} closing={self._closing}>"

    @property
    def connection(self) -> "AsyncConnection":
        return self._conn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` (the peer's address), ``peer_key`` or ``connection``."""
        if name == "peername":
            return self._conn.peer_address
        if name == "peer_key":
            return self._conn.peer_key
        if name == "connection":
            return self._conn
        return default

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: Any) -> None:
        """Queue ``data`` as one message (empty writes are ignored). Call ``drain()`` next."""
        if self._closing:
            raise ConnectionClosed(f"stream {self.stream_id} is closed for writing")
        view, n = as_buffer(data)
        if n:
            self._conn._queue(self.stream_id, view)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        """Wait while the connection has more than ``send_buffer_limit`` bytes unacknowledged."""
        await self._conn._wait_send_room(0)

    def write_eof(self) -> None:
        self.close()

    def close(self) -> None:
        """End our half of the stream after the queued data (FIN). Idempotent."""
        if self._closing:
            return
        self._closing = True
        conn = self._conn
        if not conn._terminated:
            try:
                conn._core.end_stream(self.stream_id)
            except RuntimeError:
                pass
            conn._driver.schedule()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        """Wait until the peer acknowledged everything written and the FIN (or the connection
        ended)."""
        conn = self._conn
        while not conn._terminated and not conn._core.stream_send_complete(self.stream_id):
            await conn._wait_progress()


# ----------------------------------------------------------------------------------------------
class AsyncConnection:
    """One dquic connection for coroutines (made by ``connect`` and by ``serve``).

    Messages: ``send_message`` / ``receive_message``; byte streams: ``open_stream``;
    unreliable datagrams: ``send_datagram`` / ``receive_datagram``; ``close`` / ``wait_closed``
    (or ``async with``). Failures surface as ``ConnectionClosed``, ``ConnectionTimeout`` or
    ``AuthenticationError`` from every pending and later call.
    """

    # a server holds one per connection: slots instead of a per-instance dict (33 attributes
    # are past what a key-sharing dict holds, so each dict was ~1.2 KB)
    __slots__ = ("_close_task", "_closed", "_closing", "_core", "_datagram_futures",
                 "_datagram_waiters", "_datagrams", "_driver", "_error", "_established", "_held_back",
                 "_linger", "_loop", "_max_message", "_messages", "_msg_waiters", "_need_pull",
                 "_owns_driver", "_partial", "_progress_waiters", "_queued_bytes",
                 "_reader_limit", "_readers", "_receive_buffer", "_send_limit", "_send_waiters",
                 "_staged_bytes", "_stream_errors", "_terminated", "_undelivered", "_wanted",
                 "_was_established", "_writers", "datagrams_dropped", "__weakref__")

    def __init__(self, driver: _Driver, core: Any, options: Dict[str, Any], owns_driver: bool) -> None:
        self._driver = driver
        self._core = core
        self._loop = driver.loop
        self._owns_driver = owns_driver
        self._send_limit = options.get("send_buffer_limit", SEND_BUFFER_LIMIT)
        self._receive_buffer = options.get("receive_buffer", RECEIVE_BUFFER)
        self._max_message = options.get("max_message_size", MAX_MESSAGE_SIZE)
        self._reader_limit = options.get("reader_limit", READER_LIMIT)
        self._linger = float(options.get("linger", LINGER))
        self._established: "asyncio.Future[None]" = self._loop.create_future()
        self._closed: "asyncio.Future[None]" = self._loop.create_future()
        self._error: Optional[BaseException] = None
        self._terminated = False  # the core reported ConnectionTerminated
        self._closing = False  # close() was called
        self._close_task: Optional["asyncio.Task[None]"] = None
        self._undelivered = 0  # bytes a graceful close gave up on (reported by wait_closed)
        self._was_established = False
        # received messages
        # the inbox is made on first use: an empty one costs about a kilobyte, and most of a
        # server's connections are idle with nothing queued
        self._messages: Optional[_Inbox] = None
        self._queued_bytes = 0
        self._partial: Dict[int, bytearray] = {}
        self._staged_bytes = 0
        self._stream_errors: Dict[int, BaseException] = {}
        self._msg_waiters: List["asyncio.Future[None]"] = []
        self._wanted: Dict[int, int] = {}  # stream id -> receive_message(stream_id) calls waiting
        self._need_pull = False
        # the last _pull left whole messages in the core because receive_buffer was full: a
        # take that makes room, or a receive_message for one stream, pulls again
        self._held_back = False
        # byte streams
        self._readers: Dict[int, StreamReader] = {}
        self._writers: Dict[int, StreamWriter] = {}
        # sending
        self._send_waiters: List[Tuple[int, "asyncio.Future[None]"]] = []
        self._progress_waiters: List["asyncio.Future[None]"] = []
        # unreliable datagrams
        self._datagram_futures: Dict[int, "asyncio.Future[bool]"] = {}
        self._datagrams: Any = ()
        self._datagram_waiters: List["asyncio.Future[None]"] = []
        self.datagrams_dropped = 0

    def __repr__(self) -> str:
        state = "closed" if self._terminated else ("open" if self._was_established else "handshake")
        return f"<AsyncConnection {self.peer_address} {state}>"

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        self.close()
        try:
            await self.wait_closed()
        except UndeliveredData:
            if exc_type is None:
                raise  # (with an exception already on its way out, it was logged)

    # properties ------------------------------------------------------------------------------
    @property
    def peer_address(self) -> Tuple:
        """The peer's current address (follows migration)."""
        return normalize_address(self._core.peer_addr)

    @property
    def local_address(self) -> Optional[Tuple]:
        t = self._driver.transport
        return None if t is None else normalize_address(t.get_extra_info("sockname"))

    @property
    def connection_id(self) -> bytes:
        """The connection ID this side issued and the peer currently sends to (a server's
        carries its QUIC-LB server ID when ``server_id`` is set)."""
        return bytes(self._core.host_cid)

    @property
    def peer_key(self) -> Optional[bytes]:
        """The peer's static public key (32 bytes) if the handshake revealed it."""
        return self._core.peer_key

    @property
    def stats(self) -> Any:
        """A ``ConnectionStats`` snapshot (RTT, cwnd, packets sent/lost, retransmissions...)."""
        return self._core.stats

    @property
    def send_buffered(self) -> int:
        """Bytes queued and not yet acknowledged by the peer."""
        return self._core.send_buffered

    @property
    def is_closed(self) -> bool:
        """True once the connection ended or ``close()`` was called."""
        return self._terminated or self._closing

    # events from the driver --------------------------------------------------------------------
    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, MessageReceived):
            self._need_pull = True
        elif isinstance(ev, HandshakeCompleted):
            self._was_established = True
            if not self._established.done():
                self._established.set_result(None)
            server = self._driver.server
            if server is not None:
                server._start_handler(self)
        elif isinstance(ev, DatagramAcknowledged):
            fut = self._datagram_futures.pop(ev.datagram_id, None)
            if fut is not None and not fut.done():
                fut.set_result(True)
        elif isinstance(ev, DatagramLost):
            fut = self._datagram_futures.pop(ev.datagram_id, None)
            if fut is not None and not fut.done():
                fut.set_result(False)
        elif isinstance(ev, DatagramReceived):
            if not self._datagrams:
                self._datagrams = collections.deque()
            elif len(self._datagrams) >= DATAGRAM_QUEUE:
                self._datagrams.popleft()
                self.datagrams_dropped += 1
            self._datagrams.append(ev.data)
            _wake(self._datagram_waiters)
        elif isinstance(ev, (StreamReset, StopSendingReceived)):
            err: BaseException = StreamResetError(ev.stream_id, ev.error_code)
            if isinstance(ev, StreamReset):
                err = self._stream_errors.setdefault(ev.stream_id, err)
                self._drop_partial(ev.stream_id)
                reader = self._readers.get(ev.stream_id)
                if reader is not None:
                    reader._set_exception(err)
                _wake(self._msg_waiters)
        elif isinstance(ev, ConnectionTerminated):
            self._on_terminated(termination_error(ev, self._was_established, self.peer_address))

    def _on_terminated(self, error: BaseException, final: bool = False) -> None:
        if not self._terminated:
            self._terminated = True
            self._error = error
            if not self._established.done():
                self._established.set_exception(error)
                self._established.exception()  # retrieved: no "never retrieved" warning
            self._pull()  # what already arrived stays readable
            for reader in self._readers.values():
                reader._set_exception(error)
            fut: "asyncio.Future[Any]"  # a datagram's, then a send waiter's
            for fut in self._datagram_futures.values():
                if not fut.done():
                    fut.set_result(False)
            self._datagram_futures.clear()
            _wake(self._msg_waiters)
            _wake(self._datagram_waiters)
            _wake(self._progress_waiters)
            for _, fut in self._send_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._send_waiters.clear()
        if final:
            self._finish()

    def _finish(self) -> None:
        """The core is gone: release the connection (and the socket if it is ours)."""
        self._driver.conns.pop(self._core, None)
        if self._owns_driver:
            self._driver.close_transport()
        if not self._closed.done():
            self._closed.set_result(None)

    def _service(self) -> None:
        """Called by the driver after every pass."""
        core = self._core
        if self._need_pull:
            self._need_pull = False
            self._pull()
        if self._readers:
            for sid, reader in self._readers.items():
                if not reader._eof and reader._exc is None:
                    reader._fill(core)
                    if not core.message_ready(sid, 1) and core.stream_finished(sid):
                        reader._feed_eof()
        if self._send_waiters:
            buffered = core.send_buffered
            keep = []
            for threshold, fut in self._send_waiters:
                if buffered <= threshold:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((threshold, fut))
            self._send_waiters = keep
        if self._progress_waiters:
            _wake(self._progress_waiters)
        if self._terminated and (core.close_settled if self._owns_driver else core.close_sent):
            # nothing is owed to the peer any more: the application is done with this
            # connection. An endpoint that keeps its socket keeps the core through its closing
            # period (it answers stray packets, a lost close included); a client that owns its
            # socket releases it once the peer answered the close (close_settled).
            self._finish()

    # receiving messages ------------------------------------------------------------------------
    def _pull(self) -> bool:
        """Move whole messages out of the core while fewer than ``receive_buffer`` bytes wait
        (or while nothing whole waits, so a large message can complete)."""
        core = self._core
        held = False
        if self._readers or self._partial or self._stream_errors:
            moved = False
            for sid in core.readable_streams():
                m, h = self._pull_stream(core, sid)
                moved |= m
                held |= h
        else:
            # the common case in one call: whole messages, stream by stream
            out: List[Tuple[int, bytes]] = []
            msgs = self._messages
            n, rest, held, pending = core.pull_messages(
                out, self._receive_buffer - self._queued_bytes - self._staged_bytes, _PIECE,
                self._wanted or None, not msgs)
            moved = bool(out)
            if out:
                if msgs is None:
                    msgs = self._messages = _Inbox()
                msgs.extend(out)
                self._queued_bytes += n
            if pending:
                # a message waits for its other packets: look again after the next input
                self._need_pull = True
            if rest:
                for sid in rest:  # pieces of messages that cannot complete in the core
                    m, h = self._pull_stream(core, sid)
                    moved |= m
                    held |= h
        self._held_back = held
        if moved:
            _wake(self._msg_waiters)
            if not self._driver._in_run:  # (a pass sees the window update it owes, if any)
                self._driver.schedule()  # reading opened flow-control window
        return moved

    def _pull_stream(self, core: Any, sid: int) -> Tuple[bool, bool]:
        """``_pull`` for one stream: ``(moved, held)``."""
        moved = held = False
        reader = self._readers.get(sid)
        if reader is not None:
            return reader._fill(core), False
        wanted = sid in self._wanted
        while True:
            if not (wanted or self._queued_bytes + self._staged_bytes < self._receive_buffer
                    or not self._messages):
                held = True  # receive_buffer is full: the rest waits in the core
                break
            buf = self._partial.get(sid)
            piece = core.read_message(sid, _PIECE)
            if piece is None:
                break
            data, end = piece
            moved = True
            if sid in self._stream_errors:
                continue  # a stream we stopped: drop what still arrives
            if buf is None and end:
                if self._messages is None:
                    self._messages = _Inbox()
                self._messages.append(sid, data)
                self._queued_bytes += len(data)
                continue
            if buf is None:
                buf = self._partial[sid] = bytearray()
            buf += data
            self._staged_bytes += len(data)
            if len(buf) > self._max_message:
                self._drop_partial(sid)
                self._stream_errors[sid] = MessageTooLarge(sid, self._max_message)
                try:
                    core.stop_sending(sid, ErrorCode.APPLICATION_ERROR)
                except (RuntimeError, ValueError):
                    pass
                continue
            if end:
                del self._partial[sid]
                self._staged_bytes -= len(buf)
                if self._messages is None:
                    self._messages = _Inbox()
                self._messages.append(sid, bytes(buf))
                self._queued_bytes += len(buf)
        return moved, held

    def _drop_partial(self, sid: int) -> None:
        buf = self._partial.pop(sid, None)
        if buf is not None:
            self._staged_bytes -= len(buf)

    def _take(self, stream_id: Optional[int]) -> Optional[Tuple[int, bytes]]:
        msgs = self._messages
        if msgs is None:
            return None
        item: Optional[Tuple[int, bytes]]
        if stream_id is None and msgs.by_stream is None:
            order = msgs.order  # (take_any, without the call)
            if not order:
                return None
            item = order.popleft()
        else:
            item = msgs.take_any() if stream_id is None else msgs.take_stream(stream_id)
            if item is None:
                return None
        self._queued_bytes -= len(item[1])
        if self._held_back and self._queued_bytes < self._receive_buffer:
            self._pull()  # room again for what the last pull left in the core
        return item

    async def receive_message(self, stream_id: Optional[int] = None) -> Any:
        """The next whole message: ``(stream_id, bytes)`` from any stream, or with
        ``stream_id`` the next message of that stream as ``bytes``.

        Waits until one arrives. Raises the connection's error once it ended and nothing is left
        to read, ``StreamResetError`` / ``MessageTooLarge`` for a failed stream.
        """
        if stream_id is not None:
            check_stream_id(stream_id)
            if stream_id in self._readers:
                raise RuntimeError(f"stream {stream_id} is read through its StreamReader")
        while True:
            item = self._take(stream_id)
            if item is not None:
                return item if stream_id is None else item[1]
            if stream_id is not None and stream_id in self._stream_errors:
                raise self._stream_errors[stream_id]
            if self._terminated:
                self._pull()
                item = self._take(stream_id)
                if item is not None:
                    return item if stream_id is None else item[1]
                raise self._error or ConnectionClosed("connection closed")
            fut = self._loop.create_future()
            self._msg_waiters.append(fut)
            if stream_id is not None:
                # the stream's messages are pulled even when others fill receive_buffer
                self._wanted[stream_id] = self._wanted.get(stream_id, 0) + 1
                if self._held_back:
                    self._pull()
            try:
                if not fut.done():
                    await fut
            finally:
                if fut in self._msg_waiters:
                    self._msg_waiters.remove(fut)
                if stream_id is not None:
                    left = self._wanted[stream_id] - 1
                    if left:
                        self._wanted[stream_id] = left
                    else:
                        del self._wanted[stream_id]

    # sending -----------------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._terminated:
            raise self._error or ConnectionClosed("connection closed")
        if self._closing:
            raise ConnectionClosed("connection is closing")

    def _queue(self, stream_id: int, view: Any) -> None:
        self._check_usable()
        try:
            self._core.send_message(stream_id, view)
        except RuntimeError:
            raise ConnectionClosed("connection is closing") from None
        self._driver.send_now()

    async def _wait_send_room(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit under ``send_buffer_limit`` (or nothing is buffered)."""
        threshold = max(0, self._send_limit - nbytes)
        while True:
            if self._terminated:
                raise self._error or ConnectionClosed("connection closed")
            if self._core.send_buffered <= threshold:
                return
            fut = self._loop.create_future()
            self._send_waiters.append((threshold, fut))
            await fut

    async def _wait_progress(self) -> None:
        """Wait for the next driver pass (acknowledgements may have arrived)."""
        fut = self._loop.create_future()
        self._progress_waiters.append(fut)
        await fut

    async def send_message(self, stream_id: int, data: Any) -> int:
        """Queue ``data`` (any bytes-like object) as one message on ``stream_id``; returns its
        length. Waits first while the connection has more than ``send_buffer_limit`` bytes
        unacknowledged, or while the message needs a new stream half and the peer's
        ``max_streams`` are all in use (back-pressure); raises ``DQUICError`` (``ENOBUFS``) if
        the peer allows no stream at all."""
        check_stream_id(stream_id)
        view, n = as_buffer(data)
        self._check_usable()
        core = self._core
        # (the waits are entered only when they may have to wait: most sends need neither)
        if core.send_buffered > max(0, self._send_limit - n):
            await self._wait_send_room(n)
        if core.stream_open_blocked(stream_id):
            await self._wait_stream_credit(stream_id)
        self._queue(stream_id, view)
        return n

    async def _wait_stream_credit(self, stream_id: int) -> None:
        """Wait while a message on ``stream_id`` needs a new stream half and the peer's
        ``max_streams`` are all in use (PROTOCOL.md §16.7); ``DQUICError`` (``ENOBUFS``) if
        the peer allows none at all."""
        core = self._core
        while core.stream_open_blocked(stream_id):
            if self._terminated:
                raise self._error or ConnectionClosed("connection closed")
            if core.peer_allows_no_streams:
                raise DQUICError(errno.ENOBUFS, "the peer allows no streams (its max_streams "
                                                "is 0): no message can be sent")
            await self._wait_progress()

    def open_stream(self, stream_id: int) -> Tuple[StreamReader, StreamWriter]:
        """``(reader, writer)`` for byte-stream use of ``stream_id`` (either side may open any
        id; both sides call this with the same id). Messages of the stream that already arrived
        become the reader's first bytes; from now on the stream's data goes to the reader only."""
        check_stream_id(stream_id)
        if stream_id in self._readers:
            return self._readers[stream_id], self._writers[stream_id]
        reader = StreamReader(self, stream_id, self._reader_limit)
        # a byte stream: its end is the writer's close(), not the moment its data is acknowledged
        self._core.pin_stream(stream_id)
        if self._messages is not None:
            for data in self._messages.take_all(stream_id):
                reader._feed(data)
                self._queued_bytes -= len(data)
        buf = self._partial.get(stream_id)
        if buf is not None:
            reader._feed(bytes(buf))
            self._drop_partial(stream_id)
        if stream_id in self._stream_errors:
            reader._set_exception(self._stream_errors[stream_id])
        self._readers[stream_id] = reader
        writer = self._writers[stream_id] = StreamWriter(self, stream_id)
        self._refill(stream_id)
        return reader, writer

    def _refill(self, stream_id: int) -> None:
        reader = self._readers.get(stream_id)
        if reader is not None and not self._terminated:
            if reader._fill(self._core):
                self._driver.schedule()
            elif not self._core.message_ready(stream_id, 1) and self._core.stream_finished(stream_id):
                reader._feed_eof()
        elif reader is not None:
            reader._fill(self._core)
            if not self._core.message_ready(stream_id, 1):
                if self._core.stream_finished(stream_id):
                    reader._feed_eof()

    def end_stream(self, stream_id: int) -> None:
        """Finish our half of ``stream_id`` (FIN after the queued messages)."""
        check_stream_id(stream_id)
        self._check_usable()
        self._core.end_stream(stream_id)
        self._driver.schedule()

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon our half of ``stream_id``: unsent data is dropped, the peer gets RESET_STREAM."""
        check_stream_id(stream_id)
        self._check_usable()
        self._core.reset_stream(stream_id, error_code)
        self._driver.schedule()

    # unreliable datagrams ------------------------------------------------------------------------
    def send_datagram(self, data: Any) -> "asyncio.Future[bool]":
        """Send an unreliable datagram (RFC 9221). The returned future resolves to True when the
        packet carrying it was acknowledged, False when it was declared lost (or dropped from the
        queue, or the connection ended). ``ValueError`` if it is too large for one packet."""
        view, _ = as_buffer(data)
        self._check_usable()
        did = self._core.send_datagram(view)
        fut: "asyncio.Future[bool]" = self._loop.create_future()
        self._datagram_futures[did] = fut
        self._driver.schedule()
        return fut

    async def receive_datagram(self) -> bytes:
        """The next unreliable datagram received (the newest ``DATAGRAM_QUEUE`` are kept)."""
        while not self._datagrams:
            if self._terminated:
                raise self._error or ConnectionClosed("connection closed")
            fut = self._loop.create_future()
            self._datagram_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._datagram_waiters:
                    self._datagram_waiters.remove(fut)
        return self._datagrams.popleft()

    # closing -------------------------------------------------------------------------------------
    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection: wait (in the background, up to ``linger`` seconds) until queued
        data is acknowledged, then send CONNECTION_CLOSE. Idempotent; ``await wait_closed()``
        next."""
        if self._closing:
            return
        self._closing = True
        if self._terminated:
            return
        self._close_task = self._loop.create_task(self._graceful_close(error_code, reason))

    def abort(self, error_code: int = 0, reason: str = "") -> None:
        """Close now, abandoning unacknowledged data."""
        self._closing = True
        if not self._terminated and not self._core.is_closed:
            self._core.close(error_code, reason)
            self._driver.schedule()

    async def _graceful_close(self, error_code: int, reason: str) -> None:
        try:
            if self._linger > 0 and self._was_established and not error_code:
                deadline = self._loop.time() + self._linger
                if self._core.send_buffered and not self._terminated:
                    self._core.request_ack()  # now, not after the peer's ACK delay
                    self._driver.schedule()
                while (not self._terminated and self._core.send_buffered
                       and self._loop.time() < deadline):
                    fut = self._loop.create_future()
                    self._send_waiters.append((0, fut))
                    handle = self._loop.call_at(deadline, fut.cancel)
                    try:
                        await fut
                    except asyncio.CancelledError:
                        if not fut.cancelled():
                            raise
                    finally:
                        handle.cancel()
        finally:
            if not self._terminated and not self._core.is_closed:
                left = self._core.send_buffered
                if left:
                    self._undelivered = left
                    logger.warning("close() abandoned %d unacknowledged bytes queued for %s "
                                   "(linger %s s)", left, self.peer_address, self._linger)
                self._core.close(error_code, reason)
            self._driver.schedule()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended: our CONNECTION_CLOSE is out (or the peer
        closed it), and the socket is released if the connection owns it.

        Raises ``UndeliveredData`` if ``close()`` gave up on queued data the peer had not
        acknowledged when ``linger`` ran out (``abort()`` abandons it without this report)."""
        await asyncio.shield(self._closed)
        if self._undelivered:
            raise UndeliveredData({self.peer_address: self._undelivered},
                                  f"close() abandoned {self._undelivered} unacknowledged bytes "
                                  f"(linger {self._linger} s)")

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until everything queued has been acknowledged by the peer; ``UndeliveredData``
        if ``timeout`` (seconds) runs out first or the connection ends with data unacknowledged
        (what is still queued stays queued on an open connection)."""
        async def drained() -> None:
            if self._core.send_buffered and not self._terminated:
                self._core.request_ack()  # now, not after the peer's ACK delay
                self._driver.schedule()
            while self._core.send_buffered and not self._terminated:
                fut = self._loop.create_future()
                self._send_waiters.append((0, fut))
                await fut
        try:
            await asyncio.wait_for(drained(), timeout)
        except asyncio.TimeoutError:
            pass
        left = self._core.send_buffered
        if left:
            raise UndeliveredData({self.peer_address: left},
                                  f"{left} bytes not acknowledged "
                                  + ("before the connection ended" if self._terminated else
                                     f"within {timeout} s"))

    async def wait_established(self) -> None:
        """Wait for the handshake (``connect`` already did); raises if it failed."""
        await asyncio.shield(self._established)

