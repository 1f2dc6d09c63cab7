"""The asyncio API: dquic connections as awaitables, with no threads.

``connect`` opens a client connection; ``serve`` runs a server that calls a coroutine per
accepted connection::

    import asyncio, dquic.aio

    async def echo(conn):
        while True:
            stream_id, data = await conn.receive_message()
            await conn.send_message(stream_id, data)

    async def main():
        async with await dquic.aio.serve("127.0.0.1", 4433, echo) as server:
            async with await dquic.aio.connect("127.0.0.1", 4433,
                                               server_key=server.identity.public) as conn:
                await conn.send_message(1, b"hello")
                print(await conn.receive_message(1))

    asyncio.run(main())

Memory is bounded by configuration: received data stays in the core's stream buffers (so the
peer is flow-controlled) until ``receive_buffer`` bytes of whole messages are waiting to be
read; a message is assembled in memory up to ``max_message_size`` (larger ones fail that stream
with ``MessageTooLarge``); ``send_message`` and ``StreamWriter.drain`` wait while more than
``send_buffer_limit`` bytes are unacknowledged.

How it works: ``dquic.aio._driver`` (one socket, its transport and the endpoint, driven in passes
on the loop); the connection and stream objects are in ``dquic.aio._connection``.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from .._app import CONFIG_FIELDS
from ..config import Configuration
from ..endpoint import Endpoint
from ..errors import AuthenticationError, ConnectionClosed, ConnectionTimeout, EndpointClosed, ErrorCode
from ..events import HandshakeFailed
# the options' defaults stay importable from dquic.aio
from ._connection import (DATAGRAM_QUEUE, LINGER, MAX_MESSAGE_SIZE, READER_LIMIT,  # noqa: F401
                          RECEIVE_BUFFER, SEND_BUFFER_LIMIT)
from ._connection import (AsyncConnection, MessageTooLarge, StreamReader, StreamResetError,
                          StreamWriter, logger)
from ._driver import SOCKET_BUFFER  # noqa: F401
from ._driver import _Driver, _open_transport, _resolve, _split_options

__all__ = [
    "connect",
    "open_client",
    "serve",
    "AsyncConnection",
    "Client",
    "Server",
    "StreamReader",
    "StreamWriter",
    "StreamResetError",
    "MessageTooLarge",
]

# ----------------------------------------------------------------------------------------------
async def _handshake(driver: _Driver, endpoint: Endpoint, addr: Tuple, cfg: Configuration,
                     driver_opts: Dict[str, Any], owns_driver: bool) -> AsyncConnection:
    """Open a connection on ``driver`` and wait for its handshake; on failure the connection
    (and the socket, if it is the connection's own) is released and the error raised."""
    core = endpoint.connect(addr, driver.loop.time(), cfg)
    conn = AsyncConnection(driver, core, driver_opts, owns_driver=owns_driver)
    driver.conns[core] = conn
    driver.schedule()
    # the core's handshake timer normally decides; this only bounds a stuck loop. (The future
    # is awaited directly, not through wait_for and shield: the caller resumes in the loop
    # iteration after the handshake completes, so its first message leaves with the
    # acknowledgement that ends the handshake, which the driver holds for that iteration.)
    fut = conn._established
    bound = driver.loop.call_later(cfg.handshake_timeout + 2.0, _expire, fut)
    try:
        await fut
    except asyncio.TimeoutError:
        conn.abort()
        if owns_driver:
            driver.close_transport()
        raise ConnectionTimeout(errno.ETIMEDOUT, f"handshake with {addr} timed out") from None
    except BaseException:
        conn.abort()
        if owns_driver:
            driver.close_transport()
        raise
    finally:
        bound.cancel()
    return conn


def _expire(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


async def connect(host: str, port: int, **options: Any) -> AsyncConnection:
    """Open a connection to ``(host, port)`` and complete the handshake.

    ``options`` are ``Configuration`` fields (``server_key`` to pin the server, ``identity``,
    ``handshake_timeout``, ``idle_timeout``, ``encryption``, ``qlog_dir``, ...) and the driver's
    ``send_buffer_limit``, ``receive_buffer``, ``max_message_size``, ``reader_limit``,
    ``linger``, ``socket_buffer``. Raises ``ConnectionTimeout`` when the server does not answer
    within ``handshake_timeout``, ``AuthenticationError`` when keys do not match.

    The connection has a UDP socket of its own; ``open_client`` gives one socket for many.
    """
    loop = asyncio.get_running_loop()
    cfg, driver_opts = _split_options(dict(options), is_client=True)
    family, addr = await _resolve(loop, host, port, passive=False)
    endpoint = Endpoint(cfg, accept=False)
    driver = _Driver(endpoint, loop, driver_opts)
    local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    await _open_transport(loop, driver, family, local)
    return await _handshake(driver, endpoint, addr, cfg, driver_opts, owns_driver=True)


class Client:
    """One UDP socket from which any number of connections are opened (``open_client``).

    Connections share the socket, the event-loop reader and the endpoint's timers, so opening
    one costs a handshake and no socket; each ends on its own (``close``/``wait_closed``) and
    the socket stays until the client is closed. Unlike a ``Server`` it accepts nothing.
    """

    def __init__(self, driver: _Driver, config: Configuration, driver_opts: Dict[str, Any],
                 family: int) -> None:
        self._driver = driver
        self._config = config
        self._driver_opts = driver_opts
        self._family = family
        self._closing = False

    def __repr__(self) -> str:
        return f"<dquic.aio.Client {self.local_address} connections={len(self.connections)}>"

    @property
    def local_address(self) -> Tuple:
        """The socket's ``(host, port)``."""
        return self._driver.sockname()

    @property
    def connections(self) -> List[AsyncConnection]:
        """Live connections (handshaking ones included)."""
        return self._driver.live_connections()

    async def connect(self, host: str, port: int, **options: Any) -> AsyncConnection:
        """Open a connection to ``(host, port)`` from this socket and complete the handshake.

        ``options`` are ``Configuration`` fields that differ for this connection from those
        given to ``open_client`` (``server_key``, ``trusted_peers``, ``handshake_timeout``,
        ...); the socket and driver options are the client's. Raises as ``dquic.aio.connect``.
        """
        if self._closing:
            raise EndpointClosed()
        unknown = set(options) - CONFIG_FIELDS
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        cfg = self._config.copy(**options) if options else self._config
        if options:
            cfg.validate()
        family, addr = await _resolve(self._driver.loop, host, port, passive=False)
        if family != self._family:
            raise ValueError(f"{host!r} is not reachable from this client's "
                             f"{'IPv6' if self._family == socket.AF_INET6 else 'IPv4'} socket")
        return await _handshake(self._driver, self._driver.endpoint, addr, cfg,
                                self._driver_opts, owns_driver=False)

    def close(self) -> None:
        """Close every connection (each flushes its queued data first, up to its linger time).
        ``await wait_closed()`` next."""
        if self._closing:
            return
        self._closing = True
        for conn in list(self._driver.conns.values()):
            conn.close()

    async def wait_closed(self) -> None:
        """Wait until every connection ended, then release the socket."""
        await self._driver.wait_connections()
        await self._driver.release()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()


async def open_client(host: str = "0.0.0.0", port: int = 0, **options: Any) -> Client:
    """A ``Client``: one UDP socket bound to ``(host, port)`` (by default any IPv4 address and a
    free port; ``"::"`` for IPv6) for opening many connections, each with
    ``await client.connect(host, port)``.

    ``options`` as for ``connect``: ``Configuration`` fields every connection starts from (a
    ``connect`` call may change some) and the driver's options.
    """
    loop = asyncio.get_running_loop()
    cfg, driver_opts = _split_options(dict(options), is_client=True)
    family, local = await _resolve(loop, host, port, passive=True)
    endpoint = Endpoint(cfg, accept=False)
    driver = _Driver(endpoint, loop, driver_opts)
    await _open_transport(loop, driver, family, local)
    return Client(driver, cfg, driver_opts, family)


class Server:
    """A running ``serve``: one UDP socket accepting connections; ``handler(conn)`` runs per
    established connection and the connection is closed when it returns."""

    def __init__(self, handler: Callable[[AsyncConnection], Awaitable[Any]], config: Configuration,
                 on_handshake_failed: Optional[Callable[[HandshakeFailed], Any]] = None) -> None:
        self._handler = handler
        self._on_handshake_failed = on_handshake_failed
        #: connections whose handshake failed (refused clients, clients that refused this
        #: server, malformed or abandoned handshakes): they never reached the handler
        self.handshake_failures = 0
        self._config = config
        self._driver: Optional[_Driver] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._closing = False
        self.handler_errors = 0

    def __repr__(self) -> str:
        return f"<dquic.aio.Server {self.address} connections={len(self.connections)}>"

    @property
    def address(self) -> Tuple:
        """The bound ``(host, port)``."""
        assert self._driver is not None
        return self._driver.sockname()

    @property
    def identity(self) -> Any:
        """The server's ``KeyPair`` (generated if none was given)."""
        return self._config.identity

    @property
    def connections(self) -> List[AsyncConnection]:
        """Live connections (handshaking ones included)."""
        return self._driver.live_connections() if self._driver else []

    def is_serving(self) -> bool:
        return not self._closing

    def _handshake_failed(self, ev: HandshakeFailed) -> None:
        self.handshake_failures += 1
        callback = self._on_handshake_failed
        if callback is None:
            return
        try:
            result = callback(ev)
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:  # a report must never break the server
            logger.exception("dquic.aio on_handshake_failed callback failed")

    def _start_handler(self, conn: AsyncConnection) -> None:
        if self._closing:
            conn.abort()
            return
        task = asyncio.get_running_loop().create_task(self._run_handler(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, conn: AsyncConnection) -> None:
        try:
            await self._handler(conn)
        except (ConnectionClosed, ConnectionTimeout, AuthenticationError, StreamResetError):
            pass  # the connection ended under the handler: nothing to report
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception:
            self.handler_errors += 1
            logger.exception("dquic.aio handler failed for %s", conn.peer_address)
            conn.abort(ErrorCode.APPLICATION_ERROR, "handler failed")
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close every connection (each flushes its queued data first, up
        to its linger time). ``await wait_closed()`` next."""
        if self._closing:
            return
        self._closing = True
        if self._driver is not None:
            self._driver.endpoint.accept = False
            for conn in list(self._driver.conns.values()):
                conn.close()

    async def wait_closed(self) -> None:
        """Wait until every connection ended and handlers finished, then release the socket."""
        driver = self._driver
        if driver is None:
            return
        await driver.wait_connections()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await driver.release()

    async def serve_forever(self) -> None:
        """Wait until the server is closed (by ``close()`` from elsewhere)."""
        assert self._driver is not None
        await asyncio.shield(self._driver.lost)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()


async def serve(host: str, port: int, handler: Callable[[AsyncConnection], Awaitable[Any]],
                *, max_connections: int = 4096,
                on_handshake_failed: Optional[Callable[[HandshakeFailed], Any]] = None,
                **options: Any) -> Server:
    """Listen on ``(host, port)`` (port 0 picks a free one: see ``Server.address``) and run
    ``await handler(conn)`` for each connection once its handshake completed.

    ``options`` as for ``connect``; a server without ``identity`` generates a key pair
    (``Server.identity``); ``trusted_peers`` restricts clients to those keys.

    A connection whose handshake fails never reaches ``handler``: ``on_handshake_failed(event)``
    is called instead (from the event loop; a coroutine it returns is run as a task) with a
    ``dquic.events.HandshakeFailed``: the peer's ``address``, ``reason``, ``error_code``,
    ``by_peer`` (the client refused this server), ``timeout``, and ``peer_key``, the static
    key the client presented (for a client refused by ``trusted_peers``, the refused key).
    ``Server.handshake_failures`` counts them; each is also logged at INFO on the
    ``dquic.connection`` logger.
    """
    loop = asyncio.get_running_loop()
    cfg, driver_opts = _split_options(dict(options), is_client=False)
    family, addr = await _resolve(loop, host, port, passive=True)
    server = Server(handler, cfg, on_handshake_failed)
    endpoint = Endpoint(cfg, accept=True, max_connections=max_connections)
    driver = _Driver(endpoint, loop, driver_opts, server=server)
    server._driver = driver
    await _open_transport(loop, driver, family, addr)
    return server
