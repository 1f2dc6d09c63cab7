"""The ``dquic`` command line: ``python -m dquic <command>`` (or the ``dquic`` console script).

Commands
--------
``demo``
    A server and a client on loopback with a lossy relay between them; moves random data on
    several streams, verifies every byte with SHA-256 on both ends and prints goodput, RTT, loss
    and retransmissions with a one-line verdict.
``serve`` / ``send``
    Receive / send files (the file transfer protocol: see ``dquic.cli.transfer``).
``keygen`` / ``pubkey``
    Write a key pair file / print a key file's public key (base64).
``bench``
    Loopback throughput and round-trip benchmark with a raw UDP baseline measured in the same run.

Exit codes (stable, for scripts): 0 success; 1 transfer or verification failure (including a
deadline that passed); 2 usage error; 3 connection or authentication failure.

Modules: ``demo``, ``transfer`` (``serve`` / ``send`` and their file transfer protocol), ``keyfiles``
(``keygen`` / ``pubkey``), ``bench``; ``_common`` holds what they share.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, Optional, Sequence, TextIO, Tuple

from .._version import __version__
from ._common import (EXIT_CONNECTION, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandFailed,
                      _connection_exit, _describe)
from .bench import run_bench
from .demo import run_demo
from .keyfiles import run_keygen, run_pubkey
from .transfer import run_send, run_serve

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_CONNECTION"]


# ----------------------------------------------------------------------------------------------
# argument parsing
def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _probability(text: str) -> float:
    v = _number(text)
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1]: {text}")
    return v


def _positive_float(text: str) -> float:
    v = _number(text)
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return v


def _non_negative_float(text: str) -> float:
    v = _number(text)
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

