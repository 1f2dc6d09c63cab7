"""The remote side of the loopback benchmarks, run as a separate process.

``python bench/loopback_peer.py MODE [options]`` binds 127.0.0.1:0, prints ``PORT <n>`` on
stdout, then serves until done:

* ``dquic-sink TOTAL``: receive TOTAL payload bytes from one peer, then answer ``{0: b"done"}``
  with the receive time (seconds from first byte to last) in the payload;
* ``dquic-echo COUNT``: echo COUNT requests back on the stream they came on;
* ``udp-sink``: count raw UDP datagrams until a 1-byte end marker, then print
  ``RESULT <datagrams> <bytes> <seconds from first to last>``.

Options: ``--plain`` turns dquic packet protection off (both sides must agree).
"""
from __future__ import annotations

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dquic_sink(total: int, plain: bool) -> None:
    from dquic.sync import DQUIC

    with DQUIC(encryption=not plain, linger=5.0) as d:
        d.bind(("127.0.0.1", 0))
        d.settimeout(120)
        print("PORT", d.local_address[1], flush=True)
        got = 0
        first = None
        peer = None
        while got < total:
            peer, data = d.receive_from(1 << 20)
            if first is None:
                first = time.perf_counter()
            got += sum(len(v) for v in data.values())
        elapsed = time.perf_counter() - first
        d.send_to(peer, {0: b"done %.6f %d" % (elapsed, got)})


def dquic_echo(count: int, plain: bool) -> None:
    from dquic.sync import DQUIC

    with DQUIC(encryption=not plain, linger=5.0) as d:
        d.bind(("127.0.0.1", 0))
        d.settimeout(120)
        print("PORT", d.local_address[1], flush=True)
        for _ in range(count):
            peer, data = d.receive_from(1 << 16)
            d.send_to(peer, data)


def udp_sink() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(30)
    print("PORT", s.getsockname()[1], flush=True)
    n = nbytes = 0
    first = last = None
    while True:
        data = s.recv(65535)
        if len(data) == 1:
            break
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        n += 1
        nbytes += len(data)
    print("RESULT", n, nbytes, (last - first) if first is not None else 0.0, flush=True)


def main(argv) -> None:
    plain = "--plain" in argv
    args = [a for a in argv if not a.startswith("--")]
    mode = args[0]
    if mode == "dquic-sink":
        dquic_sink(int(args[1]), plain)
    elif mode == "dquic-echo":
        dquic_echo(int(args[1]), plain)
    elif mode == "udp-sink":
        udp_sink()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
