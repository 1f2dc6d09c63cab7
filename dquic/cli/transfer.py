"""The ``serve`` and ``send`` commands: file transfer over the asyncio API.

File transfer protocol (``serve`` / ``send``)
---------------------------------------------
Everything travels as dquic messages. The sender uses one stream per file (stream ids 1, 2, ...
in command-line order) and closes the connection when every file has a verdict.

1. Sender -> receiver, first message on the stream: a JSON header
   ``{"name": <base name>, "size": <bytes>, "sha256": <hex digest of the whole file>}``.
2. Receiver -> sender, first answer on the same stream: ``{"offset": <n>}``. The receiver writes
   into ``<name>.part`` in its output directory; if a ``.part`` from an earlier attempt exists
   and is not longer than the file, ``n`` is its size (the bytes it already has), otherwise 0 and
   the ``.part`` starts empty. A header the receiver refuses is answered with
   ``{"ok": false, "error": <text>}`` instead, which ends the exchange on that stream. A file
   ``<name>`` already in the directory: if it has the announced size and SHA-256, the answer is
   ``{"offset": <size>}`` followed at once by the verdict ``{"ok": true, "sha256": <hex>,
   "already": true}`` (nothing travels; a sender whose verdict was lost can simply send again);
   a different file is refused unless ``serve`` runs with ``--overwrite`` (it is then replaced,
   by the rename of step 4, only once the new file verified).
3. Sender -> receiver: the file's bytes from offset ``n`` on, as data messages of at most 1 MiB.
4. Receiver -> sender, once ``size`` bytes are in the ``.part``: the verdict
   ``{"ok": true, "sha256": <hex>}`` after the SHA-256 of the *whole* ``.part`` matched the header
   and it was renamed to ``<name>``, or ``{"ok": false, "error": <text>}`` (the ``.part`` is then
   deleted, so the next attempt starts from scratch).

So nothing is ever lost: an interrupted transfer resumes where the receiver's ``.part`` ends, and
a file only gets its final name once its digest verified. Names are base names only (no
directories, no leading dot); headers are at most 64 KiB.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import json
import os
import socket
import stat
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from ._common import (EXIT_FAILURE, EXIT_OK, EXIT_USAGE, KiB, MiB, CommandFailed, _b64,
                      _connection_exit, _mbit, _ms, _Progress, _size, _strerror)
from .keyfiles import _load_keypair, _parse_keys

#: Data message size of the file transfer protocol.
CHUNK = 1 * MiB
#: Largest header / answer message accepted by ``serve`` / ``send``.
MAX_CONTROL_MESSAGE = 64 * KiB


def _json_message(data: bytes) -> Dict[str, Any]:
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ValueError("control message too large")
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("control message is not a JSON object")
    return obj


def _encode(obj: Dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _check_name(name: Any) -> str:
    """A received file name: a plain base name (no directories, no leading dot)."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ValueError("bad file name")
    if (name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
            or "\x00" in name or any(ord(c) < 32 for c in name)):
        raise ValueError(f"refused file name {name!r}")
    return name


def _sha256_file(path: str, limit: Optional[int] = None) -> "hashlib._Hash":
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h


class _Incoming:
    """One file being received on one stream.

    The constructor (on the event loop) checks the header and claims the name; ``prepare()``
    (off the loop: it may hash a large file) looks at what the directory already holds and
    opens the ``.part``."""

    def __init__(self, directory: str, header: Dict[str, Any], busy: set,
                 overwrite: bool = False) -> None:
        self.name = _check_name(header.get("name"))
        size = header.get("size")
        digest = header.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < (1 << 50):
            raise ValueError("bad size")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError("bad sha256")
        try:
            bytes.fromhex(digest)
        except ValueError:
            raise ValueError("bad sha256") from None
        if self.name in busy:
            raise ValueError(f"{self.name} is being received on another stream")
        self.size = size
        self.expected = digest.lower()
        self.overwrite = overwrite
        self.final = os.path.join(directory, self.name)
        self.part = self.final + ".part"
        self.offset = self.received = 0
        self.hash: Any = None
        self.file: Any = None
        self.busy = busy
        busy.add(self.name)

    def _exists_error(self) -> ValueError:
        return ValueError(f"{self.name} already exists on the receiver with different content "
                          "(it was kept; start 'dquic serve' with --overwrite to replace files, or "
                          "rename the file)")

    def prepare(self) -> bool:
        """Open the ``.part`` (resuming where an earlier attempt left it) and hash what it holds.
        True instead when the directory already holds this very file (same size and SHA-256):
        nothing needs to travel. A different file of that name is refused (``ValueError``)
        unless ``overwrite``. Releases the name if it raises."""
        try:
            if os.path.lexists(self.final):
                if not os.path.isfile(self.final):
                    raise ValueError(f"{self.name} exists on the receiver and is not a regular file")
                if (os.path.getsize(self.final) == self.size
                        and _sha256_file(self.final).hexdigest() == self.expected):
                    self.busy.discard(self.name)
                    return True
                if not self.overwrite:
                    raise self._exists_error()
            have = os.path.getsize(self.part) if os.path.isfile(self.part) else 0
            if have > self.size:
                have = 0
            self.offset = self.received = have
            self.file = open(self.part, "r+b" if have else "wb")
            self.file.seek(have)
            self.file.truncate()
            # the hash of what an earlier attempt left
            self.hash = _sha256_file(self.part, have) if have else hashlib.sha256()
            return False
        except BaseException:
            self.close()
            raise

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.size:
            raise ValueError("more data than the announced size")
        self.file.write(data)
        self.file.flush()  # what arrived survives an interruption: the next attempt resumes
        self.hash.update(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.received >= self.size

    @property
    def closed(self) -> bool:
        return self.file is None or self.file.closed

    def finish(self) -> Dict[str, Any]:
        """Verify the whole ``.part`` and rename it; the verdict to send."""
        self.close()
        digest = self.hash.hexdigest()
        if digest != self.expected:
            os.unlink(self.part)
            return {"ok": False, "error": f"sha256 mismatch (got {digest})"}
        if not self.overwrite and os.path.lexists(self.final):
            # appeared while the file travelled: keep both (the verified .part resumes, in full,
            # once the other file is out of the way or with --overwrite)
            return {"ok": False, "error": str(self._exists_error())}
        os.replace(self.part, self.final)
        return {"ok": True, "sha256": digest}

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        self.busy.discard(self.name)


async def _receive_files(conn: Any, directory: str, out: TextIO, busy: set,
                         overwrite: bool = False) -> Tuple[int, int]:
    """Serve one sender's connection; returns ``(files verified, files failed)``."""
    from ..errors import DQUICError

    files: Dict[int, Optional[_Incoming]] = {}
    inc: Optional[_Incoming]
    ok = failed = 0
    peer = _where(*conn.peer_address[:2])
    try:
        while True:
            try:
                sid, data = await conn.receive_message()
            except DQUICError as exc:
                ended = _connection_ended(exc)
                if ended:
                    out.write(f"connection from {peer} ended: {ended}\n")
                    out.flush()
                break
            if sid not in files:
                files[sid] = None  # until the header was accepted: ignore the stream's data
                try:
                    inc = _Incoming(directory, _json_message(data), busy, overwrite)
                    # disk reads and hashing off the event loop: other connections go on
                    already = await asyncio.to_thread(inc.prepare)
                except (ValueError, OSError) as exc:
                    failed += 1
                    error = _strerror(exc) if isinstance(exc, OSError) else str(exc)
                    out.write(f"refused a file from {peer}: {error}\n")
                    out.flush()
                    await conn.send_message(sid, _encode({"ok": False, "error": error}))
                    continue
                if already:
                    ok += 1
                    out.write(f"already had {inc.name} ({inc.size} bytes, sha256 verified): "
                              f"nothing to receive from {peer}\n")
                    out.flush()
                    await conn.send_message(sid, _encode({"offset": inc.size}))
                    await conn.send_message(sid, _encode({"ok": True, "sha256": inc.expected,
                                                          "already": True}))
                    continue
                files[sid] = inc
                await conn.send_message(sid, _encode({"offset": inc.offset}))
                if not inc.complete:
                    continue
            else:
                inc = files[sid]
                if inc is None or inc.closed:
                    continue  # after a verdict: ignore
                try:
                    inc.write(data)
                except (ValueError, OSError) as exc:
                    inc.close()
                    failed += 1
                    error = (f"cannot write {inc.name}.part: {_strerror(exc)}"
                             if isinstance(exc, OSError) else str(exc))
                    out.write(f"FAILED {inc.name} from {peer}: {error}\n")
                    out.flush()
                    await conn.send_message(sid, _encode({"ok": False, "error": error}))
                    continue
                if not inc.complete:
                    continue
            try:
                verdict = await asyncio.to_thread(inc.finish)  # fsync and rename off the loop
            except OSError as exc:  # the .part stays: a later attempt verifies it again
                verdict = {"ok": False, "error": f"cannot store {inc.name}: {_strerror(exc)}"}
            resumed = f", resumed at {inc.offset} bytes" if inc.offset else ""
            if verdict["ok"]:
                ok += 1
                out.write(f"received {inc.name} ({inc.size} bytes, sha256 verified{resumed}) "
                          f"from {peer}\n")
            else:
                failed += 1
                out.write(f"FAILED {inc.name} from {peer}: {verdict['error']}\n")
            out.flush()
            await conn.send_message(sid, _encode(verdict))
    finally:
        for inc in files.values():
            if inc is not None and not inc.closed:
                inc.close()  # keep the .part: the sender can resume
                failed += 1
                out.write(f"incomplete {inc.name}: {inc.received} of {inc.size} bytes kept in "
                          f"{inc.name}.part\n")
                out.flush()
    return ok, failed


def _connection_ended(exc: BaseException) -> Optional[str]:
    """Why a client's connection ended, for the server's log; None for a clean close."""
    from ..errors import ConnectionClosed, ConnectionTimeout

    if isinstance(exc, ConnectionTimeout):
        return "the client stopped answering (idle timeout)"
    if isinstance(exc, ConnectionClosed):
        if not exc.error_code:
            return None
        return f"closed with error {exc.error_code}" + (f" ({exc.reason})" if exc.reason else "")
    return _strerror(exc) if isinstance(exc, OSError) else str(exc)


def _refusal(reason: str, by_peer: bool, key: Optional[bytes], server_key: str) -> str:
    """A refused handshake, for the server's log: what happened and what would fix it."""
    if by_peer:
        return (f"the client does not accept this server's key (its --server-key or --trust must "
                f"be {server_key})")
    if "client identity required" in reason:
        return ("it presented no key, and only clients on the --trust list are accepted (a "
                "client sends with --key KEYFILE)")
    if "client static key is not trusted" in reason:
        if key:
            return f"its key {_b64(key)} is not on the --trust list (add it with --trust to accept it)"
        return "its key is not on the --trust list"
    if "failed authentication" in reason:
        return (f"it expects another server key (its --server-key or --trust is not this "
                f"server's key {server_key})")
    return f"handshake failed ({reason})"


def run_serve(args: argparse.Namespace, out: TextIO) -> int:
    """The ``serve`` command: receive files until interrupted (or one connection with --once)."""
    identity = _load_keypair(args.key) if args.key else None
    trusted = _parse_keys(args.trust)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise CommandFailed(f"cannot create the output directory {args.out}: {_strerror(exc)}",
                            EXIT_USAGE) from None
    if args.workers > 1:
        if args.once:
            raise CommandFailed("--once serves one connection: it takes no --workers", EXIT_USAGE)
        return _serve_workers(args, out, identity, trusted)
    try:
        return asyncio.run(_serve(args, out, identity, trusted))
    except KeyboardInterrupt:  # the usual way to stop a server
        out.write("stopped\n")
        return EXIT_OK


async def _serve(args: argparse.Namespace, out: TextIO, identity: Any, trusted: Any) -> int:
    from .. import aio

    loop = asyncio.get_running_loop()
    first: "asyncio.Future[Tuple[int, int]]" = loop.create_future()
    busy: set = set()

    async def handler(conn: Any) -> None:
        peer = conn.peer_address
        out.write(f"connection from {_where(*peer[:2])}"
                  + (f" (key {_b64(conn.peer_key)})" if conn.peer_key else "") + "\n")
        out.flush()
        result = await _receive_files(conn, args.out, out, busy, args.overwrite)
        if not first.done():
            first.set_result(result)

    server_key = ""  # known once the server is up (before any client can be refused)

    def refused(ev: Any) -> None:
        """A client's handshake failed: say who, which key, and what would fix it (timeouts
        of half-open handshakes are not reported: anybody can start one)."""
        from .._socket import normalize_address
        from ..errors import ErrorCode

        if ev.timeout or ev.application or ev.error_code not in (
                ErrorCode.HANDSHAKE_FAILED, ErrorCode.AUTHENTICATION_FAILED):
            return
        where = _where(*normalize_address(ev.address)[:2])
        why = _refusal(ev.reason, ev.by_peer, ev.peer_key, server_key)
        out.write(f"handshake with {where} failed: {why}\n" if ev.by_peer
                  else f"refused client {where}: {why}\n")
        out.flush()

    options: Dict[str, Any] = {"idle_timeout": args.idle_timeout, "on_handshake_failed": refused}
    if identity is not None:
        options["identity"] = identity
    if trusted:
        options["trusted_peers"] = trusted
    if args.qlog:
        options["qlog_dir"] = args.qlog
    hosts = [args.host] if args.host is not None else _wildcard_hosts()
    for i, host in enumerate(hosts):
        try:
            server = await aio.serve(host, args.port, handler, **options)
            break
        except OSError as exc:
            # no IPv6 here after all: the IPv4 wildcard (a port in use stays an error)
            if i + 1 < len(hosts) and exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise CommandFailed(_listen_error(exc, host, args.port), EXIT_USAGE) from None
    server_key = server.identity.public_b64
    async with server:
        host, port = server.address[:2]
        out.write(f"listening on {_where(host, port)}, server key {server_key}\n")
        wildcard = host in ("::", "0.0.0.0")
        target = f"HOST:{port}" if wildcard else _where(host, port)
        hint = f"send files here with: dquic send {target} FILE... --server-key {server_key}"
        if trusted:
            hint += " --key KEYFILE"
        if wildcard:
            hint += ("  (HOST: a name or address of this machine; it listens on all of them"
                     + (", IPv4 and IPv6)" if host == "::" else ")"))
        out.write(hint + "\n")
        out.flush()
        if not args.once:
            await server.serve_forever()
            return EXIT_OK
        ok, failed = await first
    return EXIT_OK if ok and not failed else EXIT_FAILURE


def _serve_workers(args: argparse.Namespace, out: TextIO, identity: Any, trusted: Any) -> int:
    """``serve --workers N``: the same receiver in N processes on one port (dquic.workers)."""
    from ..keys import KeyPair
    from ..workers import WorkerPool

    async def handler(conn: Any) -> None:  # runs in the worker that holds the connection
        peer = conn.peer_address
        out.write(f"[worker {os.getpid()}] connection from {_where(*peer[:2])}"
                  + (f" (key {_b64(conn.peer_key)})" if conn.peer_key else "") + "\n")
        out.flush()
        await _receive_files(conn, args.out, out, set(), args.overwrite)

    options: Dict[str, Any] = {"idle_timeout": args.idle_timeout,
                               "identity": identity or KeyPair.generate()}
    if trusted:
        options["trusted_peers"] = trusted
    if args.qlog:
        options["qlog_dir"] = args.qlog
    hosts = [args.host] if args.host is not None else _wildcard_hosts()
    pool = None
    for i, host in enumerate(hosts):
        try:
            pool = WorkerPool((host, args.port), args.workers, handler, **options).start()
            break
        except OSError as exc:
            if i + 1 < len(hosts) and exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise CommandFailed(_listen_error(exc, host, args.port), EXIT_USAGE) from None
    assert pool is not None
    try:
        host, port = pool.address[:2]
        server_key = options["identity"].public_b64
        how = ("steered by connection ID" if pool.steering
               else "the kernel refused steering: one worker")
        out.write(f"listening on {_where(host, port)} with {pool.workers} workers ({how}), "
                  f"server key {server_key}\n")
        target = f"HOST:{port}" if host in ("::", "0.0.0.0") else _where(host, port)
        out.write(f"send files here with: dquic send {target} FILE... --server-key {server_key}"
                  + (" --key KEYFILE" if trusted else "") + "\n")
        out.flush()
        pool.serve_forever()
        out.write("stopped\n")
    finally:
        pool.close()
    return EXIT_OK


def _wildcard_hosts() -> List[str]:
    """What ``serve`` binds without ``--host``, in order of preference: ``::`` (every IPv6
    address and, dual stack, every IPv4 one) where a socket can do both, else ``0.0.0.0``.
    Not on Windows, whose event loop would bind an IPv6-only socket."""
    try:
        dual = sys.platform != "win32" and socket.has_ipv6 and socket.has_dualstack_ipv6()
    except OSError:
        dual = False
    return ["::", "0.0.0.0"] if dual else ["0.0.0.0"]


def _listen_error(exc: OSError, host: str, port: int) -> str:
    where = _where(host, port)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r} (--host takes a name or address of this machine)"
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: the port is in use (another 'dquic serve'? choose "
                "another --port, or --port 0 for a free one)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied (ports below 1024 need "
                "privileges: choose --port 1024 or above)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {host} is not an address of this machine (leave "
                "out --host to listen on all of them)")
    return f"cannot listen on {where}: {_strerror(exc)}"


def run_send(args: argparse.Namespace, out: TextIO) -> int:
    """The ``send`` command: send files, wait for each verdict."""
    identity = _load_keypair(args.key) if args.key else None
    trusted = _parse_keys(args.trust)
    server_keys = _parse_keys([args.server_key]) if args.server_key else None
    server_key = server_keys[0] if server_keys else None
    names = set()
    for path in args.files:
        _check_source(path)
        name = os.path.basename(path)
        try:
            _check_name(name)
        except ValueError as exc:
            raise CommandFailed(f"{path}: {exc}", EXIT_USAGE) from None
        if name in names:
            raise CommandFailed(f"two files named {name}", EXIT_USAGE)
        names.add(name)
    phase = {"connected": False}
    try:
        return asyncio.run(_send(args, out, identity, trusted, server_key, phase))
    except (CommandFailed, KeyboardInterrupt):
        raise
    except Exception as exc:
        message = _explain_send_error(exc, args, identity, phase["connected"])
        if message is None:
            raise
        out.flush()
        raise CommandFailed(message, _connection_exit(exc)) from None


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _explain_send_error(exc: BaseException, args: argparse.Namespace, identity: Any,
                        connected: bool) -> Optional[str]:
    """A sentence for an error a user can cause while sending (None: not one of those)."""
    from ..errors import AuthenticationError, ConnectionClosed, ConnectionTimeout

    host, port = args.target
    where = _where(host, port)
    again = "; run the same command again to resume where it stopped"
    if isinstance(exc, socket.gaierror):
        return f"connection failed: cannot resolve host {host!r} (check the name, or give an IP address)"
    if isinstance(exc, AuthenticationError):
        text = str(exc)
        if "client identity required" in text:
            return ("connection failed: the server refused this client: it accepts only clients "
                    "on its trust list, and this client has no key (create one with 'dquic keygen "
                    "client.key', send with --key client.key, and start the server with --trust "
                    "<the public key keygen printed>)")
        if "client static key is not trusted" in text:
            mine = identity.public_b64 if identity is not None else "<this client's public key>"
            return ("connection failed: the server refused this client: its key is not on the "
                    f"server's trust list (start the server with --trust {mine})")
        if args.server_key and "authentication" in text:
            return ("connection failed: the server's key does not match --server-key (the server "
                    "prints its key when it starts: check for a typo, or whether it was restarted "
                    "without --key and so has a new key)")
        if args.trust and ("authentication" in text or "server static key" in text):
            return ("connection failed: the server's key is not one of the --trust keys (the "
                    "server prints its key when it starts)")
        return f"connection failed: authentication with {where} failed ({text.rpartition('failed: ')[2]})"
    if isinstance(exc, ConnectionRefusedError):
        return (f"connection failed: no dquic server answered at {where} (connection refused: "
                f"nothing listens on UDP port {port} there; is 'dquic serve --port {port}' running?)")
    if isinstance(exc, ConnectionTimeout) or (isinstance(exc, TimeoutError) and not connected):
        if not connected:
            return (f"connection failed: no dquic server answered at {where} within "
                    f"{args.timeout:g} s (handshake timeout: is 'dquic serve --port {port}' "
                    "running there, and does every firewall on the way let UDP through? "
                    "--timeout waits longer)")
        return f"connection failed: the server at {where} stopped answering (idle timeout){again}"
    if isinstance(exc, ConnectionClosed):
        reason = f" ({exc.reason})" if getattr(exc, "reason", "") else ""
        return f"connection failed: the server at {where} closed the connection{reason}{again}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"connection failed: cannot reach {where}: {_strerror(exc)}"
    if isinstance(exc, ValueError) and connected:  # a malformed answer
        return f"the receiver at {where} sent an answer this sender cannot read ({exc}): is it 'dquic serve'?"
    return None


async def _show_progress(progress: _Progress, done: Callable[[], int]) -> None:
    """Feed ``progress`` a few times a second (also while the last bytes are in flight)."""
    while True:
        progress.update(done())
        await asyncio.sleep(0.25)


def _check_source(path: str) -> None:
    """A file to send must exist, be a regular file and be readable: else a usage error that
    says which of these it is not."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise CommandFailed(f"no such file: {path} (a link to a file that does not exist)",
                                EXIT_USAGE) from None
        raise CommandFailed(f"no such file: {path}", EXIT_USAGE) from None
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {_strerror(exc)}", EXIT_USAGE) from None
    if stat.S_ISDIR(st.st_mode):
        raise CommandFailed(f"{path} is a directory: send the files in it (for example "
                            f"{os.path.join(path, '*')})", EXIT_USAGE)
    if not stat.S_ISREG(st.st_mode):
        raise CommandFailed(f"not a regular file: {path} (a device, pipe or socket)", EXIT_USAGE)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {_strerror(exc)}", EXIT_USAGE) from None


async def _send(args: argparse.Namespace, out: TextIO, identity: Any, trusted: Any,
                server_key: Any, phase: Dict[str, bool]) -> int:
    from .. import aio
    from ..errors import DQUICError

    host, port = args.target
    options: Dict[str, Any] = {"handshake_timeout": args.timeout}
    if identity is not None:
        options["identity"] = identity
    if trusted:
        options["trusted_peers"] = trusted
    if server_key is not None:
        options["server_key"] = server_key
    if args.qlog:
        options["qlog_dir"] = args.qlog
    plan = []
    for path in args.files:
        try:
            size = os.path.getsize(path)
            plan.append((path, os.path.basename(path), size, _sha256_file(path).hexdigest()))
        except OSError as exc:
            raise CommandFailed(f"cannot read {path}: {_strerror(exc)}", EXIT_USAGE) from None
    conn = await aio.connect(host, port, **options)
    phase["connected"] = True
    if server_key is None and not trusted:
        key = _b64(conn.peer_key) if conn.peer_key else "KEY"
        sys.stderr.write(
            "dquic send: warning: the server's identity is not verified (no --server-key or "
            f"--trust): whoever can intercept the traffic could pose as {_where(host, port)} and "
            f"receive the files. The server presented the key {key}; if that is the key "
            f"'dquic serve' printed when it started, pin it with --server-key {key}\n")
        sys.stderr.flush()
    failures = 0
    t0 = time.monotonic()
    moved = 0
    try:
        for i, (path, name, size, digest) in enumerate(plan):
            sid = i + 1
            await conn.send_message(sid, _encode({"name": name, "size": size, "sha256": digest}))
            answer = _json_message(await conn.receive_message(sid))
            offset = answer.get("offset")
            if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
                failures += 1
                out.write(f"FAILED {name}: refused by the receiver: {answer.get('error', answer)}\n")
                out.flush()
                continue
            progress = _Progress(size, name, start=offset, enabled=not args.no_progress)
            sent = [offset]  # bytes queued so far; acknowledged ones are shown
            ticker = asyncio.get_running_loop().create_task(_show_progress(
                progress, lambda: max(offset, min(size, sent[0] - conn.send_buffered))))
            problem = None
            try:
                try:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        while sent[0] < size:
                            block = f.read(min(CHUNK, size - sent[0]))
                            if not block:
                                problem = "the file shrank while it was being sent"
                                break
                            await conn.send_message(sid, block)
                            sent[0] += len(block)
                except OSError as exc:
                    problem = f"cannot read {path}: {_strerror(exc)}"
                moved += sent[0] - offset
                if problem is None:
                    verdict = _json_message(await conn.receive_message(sid))
                    progress.update(size)  # a verdict: the receiver has every byte
            finally:
                ticker.cancel()
                progress.close()
            if problem is not None:
                failures += 1
                out.write(f"FAILED {name}: {problem}\n")
                out.flush()
                conn.reset_stream(sid)
                continue
            resumed = f", resumed at {offset} bytes" if offset else ""
            if verdict.get("ok") is True and verdict.get("sha256") == digest:
                if verdict.get("already") is True:
                    out.write(f"{name} ({size} bytes) is already on the receiver (sha256 "
                              f"{digest[:16]} verified): nothing sent\n")
                else:
                    out.write(f"sent {name} ({size} bytes{resumed}): receiver verified sha256 "
                              f"{digest[:16]}\n")
            else:
                failures += 1
                out.write(f"FAILED {name}: {verdict.get('error', 'receiver reported a different sha256')}\n")
            out.flush()
        elapsed = time.monotonic() - t0
        stats = conn.stats
        out.write(f"{len(plan) - failures} of {len(plan)} files verified; {_size(moved)} sent in "
                  f"{elapsed:.2f} s ({_mbit(moved, elapsed):.1f} Mbit/s), rtt "
                  f"{_ms(stats.smoothed_rtt)}, {stats.packets_lost} packets lost\n")
    except BaseException:
        conn.abort()  # the error is what gets reported, not what was left in flight
        raise
    finally:
        conn.close()
        try:
            await conn.wait_closed()
        except DQUICError:
            if sys.exc_info()[0] is None:
                raise
    return EXIT_OK if not failures else EXIT_FAILURE
