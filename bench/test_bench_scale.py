"""How one server copes with many idle connections: what a request, a new handshake, an idle
second, a held connection and a stray datagram cost it as the number of connections grows.

Run: ``python -m pytest bench/test_bench_scale.py --benchmark-only -s`` (cases: server ``sync``
and ``aio`` x N = 0, 1,000, 10,000). The large run, which also checks at the end that every one
of the N connections still answers::

    DQUIC_SCALE_N=100000 DQUIC_SCALE_SERVERS=sync \
        python -m pytest bench/test_bench_scale.py --benchmark-only -s

Processes, all on 127.0.0.1: one server, ``bench/scale_peer.py server sync|aio`` (the blocking
``dquic.DQUIC`` echoing with ``receive_from`` -> ``send_to``, or ``dquic.aio.serve`` with an
echo handler; default options, so encryption on and no keep-alive, except ``max_connections`` =
N + ``MARGIN`` and an ``idle_timeout`` longer than any run); the idle clients, in
``bench/scale_peer.py holder`` processes (a sans-IO endpoint and a UDP socket of its own per
connection, one selector loop per process; a process holds as many as its RLIMIT_NOFILE allows,
so N beyond that takes several); and this process, which holds one more connection
(``dquic.DQUIC``) for the round trips, sends the stray datagrams and reads the server's CPU time
and memory. Each case, in order:

1. the measuring connection: handshake and one 64-byte echo;
2. ``unknown_cid_us_0``: server CPU per 61-byte datagram with an unknown connection ID (first
   byte ``0x40 | random``, then random bytes; from a plain UDP socket) while the server holds
   only the measuring connection. ``UNKNOWN_CID_COUNT`` of them, at most
   ``UNKNOWN_CID_SECONDS`` of sending, in chunks, each sent once the server's socket queue is
   empty (queue and drop count from a sock_diag netlink query, else /proc/net/udp; dropped
   datagrams would not count); the server's CPU time over the phase, less its idle rate over
   the same time, divided by the datagrams it received;
3. the ramp: N connections, at most ``CONCURRENCY`` handshakes in progress at once, each
   counted open once its handshake and one 64-byte echo completed; ``hs_s_first`` /
   ``hs_s_last``: handshakes per second over the first and the last tenth of them, and
   ``hs_last_first_ratio``. No handshake starts after ``DQUIC_SCALE_RAMP_TIMEOUT`` seconds
   (default 60 + N / 50; those in progress then get their handshake timeout): if fewer than N
   opened, the phases below are measured with those (``opened``) and the case fails at the end
   saying how many opened;
4. ``rss_kib_per_conn``: (server VmRSS after the ramp - before it) / connections opened, each
   read once the work the traffic before it left behind is done (``wait_quiet``: the server's
   CPU use over half a second under ``QUIET_PCT`` % of a core, waiting ``QUIET_LIMIT`` s at
   most; ``quiet_wait_s`` says how long that took after the ramp: at N = 2,000 about a second,
   the ramp's last acknowledgements costing the server milliseconds each);
5. ``idle_cpu_pct``: server CPU over ``IDLE_SECONDS`` right after that, everything idle, % of
   one core;
6. ``round_trips_s``: 64-byte request / echo on the measuring connection, ``RTT_COUNT`` round
   trips or ``RTT_SECONDS``, whichever ends first (``round_trips``: how many ran);
7. ``unknown_cid_us``: as 2, now with the N connections held;
8. when ``DQUIC_SCALE_N`` is set (``DQUIC_SCALE_CHECK=0`` skips it, ``=1`` adds it to the default
   run): one more 64-byte echo on every one of the N connections, ``CHECK_CONCURRENCY``
   outstanding at most, for at most ``DQUIC_SCALE_CHECK_TIMEOUT`` s (default 60 + N / 100);
   ``check_answered`` counts the connections that answered, and the case fails unless all did.

Server CPU time is the process's CPU clock (all threads, in nanoseconds: ``clock_gettime`` on
``clock_getcpuclockid(pid)``), else utime + stime from /proc/<pid>/stat (10 ms ticks); memory is
VmRSS from /proc/<pid>/status. Every figure goes into the case's ``extra_info`` (``None`` where it
does not apply) and one table is printed at the end. Environment: ``DQUIC_SCALE_N`` (N values,
comma-separated, instead of the default ones), ``DQUIC_SCALE_SERVERS`` (``sync``, ``aio`` or
``sync,aio``), ``DQUIC_SCALE_RAMP_TIMEOUT``, ``DQUIC_SCALE_CHECK``, ``DQUIC_SCALE_CHECK_TIMEOUT``.
Every process is stopped in a ``finally``, every wait has a timeout, and each case's pytest
timeout is sized from N.
"""
from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "scale_peer.py")
sys.path.insert(0, HERE)
import scale_peer  # noqa: E402

DEFAULT_NS = (0, 1_000, 10_000)
NS = tuple(int(v) for v in os.environ["DQUIC_SCALE_N"].split(",")) if os.environ.get("DQUIC_SCALE_N") \
    else DEFAULT_NS
SERVERS = tuple(os.environ.get("DQUIC_SCALE_SERVERS", "sync,aio").split(","))
CHECK = os.environ.get("DQUIC_SCALE_CHECK", "1" if os.environ.get("DQUIC_SCALE_N") else "0") == "1"
MARGIN = 1024  # max_connections = N + MARGIN
IDLE_TIMEOUT = 4 * 3600.0  # longer than any run: no connection times out
CONCURRENCY = 64  # handshakes in progress at once during the ramp
#: Requests outstanding at once in the check. More than that overload a slow server: a request
#: waiting longer than the client's probe timeout is sent again, and each copy costs the server
#: as much as the original (today's server at N = 1,000: 68 requests/s answered with 64
#: outstanding, 267/s with 16).
CHECK_CONCURRENCY = 16
PAYLOAD = b"r" * 64
RTT_COUNT = 2000
RTT_SECONDS = 3.0
IDLE_SECONDS = 3.0
SETTLE = 1.0  # idle time measured before the ramp (for the first unknown-CID phase)
QUIET_PCT = 0.5  # server CPU use (% of a core) under which it counts as quiet
QUIET_LIMIT = 30.0  # longest wait for it to become quiet
UNKNOWN_CID_COUNT = 2000
UNKNOWN_CID_SIZE = 61
UNKNOWN_CID_SECONDS = 5.0
TABLE: list = []
COLUMNS = (("server", "server", "{}"), ("N", "N", "{}"),
           ("round_trips_s", "round trips/s", "{:.0f}"),
           ("hs_s_first", "hs/s 1st tenth", "{:.0f}"), ("hs_s_last", "hs/s last tenth", "{:.0f}"),
           ("hs_last_first_ratio", "last/1st", "{:.2f}"),
           ("idle_cpu_pct", "idle CPU %", "{:.2f}"), ("rss_kib_per_conn", "RSS KiB/conn", "{:.1f}"),
           ("unknown_cid_us_0", "unknown CID us @0", "{:.1f}"),
           ("unknown_cid_us", "unknown CID us @N", "{:.1f}"),
           ("ramp_s", "ramp s", "{:.1f}"), ("check_answered", "answered", "{}"),
           ("case_s", "case s", "{:.0f}"))


def _ramp_timeout(n: int) -> float:
    return float(os.environ.get("DQUIC_SCALE_RAMP_TIMEOUT", 60 + n / 50))


def _check_timeout(n: int) -> float:
    return float(os.environ.get("DQUIC_SCALE_CHECK_TIMEOUT", 60 + n / 100))


def _case_timeout(n: int) -> float:
    """The pytest timeout of a case: every bounded phase plus generous slack."""
    return 300 + _ramp_timeout(n) + (_check_timeout(n) if CHECK else 0)


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    if not TABLE:
        return
    widths = [max(len(title), 6) for _, title, _ in COLUMNS]
    print("\n\n" + "  ".join(f"{t:>{w}}" for (_, t, _), w in zip(COLUMNS, widths)))
    for row in TABLE:
        cells = ("-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in COLUMNS)
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


# ----------------------------------------------------------------------------------------------
# the other processes
class Proc:
    """A scale_peer.py process with a line-based control channel on its stdin / stdout."""

    def __init__(self, *args: str) -> None:
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, PEER, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, n: int = 2000) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-n:]

    def line(self, timeout: float, what: str) -> str:
        """The next line of output, waiting at most ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: no answer within {timeout:.0f} s")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"{what}: the process ended: {self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, command: str, timeout: float, what: str) -> dict:
        """Send one command; its answer ``WORD {json}``."""
        import json

        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return json.loads(self.line(timeout, what).split(None, 1)[1])

    def stop(self) -> None:
        try:
            self.proc.stdin.close()  # end of input: the process exits
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self._err.close()


# ----------------------------------------------------------------------------------------------
# reading the server from /proc
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` (all its threads) so far."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # clock_getcpuclockid(pid): CPUCLOCK_SCHED
    except (OSError, OverflowError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def cpu_source(pid: int) -> str:
    try:
        time.clock_gettime(((~pid) << 3) | 2)
        return "cpu clock"
    except (OSError, OverflowError):
        return "/proc stat ticks"


def cpu_rate(pid: int, seconds: float) -> float:
    """Fraction of one core the process used over the next ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def wait_quiet(pid: int, limit: float = QUIET_LIMIT) -> float:
    """Wait until the process's CPU use over half a second is under ``QUIET_PCT`` % of a core
    (the work the traffic before left behind, such as acknowledgements and retransmissions, is
    done), at most ``limit`` seconds; returns how long that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if cpu_rate(pid, 0.5) < QUIET_PCT / 100:
            break
    return time.monotonic() - t0


_SOCK_DIAG_BY_FAMILY = 20
_INET_DIAG_SKMEMINFO = 7
_SK_MEMINFO_DROPS = 8


def _udp_state_netlink(port: int):
    """``(receive queue bytes, drops)`` of the UDP socket bound to 127.0.0.1:``port`` from one
    NETLINK_SOCK_DIAG lookup (microseconds, however many sockets exist), or None."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    try:
        addr = socket.inet_aton("127.0.0.1") + bytes(12)
        # inet_diag_req_v2 with the exact socket: the lookup takes the packet's view, source =
        # any remote port, destination = the bound address; no cookie to check
        sockid = struct.pack("!HH", 1, port) + addr + addr + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_UDP,
                          1 << (_INET_DIAG_SKMEMINFO - 1), 0, 0xFFFFFFFF) + sockid
        nl.sendto(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req, (0, 0))
        data = nl.recv(1 << 16)
    finally:
        nl.close()
    length, kind = struct.unpack_from("=IH", data)
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None  # NLMSG_ERROR: no such socket
    # inet_diag_msg (72 bytes): 4 bytes, the socket id (48), expires, rqueue, wqueue, uid, inode
    rqueue = struct.unpack_from("=I", data, 16 + 4 + 48 + 4)[0]
    off = 16 + 72
    while off + 4 <= length:
        alen, atype = struct.unpack_from("=HH", data, off)
        if atype == _INET_DIAG_SKMEMINFO and alen >= 4 + 4 * (_SK_MEMINFO_DROPS + 1):
            return rqueue, struct.unpack_from("=I", data, off + 4 + 4 * _SK_MEMINFO_DROPS)[0]
        if alen < 4:
            break
        off += (alen + 3) & ~3
    return None


def _udp_state_proc(port: int):
    """The same from /proc/net/udp (slow with many sockets: 0.2 s with 20,000)."""
    key = "%08X:%04X" % (struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0], port)
    with open("/proc/net/udp") as f:
        for line in f:
            if key in line:
                parts = line.split()
                if parts[1] == key:
                    return int(parts[4].split(":")[1], 16), int(parts[12])
    return None


def udp_socket_state(port: int):
    """``(receive queue bytes, drops)`` of the UDP socket bound to 127.0.0.1:``port``, or None
    if it is not found."""
    try:
        state = _udp_state_netlink(port)
    except (OSError, struct.error, AttributeError):
        state = None
    return state if state is not None else _udp_state_proc(port)


# ----------------------------------------------------------------------------------------------
# the phases
def unknown_cid_cost(pid: int, port: int, idle_rate: float) -> dict:
    """Server CPU per datagram with an unknown connection ID (see the module docstring)."""
    rnd = random.Random(0x5CA1E)
    junk = [bytes([0x40 | rnd.getrandbits(6)]) + rnd.randbytes(UNKNOWN_CID_SIZE - 1)
            for _ in range(UNKNOWN_CID_COUNT)]
    dest = ("127.0.0.1", port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        state = udp_socket_state(port)
        drops0 = state[1] if state else 0
        c0, t0 = cpu_seconds(pid), time.monotonic()
        sent = 0
        chunk = 50
        drained = True
        while sent < UNKNOWN_CID_COUNT and time.monotonic() - t0 < UNKNOWN_CID_SECONDS:
            tc = time.monotonic()
            for data in junk[sent:sent + chunk]:
                s.sendto(data, dest)
            sent = min(sent + chunk, UNKNOWN_CID_COUNT)
            # the next chunk once the server has read this one (none dropped)
            drained = False
            limit = t0 + UNKNOWN_CID_SECONDS + 30
            while time.monotonic() < limit:
                state = udp_socket_state(port)
                if state is None or state[0] == 0:
                    drained = True
                    break
                time.sleep(0.002)
            if not drained:
                break
            # chunks of about 0.2 s each
            chunk = max(50, min(500, int(chunk * 0.2 / max(time.monotonic() - tc, 1e-3))))
        # the server has read everything; let it finish its last batch (up to 64 reads)
        per = max(cpu_seconds(pid) - c0, 0.0) / sent
        time.sleep(min(2.0, 0.05 + 100 * per))
        c1, t1 = cpu_seconds(pid), time.monotonic()
        state = udp_socket_state(port)
        dropped = (state[1] - drops0) if state else 0
        received = sent - dropped
        busy = max(0.0, (c1 - c0) - idle_rate * (t1 - t0))
        if not drained:
            pytest.fail(f"unknown connection IDs: the server did not read {chunk} datagrams "
                        f"within {UNKNOWN_CID_SECONDS + 30:.0f} s")
        return {"us": busy / max(received, 1) * 1e6, "sent": sent, "dropped": dropped,
                "seconds": t1 - t0}
    finally:
        s.close()


def round_trips(d, dest) -> tuple:
    """``RTT_COUNT`` 64-byte echoes or ``RTT_SECONDS``, whichever ends first: ``(rate, count)``."""
    msg = {0: PAYLOAD}
    d.send_to(dest, msg)  # untimed: the connection may have idled for a while
    d.receive_from(1 << 16)
    n = 0
    t0 = time.perf_counter()
    end = t0 + RTT_SECONDS
    while n < RTT_COUNT:
        d.send_to(dest, msg)
        _, back = d.receive_from(1 << 16)
        assert back == msg, back
        n += 1
        if time.perf_counter() >= end:
            break
    return n / (time.perf_counter() - t0), n


def start_holders(port: int, n: int, per_holder: int = 0) -> list:
    """Holder processes for ``n`` connections, all ready (before the ramp's clock starts): as
    many as each may hold (RLIMIT_NOFILE), or ``per_holder`` when that is less."""
    holders = []
    try:
        left = n
        while left > 0:
            if len(holders) >= 250:
                raise RuntimeError(f"{n} connections need too many holder processes")
            ask = min(left, per_holder) if per_holder else left
            h = Proc("holder", str(port), "--connections", str(ask), "--net", str(len(holders) + 1),
                     "--idle-timeout", str(IDLE_TIMEOUT))
            holders.append(h)
            got = int(h.line(60, "holder start").split()[1])
            if got <= 0:
                raise RuntimeError("a holder process cannot open any socket (RLIMIT_NOFILE)")
            left -= got
        return holders
    except BaseException:
        for h in holders:
            h.stop()
        raise


def ramp(holders: list, n: int, timeout: float) -> dict:
    """Open ``n`` connections through the holders, one holder after the other."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    times = []
    opened = failed = 0
    failures: dict = {}
    left = n
    for h in holders:
        remaining = deadline - time.monotonic()
        if left <= 0 or remaining <= 0:
            break
        r = h.ask(f"open {left} {CONCURRENCY} {remaining:.3f}", remaining + 60, "ramp")
        times.extend(r["t0"] + t for t in r["hs_times"])
        opened += r["opened"]
        failed += r["failed"]
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
        left -= r["started"]
    times.sort()
    rates = scale_peer.tenth_rates(t0, times)
    return {"opened": opened, "failed": failed, "failures": failures,
            "seconds": time.monotonic() - t0, **rates}


def scenario(kind: str, n: int, res: dict) -> None:
    """One case (see the module docstring); figures go into ``res`` as they are measured."""
    from dquic.sync import DQUIC

    t_case = time.monotonic()
    server = Proc("server", kind, "--max-connections", str(n + MARGIN),
                  "--idle-timeout", str(IDLE_TIMEOUT))
    holders = []
    ramp_error = None
    try:
        port = int(server.line(60, "server start").split()[1])
        pid = server.pid
        res["cpu_source"] = cpu_source(pid)
        dest = ("127.0.0.1", port)
        with DQUIC(idle_timeout=IDLE_TIMEOUT, linger=1.0) as d:
            d.settimeout(60)
            d.send_to(dest, {0: PAYLOAD})  # the measuring connection
            assert d.receive_from(1 << 16)[1] == {0: PAYLOAD}
            idle0 = cpu_rate(pid, SETTLE)
            res["idle_cpu_pct_0"] = 100 * idle0
            u = unknown_cid_cost(pid, port, idle0)
            res.update(unknown_cid_us_0=u["us"], unknown_cid_sent_0=u["sent"],
                       unknown_cid_dropped_0=u["dropped"], unknown_cid_s_0=u["seconds"])
            wait_quiet(pid)
            rss0 = scale_peer.rss_kib(pid)
            res["rss_kib_0"] = rss0
            if n:
                holders = start_holders(port, n)
                res["holder_processes"] = len(holders)
                timeout = _ramp_timeout(n)
                r = ramp(holders, n, timeout)
                res.update(ramp_s=r["seconds"], opened=r["opened"], open_failed=r["failed"],
                           hs_s_first=r["first_tenth_hs_s"], hs_s_last=r["last_tenth_hs_s"])
                if r["first_tenth_hs_s"] and r["last_tenth_hs_s"]:
                    res["hs_last_first_ratio"] = r["last_tenth_hs_s"] / r["first_tenth_hs_s"]
                if r["failures"]:
                    res["open_failures"] = r["failures"]
                if r["opened"] < n:
                    # measured all the same, with the connections that did open
                    ramp_error = (f"ramp: {r['opened']} of {n} connections opened in "
                                  f"{r['seconds']:.1f} s ({r['failed']} failed: {r['failures']}; "
                                  f"no new handshake after {timeout:g} s, "
                                  f"DQUIC_SCALE_RAMP_TIMEOUT changes that)")
                    res["ramp_error"] = ramp_error
                res["quiet_wait_s"] = wait_quiet(pid)  # QUIET_LIMIT: never became quiet
                rss1 = scale_peer.rss_kib(pid)
                res["rss_kib_N"] = rss1
                if r["opened"]:
                    res["rss_kib_per_conn"] = (rss1 - rss0) / r["opened"]
            idle = cpu_rate(pid, IDLE_SECONDS)
            res["idle_cpu_pct"] = 100 * idle
            rate, count = round_trips(d, dest)
            res.update(round_trips_s=rate, round_trips=count)
            u = unknown_cid_cost(pid, port, idle)
            res.update(unknown_cid_us=u["us"], unknown_cid_sent=u["sent"],
                       unknown_cid_dropped=u["dropped"], unknown_cid_s=u["seconds"])
            if CHECK and n and not ramp_error:
                answered = failed = unanswered = 0
                t0 = time.monotonic()
                deadline = t0 + _check_timeout(n)
                for h in holders:
                    remaining = max(deadline - time.monotonic(), 1.0)
                    c = h.ask(f"check {CHECK_CONCURRENCY} {remaining:.3f}", remaining + 60, "check")
                    answered += c["answered"]
                    failed += c["failed"]
                    unanswered += c["unanswered"]
                res.update(check_answered=answered, check_failed=failed,
                           check_unanswered=unanswered, check_s=time.monotonic() - t0)
            res["server_connections"] = server.ask("stats", 120, "server stats")["connections"]
        if ramp_error:
            res["error"] = ramp_error
        elif CHECK and n and res["check_answered"] != n:
            res["error"] = (f"check: {res['check_answered']} of {n} connections answered "
                            f"({res['check_failed']} failed, {res['check_unanswered']} no answer "
                            f"in time)")
    finally:
        for h in holders:
            h.stop()
        server.stop()
        res["case_s"] = time.monotonic() - t_case


@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.timeout(_case_timeout(n)))
                               for n in NS])
@pytest.mark.parametrize("kind", SERVERS)
def test_scale(benchmark, kind, n):
    res = {"server": kind, "N": n}
    raised = []

    def run():
        # a failure is raised after pedantic returns: a benchmark without a timing breaks
        # pytest-benchmark's JSON report of the whole session
        try:
            scenario(kind, n, res)
        except (Exception, pytest.fail.Exception) as exc:
            raised.append(exc)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        for key, _, _ in COLUMNS:
            res.setdefault(key, None)
        benchmark.extra_info.update(res)
        TABLE.append(res)
        print(f"\n{kind} N={n}: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    if raised:
        raise raised[0]
    if res.get("error"):
        pytest.fail(res["error"])
