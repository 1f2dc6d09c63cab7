"""The ``demo`` command: a server and a client on loopback with a lossy relay between them, every
byte verified."""
from __future__ import annotations

import argparse
import hashlib
import random
import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO, Tuple

from .._version import __version__
from ..config import Configuration
from ._common import (EXIT_FAILURE, EXIT_OK, KiB, MiB, CommandFailed, _bound_address, _mbit, _mib, _ms,
                      _Progress, _size)


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


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """The ``demo`` command (see the module docstring); returns the exit code."""
    from ..keys import KeyPair
    from ..sync import DQUIC
    from ..testing.relay import LossyRelay

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


