"""The pieces of the many-connections benchmark (bench/test_bench_scale.py, bench/scale_peer.py):
its arithmetic, its readings of the server from the kernel, and a small run of its processes.
Skipped where bench/ is not next to tests/ (an installed wheel) or off Linux."""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(BENCH, "test_bench_scale.py")) or not sys.platform.startswith("linux"),
    reason="needs the source tree's bench/ and Linux /proc")


@pytest.fixture(scope="module")
def scale():
    """bench/test_bench_scale.py as a module (not collected as tests here)."""
    spec = importlib.util.spec_from_file_location("_bench_scale", os.path.join(BENCH, "test_bench_scale.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tenth_rates(scale):
    rates = scale.scale_peer.tenth_rates
    t0 = 100.0
    even = [t0 + 0.01 * i for i in range(1, 101)]  # 100 completions, one every 10 ms
    r = rates(t0, even)
    assert r["first_tenth_hs_s"] == pytest.approx(100.0)
    assert r["last_tenth_hs_s"] == pytest.approx(100.0)
    # the last tenth twice as slow: 10 completions over the last 0.2 s
    slow = even[:90] + [even[89] + 0.02 * i for i in range(1, 11)]
    r = rates(t0, slow)
    assert r["first_tenth_hs_s"] == pytest.approx(100.0)
    assert r["last_tenth_hs_s"] == pytest.approx(50.0)
    assert rates(t0, [])["first_tenth_hs_s"] is None
    assert rates(t0, [t0 + 0.5])["last_tenth_hs_s"] == pytest.approx(2.0)


def test_udp_socket_state_matches_proc(scale):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small: some are dropped
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert scale.udp_socket_state(port) == (0, 0)
        for _ in range(40):
            client.sendto(b"\x40" + bytes(60), ("127.0.0.1", port))
        queued, dropped = scale.udp_socket_state(port)
        assert queued > 0 and dropped > 0
        assert scale._udp_state_proc(port) == (queued, dropped)
        server.setblocking(False)
        while True:  # drain: the queue reads empty again, the drops stay counted
            try:
                server.recv(100)
            except BlockingIOError:
                break
        assert scale.udp_socket_state(port) == (0, dropped)
    finally:
        server.close()
        client.close()


def test_cpu_seconds_of_another_process(scale):
    import subprocess

    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.3: pass\ntime.sleep(5)"])
    try:
        time.sleep(1.0)
        used = scale.cpu_seconds(busy.pid)
        assert 0.25 < used < 1.0, used
        assert scale.cpu_rate(busy.pid, 0.2) < 0.05  # now asleep
    finally:
        busy.kill()
        busy.wait(10)


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_small_run(scale, kind):
    """A server and two holder processes: 20 connections open, each answers a check, the
    server holds them."""
    server = scale.Proc("server", kind, "--max-connections", "100", "--idle-timeout", "600")
    holders = []
    try:
        port = int(server.line(60, "server start").split()[1])
        holders = scale.start_holders(port, 20, per_holder=12)
        assert len(holders) == 2
        r = scale.ramp(holders, 20, 60)
        assert (r["opened"], r["failed"]) == (20, 0), r
        assert r["first_tenth_hs_s"] > 0 and r["last_tenth_hs_s"] > 0
        checks = [h.ask("check 8 60", 120, "check") for h in holders]
        assert [(c["answered"], c["failed"], c["unanswered"]) for c in checks] == [(12, 0, 0), (8, 0, 0)]
        stats = server.ask("stats", 60, "stats")
        assert stats["connections"] == 20 and stats["pid"] == server.pid
        assert stats["rss_kib"] > 0
    finally:
        for h in holders:
            h.stop()
        server.stop()
