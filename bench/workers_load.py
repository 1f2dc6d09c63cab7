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
import socket
import time

from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.events import ConnectionTerminated, HandshakeCompleted, MessageReceived


class _Conn:
    def __init__(self, server, sel, size):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, self)
        self.ep = Endpoint(Configuration(idle_timeout=30.0, handshake_timeout=30.0))
        self.request = os.urandom(size)
        self.conn = self.ep.connect(server, time.monotonic())
        self.answers = 0
        self.got = 0
        self.failed = None

    def flush(self, now):
        for data, addr in self.ep.datagrams_to_send(now):
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                pass

    def read(self, now):
        for _ in range(16):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            self.ep.receive_datagram(data, addr, now)

    def events(self):
        while (item := self.ep.next_event()) is not None:
            _, ev = item
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


def _drive(conns, sel, until, max_time):
    deadline = time.monotonic() + max_time
    while not until() and time.monotonic() < deadline:
        now = time.monotonic()
        timers = [t for c in conns if (t := c.ep.get_timer()) is not None]
        wait = min([0.005] + [max(0.0, t - now) for t in timers])
        for key, _ in sel.select(wait):
            key.data.read(time.monotonic())
        now = time.monotonic()
        for c in conns:
            t = c.ep.get_timer()
            if t is not None and t <= now:
                c.ep.handle_timer(now)
            c.events()
            c.flush(now)


def run(host, port, connections, seconds, size):
    sel = selectors.DefaultSelector()
    cpu0, t0 = sum(os.times()[:2]), time.monotonic()
    conns = [_Conn((host, port), sel, size) for _ in range(connections)]
    _drive(conns, sel, lambda: all(c.answers >= 1 or c.failed for c in conns), 60)
    t1, cpu1 = time.monotonic(), sum(os.times()[:2])
    failed = sum(1 for c in conns if c.failed or not c.answers)
    base = sum(c.answers for c in conns)
    end = t1 + seconds
    _drive(conns, sel, lambda: time.monotonic() >= end, seconds + 1)
    t2, cpu2 = time.monotonic(), sum(os.times()[:2])
    trips = sum(c.answers for c in conns) - base
    for c in conns:
        c.conn.close()
        c.flush(time.monotonic())
        c.sock.close()
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
