"""Load generator for bench/test_bench_workers.py: handshakes, then closed-loop round trips.

    python bench/workers_load.py HOST PORT [--connections 64] [--seconds 3] [--size 64]

One process, one sans-IO client ``Endpoint`` per UDP socket (one connection each, so the
kernel's 4-tuple hash would spread them too: the steering is by connection ID regardless).
Phase 1 opens every connection at once and times until all handshakes completed (and the first
request was answered); phase 2 keeps one request outstanding per connection for ``--seconds``
and counts the responses. Prints one JSON line: handshakes/s, round trips/s, and this
process's CPU seconds for each phase.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import time

from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.events import ConnectionTerminated, HandshakeCompleted, MessageReceived
from dquic.testing.udp import SocketEndpoint, drive


class _Conn(SocketEndpoint):
    """One client connection on its own socket: a request, and the next one once the whole
    answer came back."""

    def __init__(self, server, sel, size):
        super().__init__(Endpoint(Configuration(idle_timeout=30.0, handshake_timeout=30.0)), sel,
                         read_batch=16)
        self.server = server
        self.request = os.urandom(size)
        self.conn = self.ep.connect(server, time.monotonic())
        self.answers = 0
        self.got = 0
        self.failed = None

    def on_event(self, _conn, ev):
        if isinstance(ev, HandshakeCompleted):
            self.conn.send_message(0, self.request)
        elif isinstance(ev, MessageReceived):
            while (r := self.conn.read_message(ev.stream_id, 1 << 20)) is not None:
                self.got += len(r[0])
                while self.got >= len(self.request):  # one whole answer: the next request
                    self.got -= len(self.request)
                    self.answers += 1
                    self.conn.send_message(0, self.request)
        elif isinstance(ev, ConnectionTerminated):
            self.failed = ev


def run(host, port, connections, seconds, size):
    sel = selectors.DefaultSelector()
    cpu0, t0 = sum(os.times()[:2]), time.monotonic()
    conns = [_Conn((host, port), sel, size) for _ in range(connections)]
    drive(conns, sel, lambda: all(c.answers >= 1 or c.failed for c in conns), 60, max_wait=0.005)
    t1, cpu1 = time.monotonic(), sum(os.times()[:2])
    failed = sum(1 for c in conns if c.failed or not c.answers)
    base = sum(c.answers for c in conns)
    end = t1 + seconds
    drive(conns, sel, lambda: time.monotonic() >= end, seconds + 1, max_wait=0.005)
    t2, cpu2 = time.monotonic(), sum(os.times()[:2])
    trips = sum(c.answers for c in conns) - base
    for c in conns:
        c.conn.close()
        c.flush(time.monotonic())
        c.close()
    return {"connections": connections, "failed": failed,
            "handshake_seconds": t1 - t0, "handshakes_per_s": connections / (t1 - t0),
            "handshake_client_cpu": cpu1 - cpu0,
            "round_trips": trips, "round_trip_seconds": t2 - t1,
            "round_trips_per_s": trips / (t2 - t1), "round_trip_client_cpu": cpu2 - cpu1}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    print(json.dumps(run(a.host, a.port, a.connections, a.seconds, a.size)), flush=True)


if __name__ == "__main__":
    main()
