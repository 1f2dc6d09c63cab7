"""The ``dquic`` command line: ``python -m dquic <command>`` (or the ``dquic`` console script).

Commands
--------
``demo``
    A server and a client on loopback with a lossy relay between them; moves random data on
    several streams, verifies every byte with SHA-256 on both ends and prints goodput, RTT, loss
    and retransmissions with a one-line verdict.
``serve`` / ``send``
    Receive / send files (the file transfer protocol below).
``keygen`` / ``pubkey``
    Write a key pair file / print a key file's public key (base64).
``bench``
    Loopback throughput and round-trip benchmark with a raw UDP baseline measured in the same run.

Exit codes (stable, for scripts): 0 success; 1 transfer or verification failure (including a
deadline that passed); 2 usage error; 3 connection or authentication failure.

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
import math
import os
import random
import shutil
import socket
import stat
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from ._version import __version__
from .config import Configuration

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_CONNECTION"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

KiB = 1024
MiB = 1024 * 1024
#: Data message size of the file transfer protocol.
CHUNK = 1 * MiB
#: Largest header / answer message accepted by ``serve`` / ``send``.
MAX_CONTROL_MESSAGE = 64 * KiB


class CommandFailed(Exception):
    """A command failed; ``exit_code`` is what the process exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------------------------
# formatting helpers
def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _size(n: float) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{int(n)} B"


def _mbit(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _connection_exit(exc: BaseException) -> int:
    """Exit code for an exception raised while connecting or transferring."""
    from .errors import DQUICError

    if isinstance(exc, (DQUICError, ConnectionError, TimeoutError, OSError)):
        return EXIT_CONNECTION
    return EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------------------------
# demo
def _plan_messages(rng: random.Random, length: int) -> List[int]:
    """Message sizes adding up to ``length``: a mix of tiny, small, medium and large messages
    (and the odd empty one), drawn from ``rng``."""
    sizes: List[int] = []
    left = length
    while left > 0:
        r = rng.random()
        if r < 0.02:
            n = 0
        elif r < 0.30:
            n = rng.randint(1, 1 * KiB)
        elif r < 0.65:
            n = rng.randint(1 * KiB, 64 * KiB)
        elif r < 0.97:
            n = rng.randint(64 * KiB, 256 * KiB)
        else:
            n = rng.randint(256 * KiB, 1 * MiB)
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


def _duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on (rounded up to a whole second)."""
    total = int(math.ceil(max(0.0, seconds) - 1e-9))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
    """Progress of one transfer on ``stream`` (default stderr): bytes done of the total,
    percentage, rate and time left.

    On a terminal: tqdm's bar when tqdm is installed (``pip install "dquic[progress]"``), else
    a one-line bar redrawn in place. Elsewhere (a file, a pipe, a CI log), with ``lines``: a
    plain line every ``interval`` seconds, and a last one at ``close()`` if any was written;
    never a carriage return. Without ``lines``, nothing there. ``start`` is where a resumed
    transfer begins (not counted in the rate)."""

    BAR_EVERY = 0.2  # seconds between redraws of the plain bar

    def __init__(self, total: int, label: str, *, start: int = 0, enabled: bool = True,
                 lines: bool = True, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 5.0) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interval = interval
        self.start = self.done = start
        self.t0 = self._last = clock()
        self._drawn = 0  # length of the bar line on screen
        self._lines = 0  # lines written (lines mode)
        self._line_done = -1  # bytes done in the last line written
        self._bar: Any = None
        self.mode: Optional[str] = None  # "tqdm", "bar", "lines" or None (silent)
        if not enabled:
            return
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            try:
                from tqdm import tqdm  # optional: the "progress" extra
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, initial=start, unit="B", unit_scale=True,
                                 unit_divisor=1024, desc=label, leave=False, file=self.stream,
                                 dynamic_ncols=True)
                self.mode = "tqdm"
            else:
                self.mode = "bar"
                self._last = -math.inf  # draw at the first update
        elif lines:
            self.mode = "lines"

    def status(self, now: float, final: bool = False, label: Optional[str] = None) -> str:
        """``label: 12.0 MiB of 50.0 MiB (24%), 9.8 MiB/s, ETA 0:04`` (at the end: the time
        taken instead of the ETA)."""
        done, total = self.done, self.total
        pct = 100 if total == 0 else int(100 * min(done, total) / total)
        elapsed = now - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        text = f"{self.label if label is None else label}: {_size(done)} of {_size(total)} ({pct}%)"
        if rate > 0:
            text += f", {_size(rate)}/s"
        if final or done >= total:
            return text + f", in {_duration(elapsed)}"
        return text + (f", ETA {_duration((total - done) / rate)}" if rate > 0 else ", ETA --:--")

    def update(self, done: int) -> None:
        if self.mode is None:
            return
        delta = done - self.done
        self.done = done
        if self.mode == "tqdm":
            if delta > 0:
                self._bar.update(delta)
            return
        now = self.clock()
        if self.mode == "bar":
            if now - self._last < self.BAR_EVERY and done < self.total:
                return
            self._last = now
            width = 20
            filled = int(width * min(done, self.total) / self.total) if self.total else width
            text = f"[{'#' * filled}{'.' * (width - filled)}] " + self.status(now)
            columns = shutil.get_terminal_size((80, 24)).columns - 1
            if len(text) > columns:  # a long name: shorten it, keep the figures
                keep = max(1, len(self.label) - (len(text) - columns) - 3)
                text = (f"[{'#' * filled}{'.' * (width - filled)}] "
                        + self.status(now, label=self.label[:keep] + "..."))[:columns]
            self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
            self._drawn = len(text)
            self.stream.flush()
        elif now - self._last >= self.interval:
            self._last = now
            self._write_line(now)

    def _write_line(self, now: float, final: bool = False) -> None:
        self.stream.write(self.status(now, final) + "\n")
        self.stream.flush()
        self._lines += 1
        self._line_done = self.done

    def close(self) -> None:
        mode, self.mode = self.mode, None
        if mode == "tqdm":
            self._bar.close()
        elif mode == "bar" and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
        elif mode == "lines" and self._lines and self._line_done != self.done:
            self._write_line(self.clock(), final=True)


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """The ``demo`` command (see the module docstring); returns the exit code."""
    from .keys import KeyPair
    from .sync import DQUIC
    from .testing.relay import LossyRelay

    total = int(round(args.size_mb * MiB))
    nstreams = args.streams
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    payload = memoryview(rng.randbytes(total))
    # stream i (ids 1..n) carries one contiguous share of the payload, cut into messages
    share, extra = divmod(total, nstreams)
    streams: Dict[int, Tuple[int, int]] = {}
    start = 0
    for i in range(nstreams):
        n = share + (1 if i < extra else 0)
        streams[i + 1] = (start, n)
        start += n
    plans = {sid: _plan_messages(rng, n) for sid, (_, n) in streams.items()}
    nmessages = sum(len(p) for p in plans.values())

    encryption = not args.no_encryption
    server_key = KeyPair.generate() if encryption else None
    common: Dict[str, Any] = {"encryption": encryption, "linger": 5.0,
                              "congestion_control": args.cc}
    if args.qlog:
        common["qlog_dir"] = args.qlog
    server = client = relay = None
    sender: Optional[threading.Thread] = None
    errors: List[BaseException] = []
    stop_sending = threading.Event()
    t_start = time.monotonic()
    deadline = t_start + args.timeout
    out.write(f"dquic {__version__} demo: {_mib(total)} in {nmessages} messages on {nstreams} "
              f"streams (seed {seed})\n")
    out.write(f"path: client -> lossy relay -> server on 127.0.0.1 (loss {args.loss:.1%}, "
              f"delay {args.delay_ms:g} ms each way, reorder {args.reorder:.1%}, "
              f"duplicate {args.duplicate:.1%}); congestion control {args.cc}\n")
    if server_key is not None:  # with encryption
        aead = {"AESGCM": "AES-256-GCM", "ChaChaPoly": "ChaCha20-Poly1305"}.get(
            Configuration().cipher, Configuration().cipher)
        out.write(f"security: Noise handshake, {aead} packets, server key pinned "
                  f"({server_key.public_b64[:12]}...)\n")
    else:
        out.write("security: encryption DISABLED (--no-encryption)\n")
    out.flush()
    progress = _Progress(total, "demo", lines=False)
    try:
        server = DQUIC(identity=server_key, **common)
        server.bind(("127.0.0.1", 0))
        relay = LossyRelay(_bound_address(server), loss=args.loss, delay=args.delay_ms / 1000.0,
                           reorder=args.reorder, duplicate=args.duplicate, seed=seed).start()
        client = DQUIC(server_key=server_key.public if server_key else None, **common)
        target = relay.address
        sent_digests = {sid: hashlib.sha256() for sid in streams}

        def send_all() -> None:
            try:
                cursor = {sid: (streams[sid][0], 0) for sid in streams}
                conn = None
                while not stop_sending.is_set():
                    # keep at most 16 MiB unacknowledged (polled: independent of how a blocked
                    # send_to is woken)
                    if conn is None and client.connections:
                        conn = client.connections[0]
                    if conn is not None and conn.send_buffered > 16 * MiB:
                        if time.monotonic() >= deadline:
                            return
                        time.sleep(0.001)
                        continue
                    batch = {}
                    for sid, (pos, k) in cursor.items():
                        plan = plans[sid]
                        if k < len(plan):
                            n = plan[k]
                            view = payload[pos:pos + n]
                            sent_digests[sid].update(view)
                            batch[sid] = view
                            cursor[sid] = (pos + n, k + 1)
                    if not batch:
                        return
                    client.settimeout(max(0.05, deadline - time.monotonic()))
                    client.send_to(target, batch)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=send_all, name="dquic-demo-sender", daemon=True)
        sender.start()

        received = {sid: 0 for sid in streams}
        recv_digests = {sid: hashlib.sha256() for sid in streams}
        got = 0
        peer = None
        while got < total or peer is None:
            if errors:
                raise errors[0]
            now = time.monotonic()
            if now >= deadline:
                raise CommandFailed(
                    f"FAIL: deadline of {args.timeout:g} s passed with {_mib(got)} of {_mib(total)} "
                    f"delivered (raise --timeout, or lower --loss / --size-mb)")
            server.settimeout(min(0.25, deadline - now))
            try:
                peer, msgs = server.receive_from(1 << 20)
            except TimeoutError:
                continue
            for sid, data in msgs.items():
                if sid not in streams:
                    raise CommandFailed(f"FAIL: data on unexpected stream {sid}")
                received[sid] += len(data)
                if received[sid] > streams[sid][1]:
                    raise CommandFailed(f"FAIL: stream {sid} delivered more bytes than were sent")
                recv_digests[sid].update(data)
                got += len(data)
            progress.update(got)
        t_done = time.monotonic()
        progress.close()
        sender.join(max(0.0, deadline - time.monotonic()))
        if errors:
            raise errors[0]
        # the receiver reports its digest per stream; the sender compares with its own
        server.settimeout(max(0.05, deadline - time.monotonic()))
        server.send_to(peer, {sid: d.digest() for sid, d in recv_digests.items()})
        reported: Dict[int, bytes] = {}
        while len(reported) < len(streams):
            now = time.monotonic()
            if now >= deadline:
                raise CommandFailed(f"FAIL: deadline of {args.timeout:g} s passed waiting for the "
                                    "receiver's digests")
            client.settimeout(min(0.25, deadline - now))
            try:
                _, msgs = client.receive_from(65536)
            except TimeoutError:
                continue
            for sid, data in msgs.items():
                reported[sid] = reported.get(sid, b"") + data
        cstats = client.connections[0].stats if client.connections else None
        sstats = server.connections[0].stats if server.connections else None
        counters = relay.counters

        elapsed = t_done - t_start
        bad = []
        for sid, (_, n) in streams.items():
            ok = sent_digests[sid].digest() == reported.get(sid) == recv_digests[sid].digest()
            if not ok:
                bad.append(sid)
            out.write(f"  stream {sid}: {_mib(n):>9} in {len(plans[sid]):4d} messages  sha256 "
                      f"{sent_digests[sid].hexdigest()[:16]}  {'ok' if ok else 'MISMATCH'}\n")
        lost = (cstats.packets_lost if cstats else 0) + (sstats.packets_lost if sstats else 0)
        spurious = (cstats.spurious_losses if cstats else 0) + (sstats.spurious_losses if sstats else 0)
        retrans = (cstats.bytes_retransmitted if cstats else 0) + (sstats.bytes_retransmitted if sstats else 0)
        goodput = _mbit(total, elapsed)
        srtt = cstats.smoothed_rtt if cstats else 0.0
        min_rtt = cstats.min_rtt if cstats else 0.0
        out.write(f"goodput: {goodput:.1f} Mbit/s ({_mib(total)} in {elapsed:.2f} s, handshake "
                  "included)\n")
        out.write(f"rtt: smoothed {_ms(srtt)}, min {_ms(min_rtt)}\n")
        drop_pct = counters.dropped / counters.received if counters.received else 0.0
        out.write(f"loss: relay dropped {counters.dropped} of {counters.received} datagrams "
                  f"({drop_pct:.1%}), duplicated {counters.duplicated}, reordered "
                  f"{counters.reordered}; packets lost {lost} (declared by the senders, "
                  f"{spurious} spurious)\n")
        out.write(f"retransmissions: {retrans} bytes ({retrans / total if total else 0:.1%} of "
                  f"the payload)\n")
        if args.qlog:
            out.write(f"qlog: traces in {args.qlog}\n")
        if bad:
            out.write(f"FAIL: sha256 mismatch on stream(s) {', '.join(map(str, bad))}\n")
            return EXIT_FAILURE
        out.write(f"PASS: {_mib(total)} on {nstreams} streams verified (sha256) in {elapsed:.1f} s, "
                  f"{goodput:.1f} Mbit/s, rtt {_ms(srtt)}, {lost} packets lost, "
                  f"{_size(retrans)} retransmitted\n")
        return EXIT_OK
    finally:
        progress.close()
        stop_sending.set()
        failed = sys.exc_info()[0] is not None
        for ep in (client, server):
            if ep is not None:
                if failed:
                    ep.linger = 0.0
                ep.close(abandon=failed)  # after a failure, what was in flight is moot
        if sender is not None:
            sender.join(5.0)
        if relay is not None:
            relay.stop()


# ----------------------------------------------------------------------------------------------
# keys
def run_keygen(args: argparse.Namespace, out: TextIO) -> int:
    """``keygen FILE``: write a fresh key pair (mode 0600) and print its public key."""
    from .keys import KeyPair

    if os.path.exists(args.file) and not args.force:
        raise CommandFailed(f"{args.file} exists (use --force to replace it)", EXIT_USAGE)
    pair = KeyPair.generate()
    pair.save(args.file, overwrite=args.force)
    out.write(pair.public_b64 + "\n")
    return EXIT_OK


def _load_keypair(path: str):
    from .keys import KeyPair

    try:
        return KeyPair.load(path)
    except FileNotFoundError:
        raise CommandFailed(f"cannot read key file {path}: no such file (create one with "
                            f"'dquic keygen {path}')", EXIT_USAGE) from None
    except OSError as exc:
        raise CommandFailed(f"cannot read key file {path}: {_strerror(exc)}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CommandFailed(f"{path} is not a dquic key file ({exc}; 'dquic keygen' writes "
                            "one)", EXIT_USAGE) from None


def run_pubkey(args: argparse.Namespace, out: TextIO) -> int:
    """``pubkey FILE``: print the public key (base64) of a key pair file."""
    out.write(_load_keypair(args.file).public_b64 + "\n")
    return EXIT_OK


def _bound_address(endpoint: Any) -> Tuple:
    """The local address of a bound ``dquic.DQUIC`` endpoint."""
    address = endpoint.local_address
    if address is None:
        raise RuntimeError("the endpoint is not bound")
    return address


def _parse_keys(values: Optional[Sequence[str]]) -> Optional[List[bytes]]:
    """Public keys given on the command line: base64/hex text, or a file holding one (a key pair
    file yields its public key)."""
    from .keys import KeyPair, load_public

    if not values:
        return None
    keys = []
    for v in values:
        if os.path.isfile(v):
            try:
                keys.append(KeyPair.load(v).public)
                continue
            except ValueError:
                pass
            try:
                with open(v, "r", encoding="ascii") as f:
                    v = f.read(4096)
            except OSError as exc:
                raise CommandFailed(f"cannot read public key file {v}: {_strerror(exc)}",
                                    EXIT_USAGE) from None
            except UnicodeDecodeError:
                raise CommandFailed(f"{v} is not a key file", EXIT_USAGE) from None
        try:
            keys.append(load_public(v))
        except (TypeError, ValueError) as exc:
            raise CommandFailed(f"bad public key {v.strip()!r}: {exc} (a public key is what "
                                "'dquic keygen' or 'dquic pubkey' prints, or a key file)",
                                EXIT_USAGE) from None
    return keys


# ----------------------------------------------------------------------------------------------
# argument parsing
def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1]: {text}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}: {text}")
        return v

    return parse


def _host_port(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 < p <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535 in {text!r}")
    return host, p


class _KeyList(argparse.Action):
    """``--trust``: one value per use, appended (``--trust A --trust B``); a value may also be a
    comma-separated list (``--trust A,B``), unless it names an existing file (a key file)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                  values: Any, option_string: Optional[str] = None) -> None:
        keys = list(getattr(namespace, self.dest, None) or [])
        if os.path.exists(values):
            keys.append(values)
        else:
            more = [v.strip() for v in values.split(",") if v.strip()]
            if not more:
                raise argparse.ArgumentError(self, f"expected a public key or a key file, got {values!r}")
            keys.extend(more)
        setattr(namespace, self.dest, keys)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dquic`` command (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="dquic",
        description="dquic: a fast, secure, reliable transport over UDP. Run 'dquic demo' to see it "
                    "move data through a lossy link with every byte verified.",
        epilog="exit codes: 0 ok, 1 transfer/verification failure, 2 usage error, "
               "3 connection/authentication failure",
    )
    parser.add_argument("--version", action="version", version=f"dquic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="client and server on loopback through a lossy relay, "
                                    "every byte verified",
                       description="Start a dquic server and client on 127.0.0.1 with a lossy "
                                   "relay between them, move random data on several streams, "
                                   "verify every byte (SHA-256 per stream on both ends) and print "
                                   "goodput, RTT, loss, retransmissions and a verdict.")
    p.add_argument("--loss", type=_probability, default=0.01, help="datagram loss probability, "
                   "each direction (default 0.01)")
    p.add_argument("--delay-ms", type=_non_negative_float, default=10.0,
                   help="one-way delay in ms, each direction (default 10)")
    p.add_argument("--reorder", type=_probability, default=0.01,
                   help="probability a datagram is held back and overtaken (default 0.01)")
    p.add_argument("--duplicate", type=_probability, default=0.005,
                   help="datagram duplication probability (default 0.005)")
    p.add_argument("--streams", type=_int_range(1, 64), default=4, help="streams (default 4)")
    p.add_argument("--size-mb", type=_positive_float, default=4.0,
                   help="MiB of data in total (default 4)")
    p.add_argument("--cc", choices=("cubic", "newreno", "bbr"), default="cubic",
                   help="congestion controller (default cubic; bbr does not treat random loss "
                        "as congestion and is much faster on lossy paths)")
    p.add_argument("--seed", type=_int_range(0, 2 ** 63 - 1), default=None,
                   help="seed of the payload, message sizes and relay decisions (default random)")
    p.add_argument("--qlog", metavar="DIR", help="write qlog traces of both ends to DIR")
    p.add_argument("--no-encryption", action="store_true",
                   help="disable packet protection (benchmarking the bare transport)")
    p.add_argument("--timeout", type=_positive_float, default=60.0,
                   help="give up (exit 1) after this many seconds (default 60)")
    p.set_defaults(func=run_demo)

    p = sub.add_parser("serve", help="receive files (see 'send')",
                       description="Receive files sent with 'dquic send' into --out; each file is "
                                   "written to NAME.part and renamed once its SHA-256 verified; an "
                                   "interrupted transfer resumes from the .part. A file already "
                                   "there is never replaced unless --overwrite. Listens on every "
                                   "address unless --host; logs connections, files, refused "
                                   "clients and failures to stdout.")
    p.add_argument("--port", type=_int_range(0, 65535), required=True,
                   help="UDP port to listen on (0: pick a free one and print it)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: all addresses of this machine, IPv4 and "
                        "IPv6 where available; 127.0.0.1 for this machine only)")
    p.add_argument("--out", default=".", metavar="DIR", help="directory for received files "
                   "(default: current directory)")
    p.add_argument("--key", metavar="KEYFILE", help="this server's key pair file (see keygen); "
                   "default: a fresh key for this run")
    p.add_argument("--trust", metavar="PUBKEY", action=_KeyList, default=None,
                   help="only accept clients with this public key (base64/hex, or a key file); "
                        "repeat it, or give a comma-separated list, for several clients")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a file of the same name with different content (default: refuse "
                        "such a file, and keep the one there; a file identical to the one there "
                        "is a success that moves no data)")
    p.add_argument("--qlog", metavar="DIR", help="write qlog traces to DIR")
    p.add_argument("--once", action="store_true", help="exit after the first client's "
                   "connection ends (exit code 0 only if all its files verified)")
    p.add_argument("--idle-timeout", type=_positive_float, default=30.0,
                   help="close connections idle this long (default 30 s)")
    p.add_argument("--workers", type=_int_range(1, 64), default=1, metavar="N",
                   help="serve with N worker processes on the one port, each datagram steered "
                        "by the kernel to the worker named in its connection ID (Linux; "
                        "default 1)")
    p.set_defaults(func=run_serve)

    p = sub.add_parser("send", help="send files to 'dquic serve'",
                       description="Send files to a 'dquic serve' receiver and wait for its "
                                   "verification of each one (exit 0 only if all verified).")
    p.add_argument("target", type=_host_port, metavar="HOST:PORT")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--key", metavar="KEYFILE", help="this client's key pair file (for servers "
                   "started with --trust)")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--trust", metavar="PUBKEY", action=_KeyList, default=None,
                     help="accept only a server with this public key (base64/hex, or a key "
                          "file); repeat it, or give a comma-separated list, to accept any of "
                          "several")
    grp.add_argument("--server-key", metavar="PUBKEY", help="the server's public key (pinned)")
    p.add_argument("--qlog", metavar="DIR", help="write qlog traces to DIR")
    p.add_argument("--timeout", type=_positive_float, default=10.0,
                   help="handshake timeout in seconds (default 10)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display (on a terminal: a bar with rate and ETA, tqdm's if "
                        "it is installed; otherwise a line every 5 s)")
    p.set_defaults(func=run_send)

    p = sub.add_parser("keygen", help="write a key pair file and print its public key",
                       description="Generate an X25519 key pair, write it to FILE (mode 0600) and "
                                   "print the public key (base64) to give to peers.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace an existing FILE")
    p.set_defaults(func=run_keygen)

    p = sub.add_parser("pubkey", help="print the public key of a key pair file",
                       description="Print the public key (base64) of a key pair file.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run_pubkey)

    p = sub.add_parser("bench", help="loopback throughput and round-trip benchmark",
                       description="Measure dquic bulk throughput and request/response round trips "
                                   "on loopback, with a raw UDP sendto baseline in the same run.")
    p.add_argument("--seconds", type=_positive_float, default=3.0,
                   help="duration of each measurement (default 3)")
    p.add_argument("--size", type=_int_range(1, 65000), default=1200,
                   help="message / datagram payload size in bytes (default 1200)")
    p.add_argument("--no-encryption", action="store_true", help="measure the bare transport")
    p.set_defaults(func=run_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit code.

    Messages go to ``out`` (default stdout), errors to stderr.
    """
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) and usage errors (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        return args.func(args, out)
    except CommandFailed as exc:
        out.flush()
        sys.stderr.write(f"dquic {args.command}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        hint = " (run the same command again to resume)" if args.command == "send" else ""
        sys.stderr.write(f"dquic {args.command}: interrupted{hint}\n")
        return EXIT_FAILURE
    except Exception as exc:  # connection failures and the like: a message, not a traceback
        out.flush()
        code = _connection_exit(exc)
        sys.stderr.write(f"dquic {args.command}: {'connection failed: ' if code == EXIT_CONNECTION else ''}"
                         f"{_describe(exc)}\n")
        return code


# ----------------------------------------------------------------------------------------------
# file transfer (on the asyncio API): see the module docstring for the protocol
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
    from .errors import DQUICError

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
    from .errors import ConnectionClosed, ConnectionTimeout

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
    from . import aio

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
        from ._socket import normalize_address
        from .errors import ErrorCode

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
    from .keys import KeyPair
    from .workers import WorkerPool

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


def _b64(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode("ascii")


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
    from .errors import AuthenticationError, ConnectionClosed, ConnectionTimeout

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


def _strerror(exc: OSError) -> str:
    """An ``OSError``'s text without its class and errno: 'permission denied'."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


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
    from . import aio
    from .errors import DQUICError

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


# ----------------------------------------------------------------------------------------------
# bench
def _bench_udp(seconds: float, size: int) -> Tuple[float, float]:
    """Raw UDP on loopback: ``(datagrams/s sent, datagrams/s received)`` for ``seconds``."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (rx, tx):
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                except OSError:
                    pass
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        addr = rx.getsockname()
        count = [0]
        stop = threading.Event()

        def receive() -> None:
            buf = bytearray(65536)
            n = 0
            while not stop.is_set():
                try:
                    rx.recv_into(buf)
                    n += 1
                except (socket.timeout, OSError):
                    continue
            count[0] = n

        t = threading.Thread(target=receive, name="dquic-bench-udp", daemon=True)
        t.start()
        payload = os.urandom(size)
        sent = 0
        sendto = tx.sendto
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(256):
                try:
                    sendto(payload, addr)
                    sent += 1
                except OSError:
                    pass
            if time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - t0
        stop.set()
        t.join(2.0)
        return sent / elapsed, count[0] / elapsed
    finally:
        rx.close()
        tx.close()


def _bench_bulk(seconds: float, size: int, encryption: bool) -> Dict[str, float]:
    """DQUIC client -> server bulk transfer of ``size``-byte messages for ``seconds``."""
    from .sync import DQUIC

    server = DQUIC(encryption=encryption, linger=0.0)
    client = DQUIC(encryption=encryption, linger=0.0)
    stop = threading.Event()
    errors: List[BaseException] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.2)
        client.settimeout(5.0)
        target = _bound_address(server)
        client.send_to(target, {1: b"start"})  # handshake outside the measurement
        server.settimeout(5.0)
        server.receive_from(65536)
        server.settimeout(0.2)
        message = os.urandom(size)
        batch = {sid: message for sid in range(1, 9)}

        conn = client.connections[0]
        high_water = 4 << 20

        def send() -> None:
            # keep at most ~high_water bytes unacknowledged: the figure is what was delivered,
            # not what was queued (polled, so the measurement does not depend on how blocking
            # send_to wakes up)
            try:
                while not stop.is_set():
                    if conn.send_buffered > high_water:
                        time.sleep(0.0005)
                        continue
                    client.send_to(target, batch)
            except BaseException as exc:
                if not stop.is_set():
                    errors.append(exc)

        t = threading.Thread(target=send, name="dquic-bench-sender", daemon=True)
        received = 0
        t0 = time.perf_counter()
        t.start()
        end = t0 + seconds
        while time.perf_counter() < end:
            if errors:
                raise errors[0]
            try:
                _, msgs = server.receive_from(1 << 20)
            except TimeoutError:
                continue
            for v in msgs.values():
                received += len(v)
        elapsed = time.perf_counter() - t0
        stats = client.connections[0].stats
        return {"bytes": received, "seconds": elapsed, "mbit": _mbit(received, elapsed),
                "packets": stats.packets_sent, "lost": stats.packets_lost,
                "rtt": stats.smoothed_rtt}
    finally:
        stop.set()
        client.close(abandon=True)  # a benchmark stops mid-transfer on purpose
        server.close(abandon=True)


def _bench_rtt(seconds: float, size: int, encryption: bool) -> Dict[str, float]:
    """Request/response of ``size`` bytes each way, one at a time, for ``seconds``."""
    from .sync import DQUIC

    server = DQUIC(encryption=encryption, linger=0.0)
    client = DQUIC(encryption=encryption, linger=0.0)
    stop = threading.Event()
    try:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.2)
        client.settimeout(5.0)

        def echo() -> None:
            while not stop.is_set():
                try:
                    peer, msgs = server.receive_from(1 << 20)
                except (TimeoutError, OSError):
                    continue
                try:
                    server.send_to(peer, msgs)
                except OSError:
                    return

        t = threading.Thread(target=echo, name="dquic-bench-echo", daemon=True)
        t.start()
        target = _bound_address(server)
        request = {1: os.urandom(size)}
        client.send_to(target, request)  # handshake outside the measurement
        client.receive_from(1 << 20)
        samples = []
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            a = time.perf_counter()
            if a >= end:
                break
            client.send_to(target, request)
            got = 0
            while got < size:
                _, msgs = client.receive_from(1 << 20)
                got += sum(len(v) for v in msgs.values())
            samples.append(time.perf_counter() - a)
        elapsed = time.perf_counter() - t0
        samples.sort()
        return {"count": len(samples), "per_second": len(samples) / elapsed,
                "median": statistics.median(samples),
                "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}
    finally:
        stop.set()
        client.close(abandon=True)  # a benchmark stops mid-transfer on purpose
        server.close(abandon=True)


def run_bench(args: argparse.Namespace, out: TextIO) -> int:
    """The ``bench`` command: a table of loopback figures measured in this run."""
    seconds, size = args.seconds, args.size
    encryption = not args.no_encryption
    out.write(f"dquic {__version__} bench: loopback 127.0.0.1, {seconds:g} s per test, "
              f"{size}-byte payloads, encryption {'on' if encryption else 'OFF'}\n")
    out.flush()
    sent_rate, recv_rate = _bench_udp(seconds, size)
    bulk = _bench_bulk(seconds, size, encryption)
    rtt = _bench_rtt(seconds, size, encryption)
    rows = [
        ("raw UDP sendto (baseline)", f"{sent_rate:,.0f} datagrams/s sent = "
                                      f"{_mbit(sent_rate * size, 1):,.0f} Mbit/s; "
                                      f"{recv_rate:,.0f}/s received"),
        ("dquic bulk, client->server", f"{bulk['mbit']:,.1f} Mbit/s goodput "
                                       f"({_size(bulk['bytes'])} in {bulk['seconds']:.2f} s, "
                                       f"{bulk['lost']} packets lost, rtt {_ms(bulk['rtt'])})"),
        ("dquic round trip", f"median {rtt['median'] * 1e6:,.0f} us, p99 {rtt['p99'] * 1e6:,.0f} us, "
                             f"{rtt['per_second']:,.0f} round trips/s"),
    ]
    width = max(len(r[0]) for r in rows)
    out.write(f"{'test'.ljust(width)}  result\n{'-' * width}  {'-' * 60}\n")
    for name, result in rows:
        out.write(f"{name.ljust(width)}  {result}\n")
    if sent_rate * size:
        out.write(f"dquic bulk goodput is {bulk['mbit'] / _mbit(sent_rate * size, 1):.1%} of the raw "
                  "UDP send rate\n")
    return EXIT_OK
