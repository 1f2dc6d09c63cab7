"""One connection, a million stream ids: every message delivered once, byte-exact, in order per
id, with memory flat over the run (PROTOCOL.md §16.7).

Run: ``python bench/many_ids.py`` (``--ids N`` for another count, ``--max-streams M`` for the
server's limit). A sync ``DQUIC`` client sends one message on each of ``N`` distinct ids (and a
second one on every 1000th id, later, to check order across incarnations) to a sync server on
127.0.0.1 in the same process; a thread reads. Prints the process RSS and the stream objects
each side's core holds at the start, the middle and the end; exits non-zero on any missing,
duplicated, reordered or corrupted message.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dquic.sync import DQUIC  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def payload(sid: int, seq: int) -> bytes:
    tag = b"%d:%d:" % (sid, seq)
    return tag + hashlib.blake2b(tag, digest_size=16 + sid % 32).digest()


def core_streams(d: DQUIC) -> int:
    return sum(len(c._streams) for c in d._endpoint.connections)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--max-streams", type=int, default=1024)
    args = ap.parse_args()
    n = args.ids
    reuse = list(range(0, n, 1000))
    expected_total = n + len(reuse)

    server = DQUIC(max_streams=args.max_streams)
    server.bind(("127.0.0.1", 0))
    client = DQUIC()
    client.settimeout(60.0)
    addr = server.local_address

    seen = bytearray(n)          # messages received per id (0, 1, 2)
    errors = []
    received = [0]
    done = threading.Event()

    def reader():
        server.settimeout(0.5)
        while not done.is_set():
            try:
                _, msgs = server.receive_from(1 << 20)
            except TimeoutError:
                continue
            for sid, data in msgs.items():
                seq = seen[sid]
                if seq > 1 or data != payload(sid, seq):
                    errors.append((sid, seq, data[:40]))
                seen[sid] = seq + 1
                received[0] += 1
            if received[0] >= expected_total:
                done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    samples = []

    def sample(label):
        samples.append((label, time.monotonic(), rss_mib(), core_streams(client),
                        core_streams(server), received[0]))
        print("%-6s t=%7.1fs rss=%7.1f MiB  client streams=%5d  server streams=%5d  "
              "received=%d" % (label, samples[-1][1] - samples[0][1] if samples[1:] else 0.0,
                               *samples[-1][2:]), flush=True)

    client.send_to(addr, {0: payload(0, 0)})  # the connection (and its buffers) exist from here
    sample("start")
    start = time.monotonic()
    for sid in range(1, n):
        client.send_to(addr, {sid: payload(sid, 0)})
        if sid == n // 2:
            sample("middle")
        if sid % 100_000 == 0:
            print("  sent %d ids, %.0f msgs/s" % (sid, sid / (time.monotonic() - start)), flush=True)
    for sid in reuse:
        client.send_to(addr, {sid: payload(sid, 1)})
    if not done.wait(300):
        errors.append(("timeout", received[0], expected_total))
    elapsed = time.monotonic() - start
    # quiet for a while: halves that only waited for more messages end, state goes
    time.sleep(3.0)
    sample("end")
    client.close()
    server.close()
    missing = [sid for sid in range(n) if seen[sid] != (2 if sid % 1000 == 0 else 1)]
    print("%d ids, %d messages in %.1f s (%.0f msgs/s); errors: %d, missing/duplicated ids: %d"
          % (n, received[0], elapsed, received[0] / elapsed, len(errors), len(missing)))
    for e in errors[:5]:
        print("  error:", e)
    return 1 if errors or missing else 0


if __name__ == "__main__":
    sys.exit(main())
