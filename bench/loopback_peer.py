"""The remote side of the loopback benchmarks, run as a separate process.

``python bench/loopback_peer.py MODE [options]`` binds 127.0.0.1:0, prints ``PORT <n>`` on
stdout, then serves until done:

* ``dquic-sink TOTAL``: answer the first message from a peer with ``{0: b"ready"}`` (so the
  sender's handshake and first round trip happen before it starts timing), then receive TOTAL
  payload bytes on any streams and answer ``{0: b"done <seconds> <bytes>"}`` (seconds from the
  first bulk byte to the last);
* ``dquic-echo [COUNT]``: send every dict received back to the peer it came from, on the same
  streams; stop after COUNT messages (each value of a dict is one message), or, without
  COUNT, after a message ``b"bye"`` (which is echoed too). Serves any number of peers, one
  after another or at once;
* ``udp-sink``: count raw UDP datagrams until a 1-byte end marker, then print
  ``RESULT <datagrams> <bytes> <seconds from first to last>``;
* ``udp-echo``: send every raw UDP datagram back to its sender until a 1-byte end marker, then
  print ``RESULT <datagrams echoed>``;
* ``udp-handshake-echo [--poll]``: as ``udp-echo``, but a datagram of 33 bytes starting with
  ``I`` (a 32-byte X25519 public key after it) is answered only after the two X25519 exchanges a
  dquic server makes for a handshake's first message (its ephemeral and its static key with the
  client's ephemeral), with 80 bytes. The floor of a sequential connection, without any
  protocol work (``test_bench_loopback_peers.py``); ``--poll`` spins on a non-blocking socket
  instead of sleeping in ``recvfrom``.

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
        peer, _ = d.receive_from(1 << 16)  # the sender's warm-up message
        d.send_to(peer, {0: b"ready"})
        got = 0
        first = None
        while got < total:
            peer, data = d.receive_from(1 << 20)
            if first is None:
                first = time.perf_counter()
            got += sum(len(v) for v in data.values())
        elapsed = time.perf_counter() - first
        d.send_to(peer, {0: b"done %.6f %d" % (elapsed, got)})


def dquic_echo(count: int, plain: bool) -> None:
    """Echo until ``count`` messages (0: until a ``b"bye"`` message)."""
    from dquic.sync import DQUIC

    with DQUIC(encryption=not plain, linger=5.0) as d:
        d.bind(("127.0.0.1", 0))
        d.settimeout(120)
        print("PORT", d.local_address[1], flush=True)
        seen = 0
        while True:
            peer, data = d.receive_from(1 << 16)
            d.send_to(peer, data)
            seen += len(data)
            if (count and seen >= count) or (not count and b"bye" in data.values()):
                break


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


def udp_echo() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(30)
    print("PORT", s.getsockname()[1], flush=True)
    n = 0
    recvfrom, sendto = s.recvfrom, s.sendto
    while True:
        data, addr = recvfrom(65535)
        if len(data) == 1:
            break
        sendto(data, addr)
        n += 1
    print("RESULT", n, flush=True)


def udp_handshake_echo(poll: bool) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    static, ephemeral = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.0 if poll else 30)
    print("PORT", s.getsockname()[1], flush=True)
    recvfrom, sendto = s.recvfrom, s.sendto
    answer = bytes(80)
    deadline = time.monotonic() + 300  # (polling: bounded however the client ends)
    while True:
        if poll:
            try:
                data, addr = recvfrom(65535)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                os.sched_yield()  # (a process sharing this CPU runs at once)
                continue
        else:
            data, addr = recvfrom(65535)
        if len(data) == 1:
            break
        if len(data) == 33 and data[0] == 0x49:  # b"I"
            key = X25519PublicKey.from_public_bytes(data[1:])
            ephemeral.exchange(key)
            static.exchange(key)
            data = answer
        sendto(data, addr)


def main(argv) -> None:
    plain = "--plain" in argv
    args = [a for a in argv if not a.startswith("--")]
    mode = args[0]
    if mode == "dquic-sink":
        dquic_sink(int(args[1]), plain)
    elif mode == "dquic-echo":
        dquic_echo(int(args[1]) if len(args) > 1 else 0, plain)
    elif mode == "udp-sink":
        udp_sink()
    elif mode == "udp-echo":
        udp_echo()
    elif mode == "udp-handshake-echo":
        udp_handshake_echo("--poll" in argv)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
