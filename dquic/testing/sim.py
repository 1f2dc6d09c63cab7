"""Deterministic discrete-event network simulator.

The simulator drives *sans-IO* endpoints ("nodes") over simulated links with a virtual clock.
Nothing here touches a socket or the wall clock: every delay, loss and reordering decision is a
pure function of the network seed, so a failing scenario replays identically.

A node is any object with four methods (see :class:`Node`)::

    receive_datagram(data, addr, now)     # a datagram from ``addr`` arrived at virtual time ``now``
    datagrams_to_send(now) -> [(data, dest_addr), ...]
    get_timer() -> float | None           # absolute virtual time of the node's next timer
    handle_timer(now)

After every call into a node (a delivery or a timer) the simulator collects
``datagrams_to_send(now)``, puts each datagram on the link towards its destination, then re-reads
``get_timer()``. Datagrams handed over at the same instant leave in the order they were returned.

Event loop
----------
A binary heap of tuples ``(time, seq, kind, ...)``; ``seq`` is a global counter, so events at the
same virtual time run in the order they were scheduled (deliveries on one link stay FIFO unless an
impairment deliberately reorders them). Each node has at most one live timer event; a timer moved
later does not touch the heap (the pending event is re-armed lazily when it comes due), a timer
moved earlier pushes a new event and the old one is skipped when popped.

Links
-----
Every ordered address pair has one :class:`_Link` (created on first use from the network's
default :class:`LinkConfig`, or explicitly by :meth:`Network.link`). A datagram entering a link is
checked, in order, against: the MTU, blackhole periods, the bottleneck queue (tail drop), random
and Gilbert-Elliott loss. A datagram that survives is serialised at the link bandwidth after the
ones queued before it, then propagates for ``delay`` (+ jitter, + ``reorder_delay`` for the
packets picked for reordering), possibly with bits flipped, possibly duplicated.
Lost packets still occupy the bottleneck: they are lost downstream of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import math
import random
from collections import deque
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    runtime_checkable,
)

__all__ = [
    "Address",
    "Node",
    "VirtualClock",
    "LinkConfig",
    "GilbertElliott",
    "LinkStats",
    "Network",
    "SimulationError",
    "SimulationTimeout",
    "Livelock",
    "Deadlock",
    "EVENT_SEND",
    "EVENT_DELIVER",
    "EVENT_TIMER",
    "EVENT_DROP_LOSS",
    "EVENT_DROP_QUEUE",
    "EVENT_DROP_BLACKHOLE",
    "EVENT_DROP_MTU",
    "EVENT_DROP_UNREACHABLE",
    "EVENT_DUPLICATE",
    "EVENT_CORRUPT",
    "EVENT_REORDER",
    "jain_fairness",
]

Address = Tuple[str, int]

# Trace event kinds passed to ``on_event`` callbacks as the second argument.
EVENT_SEND = "send"  # a node handed a datagram to a link
EVENT_DELIVER = "deliver"  # a datagram reached its destination node
EVENT_TIMER = "timer"  # a node's timer fired (src == dst == the node, size 0)
EVENT_DROP_LOSS = "drop.loss"
EVENT_DROP_QUEUE = "drop.queue"
EVENT_DROP_BLACKHOLE = "drop.blackhole"
EVENT_DROP_MTU = "drop.mtu"
EVENT_DROP_UNREACHABLE = "drop.unreachable"  # no node at the destination on arrival
EVENT_DUPLICATE = "duplicate"
EVENT_CORRUPT = "corrupt"
EVENT_REORDER = "reorder"

TraceCallback = Callable[[float, str, Address, Address, int], None]

# Heap event kinds (the third tuple element).
_DELIVER = 0
_TIMER = 1


class SimulationError(AssertionError):
    """A simulation did not reach its goal. Subclasses say why.

    An ``AssertionError`` so that a scenario test that never completes reads as a test failure.
    """


class SimulationTimeout(SimulationError):
    """Virtual time would pass ``max_time`` before the ``until`` condition became true."""


class Livelock(SimulationError):
    """Too many events without progress.

    Raised when ``max_events`` events ran without the ``until`` condition becoming true, or when
    a long run of consecutive events all happened at the same virtual time (e.g. a node that keeps
    returning a timer at or before ``now``).
    """


class Deadlock(SimulationError):
    """No event is pending but the ``until`` condition is still false: it can never come true."""


@runtime_checkable
class Node(Protocol):
    """The sans-IO endpoint interface the simulator drives."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]: ...

    def get_timer(self) -> Optional[float]: ...

    def handle_timer(self, now: float) -> None: ...


class VirtualClock:
    """The simulation's clock: float seconds since the start of the simulation (starts at 0).

    Calling the clock returns the current virtual time, so it can stand in wherever a
    ``time.monotonic``-like function is expected. Only the :class:`Network` advances it.
    """

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        """Return the current virtual time in seconds."""
        return self.now

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now!r})"


def _check_probability(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not (value >= 0.0) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class GilbertElliott:
    """Two-state bursty loss model (Gilbert-Elliott).

    Each datagram is lost with probability ``loss_in_bad`` in the bad state and ``loss_in_good``
    in the good state; after the loss decision the state changes with ``p_good_to_bad`` /
    ``p_bad_to_good``. With ``loss_in_bad=1`` and ``loss_in_good=0`` loss bursts have a mean
    length of ``1 / p_bad_to_good`` datagrams and the long-run loss rate is
    ``p_good_to_bad / (p_good_to_bad + p_bad_to_good)``.
    """

    p_good_to_bad: float
    p_bad_to_good: float
    loss_in_bad: float = 1.0
    loss_in_good: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_probability(f.name, getattr(self, f.name))

    @property
    def stationary_loss(self) -> float:
        """The long-run loss probability of the chain."""
        denom = self.p_good_to_bad + self.p_bad_to_good
        if denom == 0.0:
            return self.loss_in_good
        bad = self.p_good_to_bad / denom
        return bad * self.loss_in_bad + (1.0 - bad) * self.loss_in_good


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """Properties of one direction of a simulated link. Immutable; derive variants with
    ``dataclasses.replace``.

    ``delay``: one-way propagation delay in seconds.
    ``jitter``: extra per-datagram delay in seconds, drawn from ``jitter_distribution``
    (``"uniform"``: uniform in [0, jitter]; ``"normal"``: |N(0, jitter)|). Jitter never reorders
    datagrams unless ``jitter_reorders`` is true: a datagram is held back to arrive no earlier
    than the one sent before it on the same link.
    ``bandwidth``: bits per second, ``None`` for infinite. Datagrams are serialised one after the
    other through a FIFO queue, taking ``8 * len(data) / bandwidth`` seconds each.
    ``queue_limit``: bytes the bottleneck queue may hold (including the datagram being
    serialised); a datagram that would overflow it is tail-dropped. ``None`` is unbounded.
    Only meaningful with a finite bandwidth.
    ``loss``: independent random loss probability per datagram.
    ``gilbert_elliott``: optional bursty loss model, applied in addition to ``loss``; a
    :class:`GilbertElliott` or a tuple of its arguments.
    ``reorder``: probability that a datagram is delayed by an extra ``reorder_delay`` seconds,
    letting later datagrams overtake it.
    ``duplicate``: probability that a datagram is delivered twice.
    ``corrupt``: probability that 1..``corrupt_bits`` distinct random bits of a datagram are
    flipped.
    ``mtu``: datagrams longer than this many bytes are dropped; ``None`` for no limit.
    ``blackholes``: ``(start, end)`` virtual-time intervals during which every datagram entering
    the link is dropped (start inclusive, end exclusive).
    """

    delay: float = 0.010
    jitter: float = 0.0
    jitter_distribution: str = "uniform"
    jitter_reorders: bool = False
    bandwidth: Optional[float] = None
    queue_limit: Optional[int] = None
    loss: float = 0.0
    gilbert_elliott: Optional[GilbertElliott] = None
    reorder: float = 0.0
    reorder_delay: float = 0.010
    duplicate: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    mtu: Optional[int] = None
    blackholes: Sequence[Tuple[float, float]] = ()

    def __post_init__(self) -> None:
        _check_non_negative("delay", self.delay)
        _check_non_negative("jitter", self.jitter)
        _check_non_negative("reorder_delay", self.reorder_delay)
        if self.jitter_distribution not in ("uniform", "normal"):
            raise ValueError("jitter_distribution must be 'uniform' or 'normal'")
        if self.bandwidth is not None and not (0.0 < self.bandwidth < math.inf):
            raise ValueError(f"bandwidth must be > 0 bits/s or None, got {self.bandwidth!r}")
        if self.queue_limit is not None and self.queue_limit < 0:
            raise ValueError("queue_limit must be >= 0 or None")
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            _check_probability(name, getattr(self, name))
        if self.corrupt_bits < 1:
            raise ValueError("corrupt_bits must be >= 1")
        if self.mtu is not None and self.mtu < 0:
            raise ValueError("mtu must be >= 0 or None")
        ge = self.gilbert_elliott
        if ge is not None and not isinstance(ge, GilbertElliott):
            object.__setattr__(self, "gilbert_elliott", GilbertElliott(*ge))
        periods = []
        for period in self.blackholes:
            start, end = period
            if not (end >= start):
                raise ValueError(f"blackhole period {period!r} ends before it starts")
            periods.append((float(start), float(end)))
        object.__setattr__(self, "blackholes", tuple(sorted(periods)))


@dataclasses.dataclass(frozen=True)
class LinkStats:
    """A snapshot of one link direction's counters (see :meth:`Network.stats`).

    ``sent`` counts datagrams handed to the link, ``delivered`` those handed to the destination
    node (duplicates included). ``in_flight`` are scheduled but not yet arrived, so
    ``sent + duplicated == delivered + dropped + in_flight``. ``reordered`` counts datagrams that
    were given the extra reorder delay; ``max_queue_bytes`` is the bottleneck queue's high-water
    mark.
    """

    src: Address
    dst: Address
    sent: int
    delivered: int
    dropped_loss: int
    dropped_queue: int
    dropped_blackhole: int
    dropped_mtu: int
    dropped_unreachable: int
    duplicated: int
    corrupted: int
    reordered: int
    bytes_sent: int
    bytes_delivered: int
    in_flight: int
    max_queue_bytes: int

    @property
    def dropped(self) -> int:
        """Total datagrams dropped for any reason."""
        return (
            self.dropped_loss
            + self.dropped_queue
            + self.dropped_blackhole
            + self.dropped_mtu
            + self.dropped_unreachable
        )

    @property
    def drops(self) -> Dict[str, int]:
        """Drop counts by reason: loss, queue, blackhole, mtu, unreachable."""
        return {
            "loss": self.dropped_loss,
            "queue": self.dropped_queue,
            "blackhole": self.dropped_blackhole,
            "mtu": self.dropped_mtu,
            "unreachable": self.dropped_unreachable,
        }


def _link_rng(seed: int, src: Address, dst: Address) -> random.Random:
    # Each link direction gets its own generator, derived from the network seed and the pair of
    # addresses it was created for, so creating or using one link never perturbs another.
    material = f"{seed}|{src[0]}|{src[1]}|{dst[0]}|{dst[1]}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:16], "big"))


class _Queue:
    """A bottleneck's FIFO serialisation state (shared by links via ``share_bottleneck``)."""

    __slots__ = ("busy_until", "items", "bytes")

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.items: deque = deque()  # (serialisation end time, size) of queued datagrams
        self.bytes = 0


class _Link:
    """One direction of a link: configuration, impairment state, bottleneck queue, counters."""

    __slots__ = (
        "net",
        "src",
        "dst",
        "config",
        "explicit",
        "rng",
        # cached configuration
        "simple",
        "delay",
        "jitter",
        "jitter_normal",
        "jitter_fifo",
        "bandwidth",
        "queue_limit",
        "loss",
        "ge",
        "ge_bad",
        "reorder",
        "reorder_delay",
        "duplicate",
        "corrupt",
        "corrupt_bits",
        "mtu",
        "blackholes",
        # bottleneck state
        "q",
        "last_arrival",
        # counters
        "sent",
        "delivered",
        "dropped_loss",
        "dropped_queue",
        "dropped_blackhole",
        "dropped_mtu",
        "dropped_unreachable",
        "duplicated",
        "corrupted",
        "reordered",
        "bytes_sent",
        "bytes_delivered",
        "in_flight",
        "max_queue_bytes",
    )

    def __init__(self, net: "Network", src: Address, dst: Address, config: LinkConfig,
                 explicit: bool) -> None:
        self.net = net
        self.src = src
        self.dst = dst
        self.explicit = explicit
        self.rng = _link_rng(net.seed, src, dst)
        self.ge_bad = False
        self.q = _Queue()
        self.last_arrival = 0.0
        self.sent = self.delivered = 0
        self.dropped_loss = self.dropped_queue = self.dropped_blackhole = 0
        self.dropped_mtu = self.dropped_unreachable = 0
        self.duplicated = self.corrupted = self.reordered = 0
        self.bytes_sent = self.bytes_delivered = 0
        self.in_flight = 0
        self.max_queue_bytes = 0  # high-water mark of the (possibly shared) queue seen by this link
        self.configure(config)

    def configure(self, config: LinkConfig) -> None:
        """Apply a (new) configuration; queue, impairment state and counters are kept."""
        self.config = config
        self.delay = config.delay
        self.jitter = config.jitter
        self.jitter_normal = config.jitter_distribution == "normal"
        self.jitter_fifo = not config.jitter_reorders
        self.bandwidth = config.bandwidth
        self.queue_limit = config.queue_limit
        self.loss = config.loss
        self.ge = config.gilbert_elliott
        self.reorder = config.reorder
        self.reorder_delay = config.reorder_delay
        self.duplicate = config.duplicate
        self.corrupt = config.corrupt
        self.corrupt_bits = config.corrupt_bits
        self.mtu = config.mtu
        self.blackholes = config.blackholes
        self.simple = (
            config.jitter == 0.0
            and config.bandwidth is None
            and config.loss == 0.0
            and config.gilbert_elliott is None
            and config.reorder == 0.0
            and config.duplicate == 0.0
            and config.corrupt == 0.0
            and config.mtu is None
            and not config.blackholes
        )

    def snapshot(self) -> LinkStats:
        return LinkStats(
            src=self.src,
            dst=self.dst,
            sent=self.sent,
            delivered=self.delivered,
            dropped_loss=self.dropped_loss,
            dropped_queue=self.dropped_queue,
            dropped_blackhole=self.dropped_blackhole,
            dropped_mtu=self.dropped_mtu,
            dropped_unreachable=self.dropped_unreachable,
            duplicated=self.duplicated,
            corrupted=self.corrupted,
            reordered=self.reordered,
            bytes_sent=self.bytes_sent,
            bytes_delivered=self.bytes_delivered,
            in_flight=self.in_flight,
            max_queue_bytes=self.max_queue_bytes,
        )

    def transmit(self, data: bytes, src: Address, dst: Address, now: float) -> None:
        """Put one datagram on the link at virtual time ``now``."""
        n = len(data)
        self.sent += 1
        self.bytes_sent += n
        net = self.net
        trace = net._trace
        if trace is not None:
            trace(now, EVENT_SEND, src, dst, n)
        if self.simple:
            arrival = now + self.delay
            if arrival < self.last_arrival:  # the delay was lowered by a reconfiguration
                arrival = self.last_arrival
            self.last_arrival = arrival
            self.in_flight += 1
            heapq.heappush(net._heap, (arrival, next(net._seq), _DELIVER, data, src, dst, self))
            return

        mtu = self.mtu
        if mtu is not None and n > mtu:
            self.dropped_mtu += 1
            if trace is not None:
                trace(now, EVENT_DROP_MTU, src, dst, n)
            return
        if self.blackholes:
            for start, end in self.blackholes:
                if start <= now < end:
                    self.dropped_blackhole += 1
                    if trace is not None:
                        trace(now, EVENT_DROP_BLACKHOLE, src, dst, n)
                    return

        bandwidth = self.bandwidth
        if bandwidth is not None:
            # Bottleneck: FIFO serialisation. Datagrams whose serialisation has finished by
            # ``now`` have left the queue.
            q = self.q
            items = q.items
            while items and items[0][0] <= now:
                q.bytes -= items.popleft()[1]
            limit = self.queue_limit
            if limit is not None and q.bytes + n > limit:
                self.dropped_queue += 1
                if trace is not None:
                    trace(now, EVENT_DROP_QUEUE, src, dst, n)
                return
            start = q.busy_until
            if start < now:
                start = now
            depart = start + n * 8.0 / bandwidth
            q.busy_until = depart
            items.append((depart, n))
            qbytes = q.bytes + n
            q.bytes = qbytes
            if qbytes > self.max_queue_bytes:
                self.max_queue_bytes = qbytes
        else:
            depart = now

        rng = self.rng
        lost = False
        if self.loss and rng.random() < self.loss:
            lost = True
        ge = self.ge
        if ge is not None:
            if self.ge_bad:
                p_loss = ge.loss_in_bad
                if p_loss >= 1.0 or (p_loss > 0.0 and rng.random() < p_loss):
                    lost = True
                if rng.random() < ge.p_bad_to_good:
                    self.ge_bad = False
            else:
                if ge.loss_in_good > 0.0 and rng.random() < ge.loss_in_good:
                    lost = True
                if rng.random() < ge.p_good_to_bad:
                    self.ge_bad = True
        if lost:
            self.dropped_loss += 1
            if trace is not None:
                trace(now, EVENT_DROP_LOSS, src, dst, n)
            return

        arrival = depart + self.delay
        jitter = self.jitter
        if jitter:
            if self.jitter_normal:
                arrival += abs(rng.gauss(0.0, jitter))
            else:
                arrival += rng.random() * jitter
        if self.reorder and rng.random() < self.reorder:
            # Held back: later datagrams may overtake it, and it does not hold them back.
            arrival += self.reorder_delay
            self.reordered += 1
            if trace is not None:
                trace(now, EVENT_REORDER, src, dst, n)
        else:
            if self.jitter_fifo and arrival < self.last_arrival:
                arrival = self.last_arrival
            self.last_arrival = arrival
        if self.corrupt and n and rng.random() < self.corrupt:
            nbits = n * 8
            k = rng.randint(1, min(self.corrupt_bits, nbits))
            buf = bytearray(data)
            for bit in rng.sample(range(nbits), k):
                buf[bit >> 3] ^= 1 << (bit & 7)
            data = bytes(buf)
            self.corrupted += 1
            if trace is not None:
                trace(now, EVENT_CORRUPT, src, dst, n)
        heap = net._heap
        seq = net._seq
        self.in_flight += 1
        heapq.heappush(heap, (arrival, next(seq), _DELIVER, data, src, dst, self))
        if self.duplicate and rng.random() < self.duplicate:
            self.duplicated += 1
            self.in_flight += 1
            if trace is not None:
                trace(now, EVENT_DUPLICATE, src, dst, n)
            heapq.heappush(heap, (arrival, next(seq), _DELIVER, data, src, dst, self))


class _NodeEntry:
    """A node attached to the network, with its bound methods and timer bookkeeping."""

    __slots__ = (
        "node",
        "addr",
        "receive",
        "to_send",
        "get_timer",
        "handle_timer",
        "links",
        "timer_at",
        "heap_at",
        "heap_seq",
    )

    def __init__(self, node: Node, addr: Address) -> None:
        self.node = node
        self.addr = addr
        self.receive = node.receive_datagram
        self.to_send = node.datagrams_to_send
        self.get_timer = node.get_timer
        self.handle_timer = node.handle_timer
        self.links: Dict[Address, _Link] = {}  # destination address -> link, a lookup cache
        self.timer_at: Optional[float] = None  # the time the node last asked for
        self.heap_at: Optional[float] = None  # time of this node's live heap event
        self.heap_seq = -1  # seq of this node's live heap event


def _check_addr(addr: Address) -> Address:
    if not (isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[0], str)
            and isinstance(addr[1], int)):
        raise TypeError(f"address must be a (host: str, port: int) tuple, got {addr!r}")
    return addr


class Network:
    """A simulated network of sans-IO nodes joined by configurable links.

    Typical use::

        net = Network(seed=1)
        net.add_node(server, ("192.0.2.1", 4433))
        net.add_node(client, ("198.51.100.7", 50000))
        net.link(("192.0.2.1", 4433), ("198.51.100.7", 50000),
                 LinkConfig(delay=0.02, bandwidth=10e6, loss=0.01))
        net.run(until=lambda: client_done(), max_time=60.0)

    Pairs of addresses not linked explicitly use ``default_link``. All randomness comes from
    per-link ``random.Random`` generators derived from ``seed``: the same seed and the same
    nodes give the identical event sequence.
    """

    #: Default virtual-time budget of :meth:`run` when no ``max_time`` is given (seconds).
    default_max_duration = 3600.0
    #: Default cap on processed events per :meth:`run` / :meth:`run_for` call.
    default_max_events = 10_000_000

    def __init__(self, seed: int = 0, default_link: Optional[LinkConfig] = None,
                 livelock_threshold: int = 100_000) -> None:
        """``livelock_threshold``: how many consecutive events may happen at one virtual time
        before :class:`Livelock` is raised."""
        self.seed = seed
        self.default_link = default_link if default_link is not None else LinkConfig()
        self.livelock_threshold = livelock_threshold
        self.clock = VirtualClock()
        self.events_processed = 0
        self._heap: List[tuple] = []
        self._seq = itertools.count()
        self._nodes: Dict[Address, _NodeEntry] = {}
        self._links: Dict[Tuple[Address, Address], _Link] = {}
        self._moved: Dict[Address, Tuple[_NodeEntry, int, bool]] = {}
        self._hooks: List[TraceCallback] = []
        self._trace: Optional[TraceCallback] = None

    # ------------------------------------------------------------------ topology

    @property
    def now(self) -> float:
        """Current virtual time in seconds."""
        return self.clock.now

    def add_node(self, node: Node, addr: Address) -> Node:
        """Attach ``node`` at ``addr`` (a ``(host, port)`` tuple). Returns the node.

        The node is polled (``datagrams_to_send`` and ``get_timer``) at the start of the next
        :meth:`run`/:meth:`run_for`, or right away by :meth:`poll`.
        """
        _check_addr(addr)
        if addr in self._nodes:
            raise ValueError(f"address {addr!r} already has a node")
        self._nodes[addr] = _NodeEntry(node, addr)
        self._moved.pop(addr, None)
        return node

    def remove_node(self, addr: Address) -> Node:
        """Detach the node at ``addr``; datagrams still travelling to it will be dropped
        (``unreachable``) and its timer is cancelled. Returns the node."""
        entry = self._nodes.pop(addr)
        entry.heap_seq = -1
        entry.heap_at = entry.timer_at = None
        return entry.node

    def node(self, addr: Address) -> Node:
        """Return the node currently at ``addr`` (``KeyError`` if none)."""
        return self._nodes[addr].node

    @property
    def addresses(self) -> List[Address]:
        """Addresses that currently have a node."""
        return list(self._nodes)

    def link(self, a: Address, b: Address, config: Optional[LinkConfig] = None,
             reverse: Optional[LinkConfig] = None) -> None:
        """Configure the link between ``a`` and ``b``: ``config`` for a->b, ``reverse`` for b->a
        (``reverse=None`` uses ``config`` for both directions; ``config=None`` uses
        ``default_link``).

        May be called again mid-simulation to change a link (e.g. a bandwidth drop): the queue,
        loss-model state, random generator and counters of each direction are kept.
        """
        _check_addr(a)
        _check_addr(b)
        if config is None:
            config = self.default_link
        if reverse is None:
            reverse = config
        for src, dst, cfg in ((a, b, config), (b, a, reverse)):
            link = self._links.get((src, dst))
            if link is None:
                self._links[(src, dst)] = _Link(self, src, dst, cfg, explicit=True)
            else:
                link.configure(cfg)
                link.explicit = True

    def share_bottleneck(self, *pairs: Tuple[Address, Address]) -> None:
        """Make the listed ``(src, dst)`` link directions share one FIFO bottleneck queue, e.g.
        several clients uploading to one server through the same access link, for fairness
        tests. Each datagram is still serialised at its own link's ``bandwidth`` and checked
        against its own ``queue_limit``, so give the shared links identical values for those.
        Call before traffic flows (datagrams already queued on a link are forgotten)."""
        if len(pairs) < 2:
            raise ValueError("share_bottleneck needs at least two (src, dst) pairs")
        shared = _Queue()
        for src, dst in pairs:
            self._get_link(_check_addr(src), _check_addr(dst)).q = shared

    def _get_link(self, src: Address, dst: Address) -> _Link:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[(src, dst)] = _Link(self, src, dst, self.default_link, False)
        return link

    def rebind(self, old_addr: Address, new_addr: Address, deliver_in_flight: bool = False) -> None:
        """Simulate a NAT rebinding: the node at ``old_addr`` now sends from and is reachable at
        ``new_addr``.

        Links configured for pairs involving ``old_addr`` now apply to ``new_addr`` (with their
        queues, state and counters). Datagrams already in flight towards ``old_addr`` are dropped
        as ``unreachable`` when they arrive, unless ``deliver_in_flight`` is true, in which case
        they still reach the node. Datagrams sent to ``old_addr`` after the rebinding are always
        dropped. Datagrams the node sent before the rebinding keep their old source address.
        """
        _check_addr(new_addr)
        if new_addr in self._nodes:
            raise ValueError(f"address {new_addr!r} already has a node")
        entry = self._nodes.pop(old_addr)
        entry.addr = new_addr
        self._nodes[new_addr] = entry
        self._moved.pop(new_addr, None)
        # The boundary seq separates datagrams scheduled before the rebinding from later ones.
        self._moved[old_addr] = (entry, next(self._seq), deliver_in_flight)
        moved = {}
        for (src, dst), link in list(self._links.items()):
            if src == old_addr or dst == old_addr:
                del self._links[(src, dst)]
                src = new_addr if src == old_addr else src
                dst = new_addr if dst == old_addr else dst
                link.src, link.dst = src, dst
                moved[(src, dst)] = link
        self._links.update(moved)
        for e in self._nodes.values():
            e.links.clear()

    # ------------------------------------------------------------------ observation

    def on_event(self, callback: TraceCallback) -> TraceCallback:
        """Register ``callback(time, kind, src, dst, size)``, called for every send, delivery,
        drop, duplication, corruption, reordering and timer (``kind`` is one of the ``EVENT_*``
        strings). Returns the callback, so it can be used as a decorator. Costs nothing when
        no callback is registered."""
        self._hooks.append(callback)
        self._update_trace()
        return callback

    def remove_event_hook(self, callback: TraceCallback) -> None:
        """Unregister a callback added with :meth:`on_event`."""
        self._hooks.remove(callback)
        self._update_trace()

    def _update_trace(self) -> None:
        hooks = tuple(self._hooks)
        if not hooks:
            self._trace = None
        elif len(hooks) == 1:
            self._trace = hooks[0]
        else:
            def fan_out(t, kind, src, dst, size):
                for hook in hooks:
                    hook(t, kind, src, dst, size)
            self._trace = fan_out

    def stats(self) -> Dict[Tuple[Address, Address], LinkStats]:
        """Counters of every link direction used or configured so far, keyed by
        ``(src, dst)`` (current addresses, after any rebinding)."""
        return {key: link.snapshot() for key, link in self._links.items()}

    def link_stats(self, src: Address, dst: Address) -> LinkStats:
        """Counters of the ``src -> dst`` direction (all zero if it was never used)."""
        return self._get_link(src, dst).snapshot()

    @property
    def pending_events(self) -> int:
        """Number of scheduled events (including stale timer entries)."""
        return len(self._heap)

    # ------------------------------------------------------------------ driving

    def poll(self, addr: Optional[Address] = None) -> None:
        """Collect pending datagrams and re-read the timer of the node at ``addr`` (all nodes
        if ``None``).

        Call this after talking to a node directly (e.g. asking a connection to send data)
        between runs; :meth:`run` and :meth:`run_for` poll every node when they start.
        """
        entries = list(self._nodes.values()) if addr is None else [self._nodes[addr]]
        now = self.clock.now
        for entry in entries:
            self._after_call(entry, now)

    def _after_call(self, entry: _NodeEntry, now: float) -> None:
        # Runs after every call into a node: ship its datagrams, then re-read its timer.
        out = entry.to_send(now)
        if out:
            src = entry.addr
            links = entry.links
            for data, dst in out:
                link = links.get(dst)
                if link is None:
                    link = links[dst] = self._get_link(src, dst)
                link.transmit(data, src, dst, now)
        timer = entry.get_timer()
        entry.timer_at = timer
        if timer is not None:
            if timer < now:
                timer = entry.timer_at = now
            heap_at = entry.heap_at
            if heap_at is None or timer < heap_at:
                seq = next(self._seq)
                entry.heap_at = timer
                entry.heap_seq = seq
                heapq.heappush(self._heap, (timer, seq, _TIMER, entry))

    def run(self, until: Optional[Callable[[], bool]] = None, max_time: Optional[float] = None,
            max_events: Optional[int] = None) -> float:
        """Process events in virtual-time order until ``until()`` is true (checked before the
        first event and after each one) and return the virtual time reached.

        With ``until=None`` run until no event is pending. ``max_time`` is an absolute virtual
        time (default: ``now + default_max_duration``): :class:`SimulationTimeout` is raised
        rather than process an event after it (the clock is left at ``max_time`` and the event
        stays pending). :class:`Livelock` is raised after ``max_events`` events (default
        ``default_max_events``) or ``livelock_threshold`` consecutive events at one instant;
        :class:`Deadlock` when nothing is pending while ``until()`` is still false.
        """
        self.poll()
        if until is not None and until():
            return self.clock.now
        if max_time is None:
            max_time = self.clock.now + self.default_max_duration
        if max_events is None:
            max_events = self.default_max_events
        return self._loop(until, max_time, max_events, True)

    def run_for(self, duration: float, max_events: Optional[int] = None) -> float:
        """Process every event up to ``now + duration``, then set the clock there and return it.

        Raises :class:`Livelock` like :meth:`run`; never :class:`SimulationTimeout`."""
        if not duration >= 0.0:
            raise ValueError("duration must be >= 0")
        end = self.clock.now + duration
        self.poll()
        if max_events is None:
            max_events = self.default_max_events
        self._loop(None, end, max_events, False)
        self.clock.now = end
        return end

    def _loop(self, until: Optional[Callable[[], bool]], end: float, max_events: int,
              timeout_is_error: bool) -> float:
        heap = self._heap
        heappop = heapq.heappop
        heappush = heapq.heappush
        nodes = self._nodes
        clock = self.clock
        after_call = self._after_call
        last = clock.now
        same = 0
        limit = self.livelock_threshold
        processed = 0
        seq_counter = self._seq
        try:
            while heap:
                event = heap[0]
                t = event[0]
                if t > end:
                    if timeout_is_error:
                        clock.now = end
                        raise SimulationTimeout(
                            f"virtual time limit {end:.6f}s reached before the condition held "
                            f"({processed} events processed, {len(heap)} pending)"
                        )
                    return clock.now
                heappop(heap)
                if event[2] == _DELIVER:
                    _, seq, _, data, src, dst, link = event
                    link.in_flight -= 1
                    entry = nodes.get(dst)
                    if entry is None:
                        moved = self._moved.get(dst)
                        if moved is not None and moved[2] and seq < moved[1]:
                            entry = moved[0]
                            if nodes.get(entry.addr) is not entry:
                                entry = None  # removed since
                    clock.now = t
                    if entry is None:
                        link.dropped_unreachable += 1
                        if self._trace is not None:
                            self._trace(t, EVENT_DROP_UNREACHABLE, src, dst, len(data))
                    else:
                        link.delivered += 1
                        link.bytes_delivered += len(data)
                        if self._trace is not None:
                            self._trace(t, EVENT_DELIVER, src, dst, len(data))
                        entry.receive(data, src, t)
                        after_call(entry, t)
                else:
                    entry = event[3]
                    if entry.heap_seq != event[1]:
                        continue  # superseded by an earlier timer, or node removed
                    entry.heap_at = None
                    entry.heap_seq = -1
                    timer_at = entry.timer_at
                    if timer_at is None:
                        continue  # cancelled
                    if timer_at > t:
                        # Moved later since this event was scheduled: re-arm, don't fire.
                        seq = next(seq_counter)
                        entry.heap_at = timer_at
                        entry.heap_seq = seq
                        heappush(heap, (timer_at, seq, _TIMER, entry))
                        continue
                    entry.timer_at = None
                    clock.now = t
                    if self._trace is not None:
                        self._trace(t, EVENT_TIMER, entry.addr, entry.addr, 0)
                    entry.handle_timer(t)
                    after_call(entry, t)
                processed += 1
                if t == last:
                    same += 1
                    if same >= limit:
                        raise Livelock(
                            f"{same} consecutive events at virtual time {t:.6f}s without time "
                            f"advancing (a timer that never moves forward?)"
                        )
                else:
                    same = 0
                    last = t
                if until is not None and until():
                    return t
                if processed >= max_events:
                    raise Livelock(
                        f"{processed} events processed without reaching the condition "
                        f"(virtual time {t:.6f}s)"
                    )
            if until is not None:
                raise Deadlock(
                    f"no pending events at virtual time {clock.now:.6f}s and the condition is "
                    f"still false"
                )
            return clock.now
        finally:
            self.events_processed += processed


def jain_fairness(xs: Iterable[float]) -> float:
    """Jain's fairness index of throughputs ``xs``: ``(sum x)^2 / (n * sum x^2)``.

    1.0 when all shares are equal, ``1/n`` when one flow takes everything. All-zero input counts
    as perfectly fair (1.0). Raises ``ValueError`` for an empty input or a negative share.
    """
    values = [float(x) for x in xs]
    if not values:
        raise ValueError("jain_fairness needs at least one value")
    if any(v < 0 for v in values):
        raise ValueError("throughputs must be >= 0")
    total = sum(values)
    squares = sum(v * v for v in values)
    if squares == 0.0:
        return 1.0
    return total * total / (len(values) * squares)
