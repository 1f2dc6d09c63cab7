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
   ``{"ok": false, "error": <text>}`` instead, which ends the exchange on that stream.
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
import hashlib
import json
import math
import os
import random
import socket
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


class _Progress:
    """A progress line on stderr: tqdm when importable, else a simple bar; silent when stderr
    is not a terminal (unless ``force``)."""

    def __init__(self, total: int, label: str, enabled: Optional[bool] = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self._last = 0.0
        self._bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm  # optional
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                 desc=label, leave=False, file=sys.stderr)

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        delta = done - self.done
        self.done = done
        if self._bar is not None:
            if delta > 0:
                self._bar.update(delta)
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{_mib(done)} / {_mib(self.total)}")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


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
    if encryption:
        aead = {"AESGCM": "AES-256-GCM", "ChaChaPoly": "ChaCha20-Poly1305"}.get(
            Configuration().cipher, Configuration().cipher)
        out.write(f"security: Noise handshake, {aead} packets, server key pinned "
                  f"({server_key.public_b64[:12]}...)\n")
    else:
        out.write("security: encryption DISABLED (--no-encryption)\n")
    out.flush()
    progress = _Progress(total, "demo")
    try:
        server = DQUIC(identity=server_key, **common)
        server.bind(("127.0.0.1", 0))
        relay = LossyRelay(server.local_address, loss=args.loss, delay=args.delay_ms / 1000.0,
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
    except (OSError, ValueError) as exc:
        raise CommandFailed(f"cannot read key file {path}: {exc}", EXIT_USAGE) from None


def run_pubkey(args: argparse.Namespace, out: TextIO) -> int:
    """``pubkey FILE``: print the public key (base64) of a key pair file."""
    out.write(_load_keypair(args.file).public_b64 + "\n")
    return EXIT_OK


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
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandFailed(f"cannot read public key file {v}: {exc}", EXIT_USAGE) from None
        try:
            keys.append(load_public(v))
        except (TypeError, ValueError) as exc:
            raise CommandFailed(f"bad public key {v!r}: {exc}", EXIT_USAGE) from None
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
                                   "interrupted transfer resumes from the .part.")
    p.add_argument("--port", type=_int_range(0, 65535), required=True,
                   help="UDP port to listen on (0: pick a free one and print it)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--out", default=".", metavar="DIR", help="directory for received files "
                   "(default: current directory)")
    p.add_argument("--key", metavar="KEYFILE", help="this server's key pair file (see keygen); "
                   "default: a fresh key for this run")
    p.add_argument("--trust", metavar="PUBKEY", nargs="+", action="extend",
                   help="only accept clients with these public keys (base64/hex or a key file)")
    p.add_argument("--qlog", metavar="DIR", help="write qlog traces to DIR")
    p.add_argument("--once", action="store_true", help="exit after the first client's "
                   "connection ends (exit code 0 only if all its files verified)")
    p.add_argument("--idle-timeout", type=_positive_float, default=30.0,
                   help="close connections idle this long (default 30 s)")
    p.set_defaults(func=run_serve)

    p = sub.add_parser("send", help="send files to 'dquic serve'",
                       description="Send files to a 'dquic serve' receiver and wait for its "
                                   "verification of each one (exit 0 only if all verified).")
    p.add_argument("target", type=_host_port, metavar="HOST:PORT")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--key", metavar="KEYFILE", help="this client's key pair file (for servers "
                   "started with --trust)")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--trust", metavar="PUBKEY", nargs="+", action="extend",
                     help="accept only a server with one of these public keys")
    grp.add_argument("--server-key", metavar="PUBKEY", help="the server's public key (pinned)")
    p.add_argument("--qlog", metavar="DIR", help="write qlog traces to DIR")
    p.add_argument("--timeout", type=_positive_float, default=10.0,
                   help="handshake timeout in seconds (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
        sys.stderr.write(f"dquic {args.command}: interrupted\n")
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
    """One file being received on one stream."""

    def __init__(self, directory: str, header: Dict[str, Any], busy: set) -> None:
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
        self.final = os.path.join(directory, self.name)
        self.part = self.final + ".part"
        have = os.path.getsize(self.part) if os.path.isfile(self.part) else 0
        if have > size:
            have = 0
        self.offset = have
        # the hash of what an earlier attempt left: load_hash() (slow for a large part: run it
        # off the event loop)
        self.hash = None if have else hashlib.sha256()
        self.file = open(self.part, "r+b" if have else "wb")
        self.file.seek(have)
        self.file.truncate()
        self.received = have
        self.busy = busy
        busy.add(self.name)

    def load_hash(self) -> None:
        """Hash the bytes an earlier attempt left in the ``.part`` file."""
        self.hash = _sha256_file(self.part, self.offset)

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

    def finish(self) -> Dict[str, Any]:
        """Verify the whole ``.part`` and rename it; the verdict to send."""
        self.close()
        digest = self.hash.hexdigest()
        if digest != self.expected:
            os.unlink(self.part)
            return {"ok": False, "error": f"sha256 mismatch (got {digest})"}
        os.replace(self.part, self.final)
        return {"ok": True, "sha256": digest}

    def close(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        self.busy.discard(self.name)


async def _receive_files(conn: Any, directory: str, out: TextIO, busy: set) -> Tuple[int, int]:
    """Serve one sender's connection; returns ``(files verified, files failed)``."""
    from .errors import DQUICError

    files: Dict[int, Optional[_Incoming]] = {}
    ok = failed = 0
    peer = conn.peer_address
    try:
        while True:
            try:
                sid, data = await conn.receive_message()
            except DQUICError:
                break
            if sid not in files:
                try:
                    inc = _Incoming(directory, _json_message(data), busy)
                except (ValueError, OSError) as exc:
                    files[sid] = None
                    failed += 1
                    out.write(f"refused a file from {peer[0]}:{peer[1]}: {exc}\n")
                    out.flush()
                    await conn.send_message(sid, _encode({"ok": False, "error": str(exc)}))
                    continue
                files[sid] = inc
                if inc.hash is None:
                    # disk reads and hashing off the event loop: other connections go on
                    await asyncio.to_thread(inc.load_hash)
                await conn.send_message(sid, _encode({"offset": inc.offset}))
                if not inc.complete:
                    continue
            else:
                inc = files[sid]
                if inc is None or inc.file.closed:
                    continue  # after a verdict: ignore
                try:
                    inc.write(data)
                except (ValueError, OSError) as exc:
                    inc.close()
                    failed += 1
                    await conn.send_message(sid, _encode({"ok": False, "error": str(exc)}))
                    continue
                if not inc.complete:
                    continue
            verdict = await asyncio.to_thread(inc.finish)  # fsync and rename off the loop
            resumed = f", resumed at {inc.offset} bytes" if inc.offset else ""
            if verdict["ok"]:
                ok += 1
                out.write(f"received {inc.name} ({inc.size} bytes, sha256 verified{resumed}) "
                          f"from {peer[0]}:{peer[1]}\n")
            else:
                failed += 1
                out.write(f"FAILED {inc.name} from {peer[0]}:{peer[1]}: {verdict['error']}\n")
            out.flush()
            await conn.send_message(sid, _encode(verdict))
    finally:
        for inc in files.values():
            if inc is not None and not inc.file.closed:
                inc.close()  # keep the .part: the sender can resume
                failed += 1
                out.write(f"incomplete {inc.name}: {inc.received} of {inc.size} bytes kept in "
                          f"{inc.name}.part\n")
                out.flush()
    return ok, failed


def run_serve(args: argparse.Namespace, out: TextIO) -> int:
    """The ``serve`` command: receive files until interrupted (or one connection with --once)."""
    identity = _load_keypair(args.key) if args.key else None
    trusted = _parse_keys(args.trust)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise CommandFailed(f"cannot create {args.out}: {exc}", EXIT_USAGE) from None
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
        out.write(f"connection from {peer[0]}:{peer[1]}"
                  + (f" (key {_b64(conn.peer_key)})" if conn.peer_key else "") + "\n")
        out.flush()
        result = await _receive_files(conn, args.out, out, busy)
        if not first.done():
            first.set_result(result)

    options: Dict[str, Any] = {"idle_timeout": args.idle_timeout}
    if identity is not None:
        options["identity"] = identity
    if trusted:
        options["trusted_peers"] = trusted
    if args.qlog:
        options["qlog_dir"] = args.qlog
    try:
        server = await aio.serve(args.host, args.port, handler, **options)
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {args.host}:{args.port}: {exc}", EXIT_USAGE) from None
    async with server:
        host, port = server.address[:2]
        out.write(f"listening on {host}:{port}, server key {server.identity.public_b64}\n")
        out.flush()
        if not args.once:
            await server.serve_forever()
            return EXIT_OK
        ok, failed = await first
    return EXIT_OK if ok and not failed else EXIT_FAILURE


def _b64(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode("ascii")


def run_send(args: argparse.Namespace, out: TextIO) -> int:
    """The ``send`` command: send files, wait for each verdict."""
    identity = _load_keypair(args.key) if args.key else None
    trusted = _parse_keys(args.trust)
    server_key = _parse_keys([args.server_key])[0] if args.server_key else None
    names = set()
    for path in args.files:
        if not os.path.isfile(path):
            raise CommandFailed(f"{path}: not a regular file", EXIT_USAGE)
        name = os.path.basename(path)
        try:
            _check_name(name)
        except ValueError as exc:
            raise CommandFailed(f"{path}: {exc}", EXIT_USAGE) from None
        if name in names:
            raise CommandFailed(f"two files named {name}", EXIT_USAGE)
        names.add(name)
    return asyncio.run(_send(args, out, identity, trusted, server_key))


async def _send(args: argparse.Namespace, out: TextIO, identity: Any, trusted: Any,
                server_key: Any) -> int:
    from . import aio

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
        size = os.path.getsize(path)
        plan.append((path, os.path.basename(path), size, _sha256_file(path).hexdigest()))
    conn = await aio.connect(host, port, **options)
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
            progress = _Progress(size, name, enabled=False if args.no_progress else None)
            progress.update(offset)
            queued = offset
            with open(path, "rb") as f:
                f.seek(offset)
                while queued < size:
                    block = f.read(min(CHUNK, size - queued))
                    if not block:
                        break
                    await conn.send_message(sid, block)
                    queued += len(block)
                    progress.update(max(offset, queued - conn.send_buffered))
            moved += queued - offset
            if queued < size:
                progress.close()
                failures += 1
                out.write(f"FAILED {name}: file shrank while sending\n")
                conn.reset_stream(sid)
                continue
            verdict = _json_message(await conn.receive_message(sid))
            progress.close()
            resumed = f", resumed at {offset} bytes" if offset else ""
            if verdict.get("ok") is True and verdict.get("sha256") == digest:
                out.write(f"sent {name} ({size} bytes{resumed}): receiver verified sha256 {digest[:16]}\n")
            else:
                failures += 1
                out.write(f"FAILED {name}: {verdict.get('error', 'receiver reported a different sha256')}\n")
            out.flush()
        elapsed = time.monotonic() - t0
        stats = conn.stats
        out.write(f"{len(plan) - failures} of {len(plan)} files verified; {_size(moved)} sent in "
                  f"{elapsed:.2f} s ({_mbit(moved, elapsed):.1f} Mbit/s), rtt "
                  f"{_ms(stats.smoothed_rtt)}, {stats.packets_lost} packets lost\n")
    finally:
        conn.close()
        await conn.wait_closed()
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
        target = server.local_address
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
        target = server.local_address
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
