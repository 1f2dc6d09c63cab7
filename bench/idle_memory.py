"""Memory held by idle, established server-side connections.

Run: ``python bench/idle_memory.py`` (``-n`` connections, default 5000; ``--help`` for more).

What is measured
----------------
One server ``Endpoint(accept=True)`` (encryption on, the default configuration) accepts ``n``
connections, one at a time. Each comes from its own client ``Endpoint``; the two exchange
datagrams in memory with a virtual clock (5 ms one way), complete the Noise handshake, then the
client sends one small message on stream 0 and the server answers it on the same stream. The
pair is then driven for two seconds of virtual time in all (past every ACK delay, the handshake
space discarded, past the point where a quiet connection gives back its idle memory, only the
idle timer left) and the client side is dropped: only the server's state is kept, as a server
would hold it for a connection that went quiet.

The views, each measured in a fresh child process so that one does not disturb the next:

* ``tracemalloc``: Python-level allocations (objects, and the C buffers the compiled modules get
  from ``PyMem_*``). Exact and deterministic: the live bytes after the ``n`` connections minus
  before, over ``n``. Freed client objects are not counted (tracemalloc counts live blocks).
* ``rss``: resident set size (``/proc/self/statm``) and glibc's count of bytes in use in the C
  heap (``mallinfo2``), before and after, over ``n``; tracemalloc is off here (its own tables would
  count). The C heap holds what tracemalloc cannot see: libcrypto's cipher contexts. RSS also
  holds pymalloc's arenas, fragmentation, and pages freed by the dropped clients that the next
  connections reuse: it is the figure a server's operator sees, not an exact one.
* ``sync`` (``--sync``, not run by default): the blocking ``dquic.DQUIC`` as the server, in a
  process of its own answering each message; this process opens the connections from ``n``
  UDP sockets over loopback (real time, 100 at a time), lets them go quiet and reads the
  server's RSS before and after: the figure an operator of a ``DQUIC`` server sees.
* ``breakdown``: one connection taken apart: for each attribute of the ``CoreConnection``, the bytes of
  the objects reachable from it that belong to this connection only (``sys.getsizeof``, which for
  the compiled stream, range-set and buffer classes includes their C buffers), not those shared
  with the other connections (configuration templates, keys, modules, classes). Plus the C-heap
  bytes of one connection's libcrypto contexts, measured on their own.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import random
import subprocess
import sys
import types

try:
    import dquic  # noqa: F401
except ImportError:  # run from a checkout without installing: use its dquic
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dquic.config import Configuration  # noqa: E402
from dquic.endpoint import ConnectionAccepted, Endpoint  # noqa: E402
from dquic.events import MessageReceived  # noqa: E402
from dquic.testing.pairs import Wire  # noqa: E402

SERVER_ADDR = ("192.0.2.1", 4433)
ONE_WAY = 0.005          # seconds of virtual time a datagram spends on the wire
SETTLE = 2.0             # virtual time a pair is driven after the exchange (then it is idle)
IDLE_TIMEOUT = 86400.0   # both sides: longer than the virtual time of any run
REQUEST = b"ping" * 16   # the client's message (64 bytes)
REPLY = b"pong" * 16     # the server's answer


# ------------------------------------------------------------------------------ the workload
class IdleServer:
    """A server endpoint and the machinery to add idle connections to it one at a time.

    Only the endpoints' public, event-driven API is used (the server endpoint builds output
    and runs timers only for the connections that have some). Both sides announce a one-day
    idle timeout so that the virtual time the run takes never ends a connection."""

    def __init__(self, encryption: bool = True, seed: int = 1, capacity: int = 1 << 20) -> None:
        rng = random.Random(seed)
        self._rand = rng.randbytes
        scfg = Configuration(is_client=False, encryption=encryption, idle_timeout=IDLE_TIMEOUT)
        if encryption:
            from dquic.keys import KeyPair

            scfg = scfg.copy(identity=KeyPair.from_private(rng.randbytes(32)))
        self.ccfg = Configuration(encryption=encryption, idle_timeout=IDLE_TIMEOUT)
        self.server = Endpoint(scfg, accept=True, random_bytes=self._rand,
                               max_connections=capacity)
        self.now = 0.0
        self.count = 0

    def add(self):
        """One more connection: handshake, one request and its reply, then idle. Returns the
        server's ``CoreConnection``."""
        server = self.server
        cep = Endpoint(self.ccfg, random_bytes=self._rand)
        caddr = ("198.51.100.%d" % (1 + self.count % 250), 10000 + self.count % 50000)
        self.count += 1
        t0 = now = self.now
        cconn = cep.connect(SERVER_ADDR, now)
        # (the server sending to any other address: an idle connection sent something)
        wire = Wire(cep, caddr, server, SERVER_ADDR, ONE_WAY)
        sconn = None
        requested = replied = got_reply = False
        for _ in range(100000):
            # the applications: the client asks once established, the server answers
            if cconn.is_established and not requested:
                cconn.send_message(0, REQUEST)
                requested = True
            for conn, ev in server.take_events():
                if isinstance(ev, ConnectionAccepted):
                    sconn = conn
                elif isinstance(ev, MessageReceived) and conn is sconn:
                    while conn.read_message(ev.stream_id, 1 << 16) is not None:
                        pass
                    if not replied:
                        conn.send_message(ev.stream_id, REPLY)
                        replied = True
            for conn, ev in cep.take_events():
                if isinstance(ev, MessageReceived):
                    while conn.read_message(ev.stream_id, 1 << 16) is not None:
                        got_reply = True
            wire.collect(now)
            nxt = wire.next_time()  # the next thing to happen: a delivery or a timer
            if nxt is None or nxt > t0 + SETTLE:
                break
            now = max(now, nxt)
            wire.advance(now)
        else:
            raise RuntimeError("pair did not settle")
        server.take_events()
        if sconn is None or not (sconn.is_established and sconn.handshake_confirmed and got_reply):
            raise RuntimeError("connection %d did not complete its exchange" % self.count)
        self.now = t0 + SETTLE
        return sconn


# ------------------------------------------------------------------------------ measuring
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _c_heap():
    """Bytes in use in glibc's heap (small and mmapped chunks), or None off glibc."""
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return m.uordblks + m.hblkhd


WARMUP = 50


def measure_tracemalloc(n: int, encryption: bool) -> dict:
    import tracemalloc

    tracemalloc.start()
    srv = IdleServer(encryption)
    keep = [srv.add() for _ in range(WARMUP)]  # imports, caches, free lists, table growth
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        keep.append(srv.add())
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    return {"n": n, "tracemalloc_per_conn": (after - before) / n}


def measure_rss(n: int, encryption: bool) -> dict:
    srv = IdleServer(encryption)
    keep = [srv.add() for _ in range(WARMUP)]
    gc.collect()
    rss0, heap0 = _rss(), _c_heap()
    for _ in range(n):
        keep.append(srv.add())
    gc.collect()
    rss1, heap1 = _rss(), _c_heap()
    out = {"n": n, "rss_per_conn": (rss1 - rss0) / n}
    if heap0 is not None:
        out["c_heap_per_conn"] = (heap1 - heap0) / n
    return out


# --- breakdown ------------------------------------------------------------------------------
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, types.CodeType, types.FrameType)


def _reachable(root, stop=frozenset()):
    """ids of the objects reachable from ``root`` (not entering classes, modules, functions)."""
    seen = {}
    todo = [root]
    while todo:
        o = todo.pop()
        i = id(o)
        if i in seen or i in stop or isinstance(o, _OPAQUE):
            continue
        seen[i] = o
        todo.extend(gc.get_referents(o))
    return seen


# attributes in the order they are charged (an object reached from two is counted once, under
# the first); the rest follow alphabetically
_ORDER = ("_hs", "_app", "_spaces", "_streams", "_last_stream", "_send_queue", "_cc", "_pacer",
          "_recovery", "_recv_window", "_sbuf", "_rbuf", "_free_sent", "_seal", "_open",
          "_app_seal", "_app_open", "_handshake", "_local_params", "_peer_params", "_events",
          "_datagrams", "_cids", "config")


def breakdown(conn, other) -> "list[tuple[str, int, int]]":
    """``(attribute, objects, bytes)`` for what ``conn`` alone holds, attribute by attribute.
    ``other`` is another connection of the same server: what both reach is shared, not
    counted. Values made on access (C numbers read as Python ints, properties) are skipped:
    only objects the connection references count."""
    shared = set(_reachable(other)) & set(_reachable(conn))
    shared.discard(id(conn))
    held = {id(o) for o in gc.get_referents(conn)}
    counted = set(shared)
    counted.add(id(conn))
    rows = [("CoreConnection object", 1, sys.getsizeof(conn))]
    names = [n for n in dir(type(conn)) if not n.startswith("__")]
    names = [n for n in _ORDER if n in names] + sorted(n for n in names if n not in _ORDER)
    for name in names:
        try:
            value = getattr(conn, name)
        except Exception:
            continue
        if id(value) not in held:
            continue
        objs = _reachable(value, counted)
        if not objs:
            continue
        counted.update(objs)
        rows.append((name, len(objs), sum(sys.getsizeof(o) for o in objs.values())))
    rest = _reachable(conn, counted)
    if rest:
        rows.append(("(held, no public attribute)", len(rest),
                     sum(sys.getsizeof(o) for o in rest.values())))
    return rows


def _type_rows(conn, other):
    shared = set(_reachable(other)) & set(_reachable(conn))
    shared.discard(id(conn))
    objs = _reachable(conn, shared)
    by_type = collections.Counter()
    counts = collections.Counter()
    for o in objs.values():
        by_type[type(o).__name__] += sys.getsizeof(o)
        counts[type(o).__name__] += 1
    return [(k, counts[k], v) for k, v in by_type.most_common()]


def measure_breakdown(encryption: bool) -> dict:
    srv = IdleServer(encryption)
    conns = [srv.add() for _ in range(WARMUP)]
    gc.collect()
    conn, other = conns[-1], conns[-2]
    out = {"attributes": breakdown(conn, other), "types": _type_rows(conn, other)}
    endpoint = srv.server
    cids = sum(1 for c in endpoint._by_cid.values() if c is conn)
    out["endpoint_cid_entries"] = cids
    out["state"] = {
        "handshake": type(conn._handshake).__name__,
        "streams": len(conn._streams),
        "hs_space_discarded": conn._spaces[0] is None or conn._spaces[0].discarded,
    }
    keys = getattr(conn._app_seal, "keys", None)
    if keys is not None and hasattr(keys, "contexts"):
        out["state"]["libcrypto_contexts_held"] = keys.contexts
    if encryption:
        # libcrypto: a OneRttKeys makes two header-protection contexts at once and one AEAD
        # context per direction on first use (the next generation's keys make theirs only
        # when a key update is tried)
        out["crypto_c"] = crypto_c_contexts()
    return out


def crypto_c_contexts() -> "dict | None":
    if _c_heap() is None:
        return None
    from dquic._protection import OneRttKeys

    m = 2000
    rand = random.Random(7).randbytes
    header = b"\x41" + bytes(8) + b"\x00"
    gc.collect()
    h0 = _c_heap()
    pairs = [OneRttKeys(rand(32), rand(32), "AESGCM") for _ in range(m)]
    gc.collect()
    h1 = _c_heap()
    for k in pairs:
        k.sender.encrypt_packet(header, bytes(40), 0)
        try:
            k.receiver.decrypt_packet(b"\x41" + bytes(8) + b"\x00" + bytes(56), 9, 0)
        except Exception:
            pass  # it does not authenticate; the opening context exists now all the same
    gc.collect()
    h2 = _c_heap()
    return {"on_creation": (h1 - h0) / m, "after_first_seal_and_open": (h2 - h0) / m}


# --- the blocking DQUIC server (real sockets, a process of its own) ------------------------
def sync_server(idle_timeout: float) -> None:
    import dquic

    ep = dquic.DQUIC(idle_timeout=idle_timeout, max_connections=1 << 20)
    ep.bind(("127.0.0.1", 0))
    print(ep.local_address[1], flush=True)
    while True:
        peer, msgs = ep.receive_from(1 << 16)
        if 1 in msgs:  # the measuring process asks how many connections are held
            ep.send_to(peer, {1: str(len(ep.connections)).encode()})
        else:
            ep.send_to(peer, {sid: REPLY for sid in msgs})


def _proc_rss(pid: int) -> int:
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync_clients(port: int, count: int, keep: list, batch: int = 100, stream: int = 0) -> bytes:
    """``count`` client connections from as many sockets, ``batch`` at a time: handshake,
    one request on ``stream``, the reply, then 150 ms more for the last acknowledgements;
    then the connections are dropped. Their sockets go to ``keep`` (closed, their ports could
    come back for later connections, which ``DQUIC`` would take for the same peer). Returns
    the last reply."""
    import selectors
    import socket
    import time

    from dquic.connection import CoreConnection

    server = ("127.0.0.1", port)
    ccfg = Configuration(idle_timeout=IDLE_TIMEOUT)  # the server's connections outlive the run
    done = 0
    reply = b""
    while done < count:
        k = min(batch, count - done)
        sel = selectors.DefaultSelector()
        clients = []
        now = time.monotonic()
        for _ in range(k):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            conn = CoreConnection(ccfg, server)
            conn.connect(now)
            state = {"sock": sock, "conn": conn, "sent": False, "got": False}
            sel.register(sock, selectors.EVENT_READ, state)
            clients.append(state)
        quiet_at = None
        deadline = time.monotonic() + 30
        while True:
            now = time.monotonic()
            for st in clients:
                conn = st["conn"]
                t = conn.get_timer()
                if t is not None and t <= now:
                    conn.handle_timer(now)
                if conn.is_established and not st["sent"]:
                    conn.send_message(stream, REQUEST)
                    st["sent"] = True
                while conn.next_event() is not None:
                    pass
                piece = conn.read_message(stream, 1 << 16)
                if piece is not None:
                    reply = piece[0]
                    st["got"] = True
                for data, addr in conn.datagrams_to_send(now):
                    st["sock"].sendto(data, addr)
            if quiet_at is None and all(st["got"] for st in clients):
                quiet_at = now + 0.15
            if quiet_at is not None and now >= quiet_at:
                break
            if now > deadline:
                raise RuntimeError("sync clients did not complete their exchanges (%d done, %d of"
                                   " %d replied)" % (done, sum(st["got"] for st in clients), k))
            for key, _ in sel.select(0.002):
                st = key.data
                while True:
                    try:
                        data, addr = st["sock"].recvfrom(65536)
                    except BlockingIOError:
                        break
                    st["conn"].receive_datagram(data, addr, time.monotonic())
        for st in clients:
            sel.unregister(st["sock"])
            keep.append(st["sock"])
        sel.close()
        done += k
    return reply


def measure_sync(n: int) -> dict:
    import time

    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                               "sync-server"], stdout=subprocess.PIPE, text=True)
    sockets: list = []
    try:
        port = int(server.stdout.readline())
        _sync_clients(port, WARMUP, sockets)
        time.sleep(2.5)  # the server's connections go quiet and release their idle memory
        rss0 = _proc_rss(server.pid)
        _sync_clients(port, n, sockets)
        time.sleep(2.5)
        rss1 = _proc_rss(server.pid)
        held = int(_sync_clients(port, 1, sockets, stream=1))
    finally:
        server.kill()
        server.wait()
        for sock in sockets:
            sock.close()
    if held != WARMUP + n + 1:
        raise RuntimeError("the server holds %d connections, not %d" % (held, WARMUP + n + 1))
    return {"n": n, "sync_rss_per_conn": (rss1 - rss0) / n}


# ------------------------------------------------------------------------------ driver
def _child(kind: str, n: int, encryption: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "-n", str(n)]
    if not encryption:
        cmd.append("--plain")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit("measurement %r failed" % kind)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt(n):
    return f"{n:,.0f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=5000, help="connections (default 5000)")
    p.add_argument("--plain", action="store_true", help="encryption off (bare transport)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--only", choices=("tracemalloc", "rss", "breakdown", "sync"),
                   action="append", help="run only these measurements")
    p.add_argument("--sync", action="store_true",
                   help="also measure a blocking DQUIC server over loopback (real sockets)")
    p.add_argument("--child", choices=("tracemalloc", "rss", "breakdown", "sync", "sync-server"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    enc = not args.plain
    if args.child == "sync-server":
        sync_server(idle_timeout=IDLE_TIMEOUT)
        return 0
    if args.child:
        fn = {"tracemalloc": lambda: measure_tracemalloc(args.n, enc),
              "rss": lambda: measure_rss(args.n, enc),
              "breakdown": lambda: measure_breakdown(enc),
              "sync": lambda: measure_sync(args.n)}[args.child]
        print(json.dumps(fn()))
        return 0
    kinds = args.only or ["breakdown", "tracemalloc", "rss"] + (["sync"] if args.sync else [])
    results = {k: _child(k, args.n, enc) for k in kinds}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"idle server connections ({'encrypted' if enc else 'plain'}, n={args.n})")
    if "breakdown" in results:
        b = results["breakdown"]
        print("\none connection, by attribute (bytes it alone holds; sys.getsizeof, C buffers"
              " of compiled classes included):")
        total = 0
        for name, count, size in sorted(b["attributes"], key=lambda r: -r[2]):
            total += size
            print(f"  {name:34s} {count:5d} objects {_fmt(size):>8s} B")
        print(f"  {'total':34s} {'':13s} {_fmt(total):>8s} B")
        print("\nthe same objects by type:")
        for name, count, size in b["types"][:25]:
            print(f"  {name:34s} {count:5d} objects {_fmt(size):>8s} B")
        print(f"\nstate: {b['state']}; endpoint routing entries for it: "
              f"{b['endpoint_cid_entries']}")
        if b.get("crypto_c"):
            c = b["crypto_c"]
            print(f"libcrypto (C heap) per connection's 1-RTT keys: {_fmt(c['on_creation'])} B on"
                  f" creation, {_fmt(c['after_first_seal_and_open'])} B once it has sealed and"
                  " opened a packet (only while the connection holds its contexts)")
    if "tracemalloc" in results:
        print(f"\ntracemalloc: {_fmt(results['tracemalloc']['tracemalloc_per_conn'])} B per"
              " connection (Python allocations, exact)")
    if "rss" in results:
        r = results["rss"]
        line = f"RSS: {_fmt(r['rss_per_conn'])} B per connection"
        if "c_heap_per_conn" in r:
            line += f"; C heap in use (mallinfo2): {_fmt(r['c_heap_per_conn'])} B per connection"
        print(line)
    if "sync" in results:
        print(f"DQUIC server process (loopback, real sockets): RSS "
              f"{_fmt(results['sync']['sync_rss_per_conn'])} B per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
