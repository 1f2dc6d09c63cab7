"""Scaling of workers on one port (dquic.workers): handshakes/s and round trips/s served by 1
and by 2 worker processes, and the server's CPU per handshake and per round trip.

Run: ``python -m pytest bench/test_bench_workers.py --benchmark-only -s``

Processes, all on 127.0.0.1: a ``WorkerPool`` of W workers (aio echo handler, default options:
encryption on) and ``DQUIC_WORKERS_LOADGENS`` (default 1) load generators
(``bench/workers_load.py``: one sans-IO client endpoint and UDP socket per connection), each
opening ``CONNECTIONS`` connections. Per W, in one run: first the handshake phase (every
connection opened at once, until each had its first 64-byte echo), then the round-trip phase
(one request outstanding per connection, ``SECONDS`` long). Server CPU is utime + stime of the
worker processes from /proc/<pid>/stat over each load generator run; per round trip it is the
CPU of the round-trip run less that run's handshakes (at the handshake run's CPU per
handshake). The load generators share the machine's cores with the workers, so on a machine
with few cores the ratio workers=2 / workers=1 shows whether the server or the load generator
is the bottleneck: see ``load_cpu_share`` (the load generators' CPU over wall time, in cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux steering")

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECTIONS = int(os.environ.get("DQUIC_WORKERS_BENCH_CONNECTIONS", "64"))
SECONDS = float(os.environ.get("DQUIC_WORKERS_BENCH_SECONDS", "4"))
LOADGENS = int(os.environ.get("DQUIC_WORKERS_LOADGENS", "1"))
TICK = os.sysconf("SC_CLK_TCK")


async def _echo(conn):
    while True:
        stream_id, data = await conn.receive_message()
        await conn.send_message(stream_id, data)


def _cpu(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def _load(address, seconds):
    """Run the load generators at once; their JSON results and the wall time."""
    cmd = [sys.executable, os.path.join(HERE, "workers_load.py"), address[0], str(address[1]),
           "--connections", str(CONNECTIONS), "--seconds", str(seconds)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(LOADGENS)]
    out = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=120 + seconds)
            assert p.returncode == 0
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out, time.monotonic() - t0


def _measure(workers):
    from dquic.workers import WorkerPool

    with WorkerPool(("127.0.0.1", 0), workers, _echo, drain_timeout=2.0, linger=0.5) as pool:
        assert pool.workers == workers
        time.sleep(0.5)
        pids = [p for p in pool.pids() if p]
        # handshake phase (the load generator's round-trip phase is empty)
        c0 = _cpu(pids)
        hs, _ = _load(pool.address, 0)
        c1 = _cpu(pids)
        handshakes = sum(r["connections"] - r["failed"] for r in hs)
        cpu_per_hs = (c1 - c0) / handshakes
        hs_per_s = handshakes / max(r["handshake_seconds"] for r in hs)
        time.sleep(1.0)  # the closes of the handshake run are done
        c2 = _cpu(pids)
        rt, wall = _load(pool.address, SECONDS)
        c3 = _cpu(pids)
        trips = sum(r["round_trips"] for r in rt)
        rt_per_s = trips / max(r["round_trip_seconds"] for r in rt)
        rt_handshakes = sum(r["connections"] - r["failed"] for r in rt)
        cpu_per_rt = (c3 - c2 - rt_handshakes * cpu_per_hs) / trips
        load_cpu = sum(r["round_trip_client_cpu"] for r in rt) / max(
            r["round_trip_seconds"] for r in rt)
        stats = pool.stats()
        time.sleep(0.3)
        stats = pool.stats()
    return {
        "workers": workers, "handshakes_per_s": hs_per_s, "server_cpu_per_handshake_us": cpu_per_hs * 1e6,
        "round_trips_per_s": rt_per_s, "server_cpu_per_round_trip_us": cpu_per_rt * 1e6,
        "server_cpu_cores_round_trips": (c3 - c2) / wall, "load_cpu_share": load_cpu,
        "failed": sum(r["failed"] for r in hs + rt),
        "misrouted": sum(s["misrouted"] for s in stats),
    }


def test_bench_workers_scaling(benchmark):
    results = {}

    def run():
        for w in (1, 2):
            results[w] = _measure(w)

    benchmark.pedantic(run, rounds=1, iterations=1)
    one, two = results[1], results[2]
    for w, r in results.items():
        for k, v in r.items():
            benchmark.extra_info[f"w{w}_{k}"] = v
    benchmark.extra_info["handshakes_ratio"] = two["handshakes_per_s"] / one["handshakes_per_s"]
    benchmark.extra_info["round_trips_ratio"] = two["round_trips_per_s"] / one["round_trips_per_s"]
    print(f"\nworkers on one port: {LOADGENS} load generator(s) x {CONNECTIONS} connections, "
          f"{os.cpu_count()} cores")
    print("workers  handshakes/s  server us/handshake  round trips/s  server us/round trip  "
          "server cores  load-gen cores")
    for w, r in results.items():
        print(f"{w:>7}  {r['handshakes_per_s']:>12,.0f}  {r['server_cpu_per_handshake_us']:>19,.0f}  "
              f"{r['round_trips_per_s']:>13,.0f}  {r['server_cpu_per_round_trip_us']:>20,.1f}  "
              f"{r['server_cpu_cores_round_trips']:>12.2f}  {r['load_cpu_share']:>14.2f}")
    print(f"ratio 2/1: handshakes {benchmark.extra_info['handshakes_ratio']:.2f}x, "
          f"round trips {benchmark.extra_info['round_trips_ratio']:.2f}x")
    assert one["failed"] == two["failed"] == 0
    assert one["misrouted"] == two["misrouted"] == 0
