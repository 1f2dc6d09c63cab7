"""Tests for the deterministic network simulator (dquic.testing)."""
from __future__ import annotations

import dataclasses
import math
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dquic.testing import (
    EVENT_DELIVER,
    EVENT_DROP_LOSS,
    EVENT_SEND,
    EVENT_TIMER,
    BlastNode,
    Deadlock,
    EchoNode,
    GilbertElliott,
    LinkConfig,
    Livelock,
    Network,
    Node,
    SimulationError,
    SimulationTimeout,
    SinkNode,
    VirtualClock,
    jain_fairness,
)

A = ("192.0.2.1", 4433)
B = ("198.51.100.7", 50000)
C = ("203.0.113.9", 50001)


def blast(config, count=1000, size=100, interval=0.0, seed=1, reverse=None):
    """Send ``count`` numbered datagrams A -> B over ``config``; return (net, sink)."""
    net = Network(seed=seed)
    sink = net.add_node(SinkNode(), B)
    net.add_node(BlastNode(B, count, size=size, interval=interval), A)
    net.link(A, B, config, reverse)
    net.run(max_time=1e6)
    return net, sink


def test_node_protocol_is_satisfied_by_test_nodes():
    assert isinstance(SinkNode(), Node)
    assert isinstance(EchoNode(), Node)
    assert isinstance(BlastNode(B, 1), Node)
    assert not isinstance(object(), Node)


def test_exception_hierarchy():
    for cls in (SimulationTimeout, Livelock, Deadlock):
        assert issubclass(cls, SimulationError)
    assert issubclass(SimulationError, AssertionError)


def test_virtual_clock():
    clock = VirtualClock()
    assert clock() == 0.0 and clock.time() == 0.0
    net = Network()
    assert net.now == 0.0 and net.clock() == 0.0
    net.run_for(1.5)
    assert net.now == 1.5 and net.clock() == 1.5


# ---------------------------------------------------------------- delay and bandwidth


def test_delay_only():
    net, sink = blast(LinkConfig(delay=0.025), count=3)
    assert [t for t, _, _ in sink.received] == [0.025] * 3
    assert sink.sequence_numbers() == [0, 1, 2]
    assert all(addr == A for _, addr, _ in sink.received)


def test_serialization_delay_1500_bytes_at_12_mbit_is_1_ms():
    net, sink = blast(LinkConfig(delay=0.010, bandwidth=12e6), count=5, size=1500)
    times = [t for t, _, _ in sink.received]
    for i, t in enumerate(times):
        assert t == pytest.approx(0.010 + 0.001 * (i + 1), abs=1e-12)
    assert net.link_stats(A, B).max_queue_bytes == 5 * 1500


def test_bandwidth_idle_link_does_not_accumulate_backlog():
    # One 1500-byte datagram every 2 ms on a link that needs 1 ms each: no queueing.
    cfg = LinkConfig(delay=0.0, bandwidth=12e6)
    net, sink = blast(cfg, count=4, size=1500, interval=0.002)
    times = [t for t, _, _ in sink.received]
    assert times == pytest.approx([0.001, 0.003, 0.005, 0.007], abs=1e-12)
    assert net.link_stats(A, B).max_queue_bytes == 1500


def test_zero_delay_delivery_happens_at_send_time():
    net, sink = blast(LinkConfig(delay=0.0), count=2)
    assert [t for t, _, _ in sink.received] == [0.0, 0.0]


# ---------------------------------------------------------------- queue


def test_queue_tail_drop():
    cfg = LinkConfig(delay=0.0, bandwidth=8e6, queue_limit=3000)  # 1000 B -> 1 ms each
    net, sink = blast(cfg, count=10, size=1000)
    s = net.link_stats(A, B)
    assert s.delivered == 3 and s.dropped_queue == 7 and s.dropped == 7
    assert sink.sequence_numbers() == [0, 1, 2]  # tail drop keeps the head
    assert s.max_queue_bytes == 3000
    assert s.sent == 10 and s.in_flight == 0


def test_queue_accepts_again_after_draining():
    cfg = LinkConfig(delay=0.0, bandwidth=8e6, queue_limit=2000)
    net = Network(seed=3)
    sink = net.add_node(SinkNode(), B)
    first = net.add_node(BlastNode(B, 5, size=1000), A)
    net.link(A, B, cfg)
    net.run_for(0.0005)
    assert net.link_stats(A, B).dropped_queue == 3
    net.run_for(0.01)  # queue drained by now
    # Send a second burst from the same node: the queue admits two again.
    first.total += 5
    first._next_time = net.now
    net.run(max_time=1.0)
    assert sink.count == 4
    assert net.link_stats(A, B).dropped_queue == 6


# ---------------------------------------------------------------- loss


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_random_loss_rate(p):
    n = 20000
    net, sink = blast(LinkConfig(delay=0.001, loss=p), count=n, size=8)
    s = net.link_stats(A, B)
    assert s.dropped_loss + s.delivered == n
    sd = math.sqrt(n * p * (1 - p))
    assert abs(s.dropped_loss - n * p) < 5 * sd
    assert sink.count == s.delivered


def loss_bursts(received_seqs, n):
    got = set(received_seqs)
    bursts, run = [], 0
    for i in range(n):
        if i in got:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    return bursts


def test_gilbert_elliott_burst_length_and_rate():
    n = 60000
    ge = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.25)
    net, sink = blast(LinkConfig(delay=0.001, gilbert_elliott=ge), count=n, size=8)
    bursts = loss_bursts(sink.sequence_numbers(), n)
    mean_burst = sum(bursts) / len(bursts)
    assert 3.4 < mean_burst < 4.6  # 1 / p_bad_to_good = 4
    rate = net.link_stats(A, B).dropped_loss / n
    assert abs(rate - ge.stationary_loss) < 0.01
    # Independent loss at the same rate has much shorter bursts.
    net2, sink2 = blast(LinkConfig(delay=0.001, loss=ge.stationary_loss), count=n, size=8)
    bursts2 = loss_bursts(sink2.sequence_numbers(), n)
    assert sum(bursts2) / len(bursts2) < 1.2


def test_gilbert_elliott_accepts_tuple_and_validates():
    cfg = LinkConfig(gilbert_elliott=(0.1, 0.5))
    assert cfg.gilbert_elliott == GilbertElliott(0.1, 0.5, 1.0, 0.0)
    with pytest.raises(ValueError):
        GilbertElliott(1.5, 0.5)
    assert GilbertElliott(0.0, 0.0, 1.0, 0.25).stationary_loss == 0.25


# ---------------------------------------------------- reorder, jitter, duplicate, corrupt


def inversions(seqs):
    return sum(1 for x, y in zip(seqs, seqs[1:]) if y < x)


def test_reorder_count_and_effect():
    n = 5000
    cfg = LinkConfig(delay=0.01, reorder=0.1, reorder_delay=0.005)
    net, sink = blast(cfg, count=n, size=16, interval=0.0001)
    s = net.link_stats(A, B)
    sd = math.sqrt(n * 0.1 * 0.9)
    assert abs(s.reordered - n * 0.1) < 5 * sd
    seqs = sink.sequence_numbers()
    assert sorted(seqs) == list(range(n))
    assert inversions(seqs) > 0.5 * s.reordered


def test_no_reorder_without_reorder_probability():
    net, sink = blast(LinkConfig(delay=0.01, reorder=0.0), count=500, size=16, interval=0.0001)
    assert net.link_stats(A, B).reordered == 0
    assert sink.sequence_numbers() == list(range(500))


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_jitter_keeps_fifo_by_default(dist):
    cfg = LinkConfig(delay=0.01, jitter=0.005, jitter_distribution=dist)
    net, sink = blast(cfg, count=2000, size=16, interval=0.0001)
    assert sink.sequence_numbers() == list(range(2000))
    times = [t for t, _, _ in sink.received]
    delays = [t - 0.0001 * i for i, t in enumerate(times)]
    assert min(delays) >= 0.01 - 1e-12
    assert max(delays) > 0.0125  # jitter was applied
    assert net.link_stats(A, B).reordered == 0


def test_jitter_may_reorder_when_allowed():
    cfg = LinkConfig(delay=0.01, jitter=0.005, jitter_reorders=True)
    net, sink = blast(cfg, count=2000, size=16, interval=0.0001)
    seqs = sink.sequence_numbers()
    assert sorted(seqs) == list(range(2000))
    assert inversions(seqs) > 100


def test_duplicate():
    n = 5000
    net, sink = blast(LinkConfig(delay=0.001, duplicate=0.05), count=n, size=16)
    s = net.link_stats(A, B)
    assert abs(s.duplicated - n * 0.05) < 5 * math.sqrt(n * 0.05 * 0.95)
    assert sink.count == n + s.duplicated == s.delivered
    seqs = sink.sequence_numbers()
    assert len(set(seqs)) == n
    assert len(seqs) - len(set(seqs)) == s.duplicated


@pytest.mark.parametrize("max_bits", [1, 5])
def test_corrupt(max_bits):
    n = 4000
    size = 64
    cfg = LinkConfig(delay=0.001, corrupt=0.1, corrupt_bits=max_bits)
    net = Network(seed=9)
    sink = net.add_node(SinkNode(), B)
    payloads = [bytes(random.Random(i).randrange(256) for _ in range(size)) for i in range(16)]

    class Sender:
        def __init__(self):
            self.sent = False

        def receive_datagram(self, data, addr, now):
            pass

        def datagrams_to_send(self, now):
            if self.sent:
                return []
            self.sent = True
            return [(payloads[i % 16], B) for i in range(n)]

        def get_timer(self):
            return None

        def handle_timer(self, now):
            pass

    net.add_node(Sender(), A)
    net.link(A, B, cfg)
    net.run()
    s = net.link_stats(A, B)
    damaged = 0
    for i, (_, _, data) in enumerate(sink.received):
        orig = payloads[i % 16]
        assert len(data) == size
        flipped = bin(int.from_bytes(orig, "big") ^ int.from_bytes(data, "big")).count("1")
        assert 0 <= flipped <= max_bits
        damaged += flipped > 0
    assert damaged == s.corrupted
    assert abs(s.corrupted - n * 0.1) < 5 * math.sqrt(n * 0.1 * 0.9)


# ---------------------------------------------------------------- blackhole, mtu, unreachable


def test_blackhole_periods():
    cfg = LinkConfig(delay=0.001, blackholes=[(0.0100, 0.0200), (0.0500, 0.0501)])
    net, sink = blast(cfg, count=100, size=16, interval=0.001)
    seqs = sink.sequence_numbers()
    dropped = set(range(100)) - set(seqs)
    # Sent at i * 1 ms; start inclusive, end exclusive.
    assert dropped == set(range(10, 20)) | {50}
    assert net.link_stats(A, B).dropped_blackhole == 11


def test_blackhole_validation():
    with pytest.raises(ValueError):
        LinkConfig(blackholes=[(2.0, 1.0)])
    assert LinkConfig(blackholes=[(3, 4), (1, 2)]).blackholes == ((1.0, 2.0), (3.0, 4.0))


def test_mtu_drops_larger_datagrams():
    net = Network(seed=1)
    sink = net.add_node(SinkNode(), B)

    class Sizes:
        def receive_datagram(self, data, addr, now):
            pass

        def datagrams_to_send(self, now):
            out, self.out = getattr(self, "out", None), []
            return out if out is not None else [(b"x" * n, B) for n in (1199, 1200, 1201, 9000)]

        def get_timer(self):
            return None

        def handle_timer(self, now):
            pass

    net.add_node(Sizes(), A)
    net.link(A, B, LinkConfig(mtu=1200))
    net.run()
    assert [len(d) for _, _, d in sink.received] == [1199, 1200]
    assert net.link_stats(A, B).dropped_mtu == 2


def test_unreachable_destination_is_counted():
    net = Network(seed=1)
    net.add_node(BlastNode(C, 3), A)
    net.run()
    s = net.link_stats(A, C)
    assert s.sent == 3 and s.dropped_unreachable == 3 and s.delivered == 0


def test_default_link_is_used_for_unlinked_pairs():
    net = Network(seed=1, default_link=LinkConfig(delay=0.123))
    sink = net.add_node(SinkNode(), B)
    net.add_node(BlastNode(B, 1), A)
    net.run()
    assert sink.received[0][0] == pytest.approx(0.123)


# ---------------------------------------------------------------- echo, per-direction configs


def test_echo_round_trip_uses_per_direction_configs():
    net = Network(seed=1)
    client = net.add_node(BlastNode(B, 1, size=8), A)
    server = net.add_node(EchoNode(), B)
    net.link(A, B, LinkConfig(delay=0.010), LinkConfig(delay=0.030))
    end = net.run(until=lambda: client.count == 1)
    assert end == pytest.approx(0.040)
    assert server.received[0][0] == pytest.approx(0.010)
    assert client.received[0][1] == B


def test_reconfiguring_a_link_mid_run():
    net = Network(seed=1)
    sink = net.add_node(SinkNode(), B)
    net.add_node(BlastNode(B, 20, size=16, interval=0.001), A)
    net.link(A, B, LinkConfig(delay=0.001))
    net.run_for(0.0095)  # datagrams 0..9 sent
    net.link(A, B, LinkConfig(delay=0.001, loss=1.0))
    net.run()
    assert sink.sequence_numbers() == list(range(10))
    s = net.link_stats(A, B)
    assert s.dropped_loss == 10 and s.sent == 20


# ---------------------------------------------------------------- rebind


class Replier:
    """Sends one datagram to B at start, then replies to every datagram it receives."""

    def __init__(self):
        self.started = False
        self.out = []
        self.received = []

    def receive_datagram(self, data, addr, now):
        self.received.append((now, addr, data))

    def datagrams_to_send(self, now):
        out = self.out
        if not self.started:
            self.started = True
            out.append((b"hello", B))
        self.out = []
        return out

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


@pytest.mark.parametrize("deliver_in_flight", [False, True])
def test_rebind(deliver_in_flight):
    net = Network(seed=1)
    client = net.add_node(Replier(), A)
    server = net.add_node(EchoNode(), B)
    net.link(A, B, LinkConfig(delay=0.010), LinkConfig(delay=0.020))
    # Server receives at 10 ms and echoes; the echo is in flight to A until 30 ms.
    net.run_for(0.015)
    assert len(server.received) == 1
    net.rebind(A, C, deliver_in_flight=deliver_in_flight)
    assert net.node(C) is client
    with pytest.raises(KeyError):
        net.node(A)
    net.run()
    if deliver_in_flight:
        assert len(client.received) == 1
        assert net.stats()[(B, C)].dropped_unreachable == 0
    else:
        assert client.received == []
        assert net.stats()[(B, C)].dropped_unreachable == 1
    # The client now speaks from C: the server sees C, replies to C, and the old link config
    # (10 ms out, 20 ms back) applies to the new pair.
    client.out.append((b"again", B))
    t0 = net.now
    net.run()
    assert server.received[-1][1] == C
    assert server.received[-1][0] == pytest.approx(t0 + 0.010)
    assert client.received[-1][1] == B
    assert client.received[-1][0] == pytest.approx(t0 + 0.030)
    assert (A, B) not in net.stats() and (C, B) in net.stats()
    assert net.stats()[(C, B)].sent == 2  # counters carried over


def test_rebind_datagrams_sent_to_old_address_afterwards_are_dropped():
    net = Network(seed=1)
    net.add_node(SinkNode(), A)
    net.rebind(A, C, deliver_in_flight=True)
    net.add_node(BlastNode(A, 2), B)
    net.run()
    assert net.node(C).count == 0
    assert net.link_stats(B, A).dropped_unreachable == 2


def test_rebind_errors():
    net = Network()
    net.add_node(SinkNode(), A)
    net.add_node(SinkNode(), B)
    with pytest.raises(ValueError):
        net.rebind(A, B)
    with pytest.raises(KeyError):
        net.rebind(C, ("192.0.2.99", 1))
    with pytest.raises(ValueError):
        net.add_node(SinkNode(), A)
    with pytest.raises(TypeError):
        net.add_node(SinkNode(), "192.0.2.1:1")


# ---------------------------------------------------------------- determinism


def traced_run(seed, extra_link=False):
    cfg = LinkConfig(delay=0.01, jitter=0.004, loss=0.05, reorder=0.05, duplicate=0.03,
                     corrupt=0.02, bandwidth=20e6, queue_limit=20000,
                     gilbert_elliott=GilbertElliott(0.02, 0.3))
    net = Network(seed=seed)
    trace = []
    net.on_event(lambda *ev: trace.append(ev))
    net.add_node(BlastNode(B, 400, size=700, interval=0.0002), A)
    net.add_node(EchoNode(), B)
    if extra_link:
        net.link(C, A, LinkConfig(loss=0.5))
        net.add_node(BlastNode(A, 50, size=100, interval=0.001), C)
    net.link(A, B, cfg)
    net.run()
    echoes = [r for r in net.node(A).received if r[1] == B]
    return [ev for ev in trace if ev[2] != C and ev[3] != C], echoes


def test_same_seed_same_trace():
    t1, r1 = traced_run(7)
    t2, r2 = traced_run(7)
    assert t1 == t2 and r1 == r2
    kinds = {ev[1] for ev in t1}
    assert {EVENT_SEND, EVENT_DELIVER, EVENT_DROP_LOSS, EVENT_TIMER} <= kinds


def test_different_seed_different_trace():
    t1, _ = traced_run(7)
    t2, _ = traced_run(8)
    assert t1 != t2


def test_extra_link_does_not_perturb_others():
    t1, r1 = traced_run(7)
    t2, r2 = traced_run(7, extra_link=True)
    assert r1 == r2
    ab = [ev for ev in t1 if ev[1] != EVENT_TIMER]
    ab2 = [ev for ev in t2 if ev[1] != EVENT_TIMER]
    assert ab == ab2


def test_trace_times_are_monotonic_and_hooks_removable():
    net = Network(seed=2)
    seen = []
    hook = net.on_event(lambda t, kind, src, dst, size: seen.append((t, kind, src, dst, size)))
    other = []
    net.on_event(lambda *ev: other.append(ev))
    net.add_node(BlastNode(B, 50, size=32, interval=0.001), A)
    net.add_node(EchoNode(), B)
    net.link(A, B, LinkConfig(delay=0.005, jitter=0.002))
    net.run_for(0.02)
    times = [ev[0] for ev in seen]
    assert times == sorted(times)
    assert seen == other
    first = next(ev for ev in seen if ev[1] == EVENT_DELIVER)
    assert first[2:] == (A, B, 32) and 0.005 <= first[0] <= 0.007
    net.remove_event_hook(hook)
    n = len(seen)
    net.run()
    assert len(seen) == n and len(other) > n


# ---------------------------------------------------------------- timers and loop control


class TimerNode:
    """Fires at the times in ``schedule`` (a list it consumes)."""

    def __init__(self, schedule):
        self.schedule = list(schedule)
        self.fired = []

    def receive_datagram(self, data, addr, now):
        pass

    def datagrams_to_send(self, now):
        return []

    def get_timer(self):
        return self.schedule[0] if self.schedule else None

    def handle_timer(self, now):
        self.fired.append(now)
        if self.schedule and now >= self.schedule[0]:
            self.schedule.pop(0)


def test_timers_fire_in_order_at_their_times():
    net = Network()
    node = net.add_node(TimerNode([0.5, 1.0, 2.5]), A)
    assert net.run() == 2.5
    assert node.fired == [0.5, 1.0, 2.5]


def test_timer_moved_later_does_not_fire_early_and_cancelled_timer_does_not_fire():
    net = Network()
    node = net.add_node(TimerNode([1.0]), A)
    net.poll()
    node.schedule[0] = 2.0  # moved later without the network knowing
    net.run()
    assert node.fired == [2.0]
    node2 = net.add_node(TimerNode([3.0]), B)
    net.poll()
    node2.schedule.clear()
    net.poll(B)
    net.run()
    assert node2.fired == []
    assert net.pending_events == 0


def test_timer_in_the_past_is_clamped_to_now():
    net = Network()
    net.run_for(5.0)
    node = net.add_node(TimerNode([1.0]), A)
    net.run()
    assert node.fired == [5.0]


class StuckTimer:
    """Always asks for a timer at (or before) the current time: a livelock."""

    def __init__(self):
        self.calls = 0

    def receive_datagram(self, data, addr, now):
        pass

    def datagrams_to_send(self, now):
        return []

    def get_timer(self):
        return 0.0

    def handle_timer(self, now):
        self.calls += 1


class Ticker(TimerNode):
    def __init__(self, period):
        super().__init__([period])
        self.period = period

    def handle_timer(self, now):
        self.fired.append(now)
        self.schedule = [now + self.period]


def test_max_events_raises_livelock():
    net = Network()
    node = net.add_node(Ticker(0.001), A)
    with pytest.raises(Livelock):
        net.run(until=lambda: False, max_events=500, max_time=1e9)
    assert len(node.fired) == 500


def test_timeout_raises_and_leaves_clock_at_max_time():
    net = Network()
    node = net.add_node(Ticker(0.3), A)
    with pytest.raises(SimulationTimeout):
        net.run(until=lambda: False, max_time=1.0)
    assert net.now == 1.0
    assert len(node.fired) == 3
    # The pending event survives: a later run continues where this one stopped.
    net.run(until=lambda: len(node.fired) == 4)
    assert net.now == pytest.approx(1.2)


# runs that can never end, and what stops each: (node, network options, run, error, check)
_ENDLESS = {
    "timer that never advances": (lambda: StuckTimer(), {"livelock_threshold": 1000},
                                  lambda net: net.run(until=lambda: False), Livelock,
                                  lambda net, node: node.calls == 1000),
    "run_for with the default livelock threshold": (
        lambda: StuckTimer(), {}, lambda net: net.run_for(1.0), Livelock, lambda net, node: True),
    "default max duration": (lambda: Ticker(1.0), {"default_max_duration": 10.0},
                             lambda net: net.run(until=lambda: False), SimulationTimeout,
                             lambda net, node: net.now == 10.0),
    "nothing can happen": (lambda: SinkNode(), {}, lambda net: net.run(until=lambda: False),
                           Deadlock, lambda net, node: True),
}


@pytest.mark.parametrize("case", sorted(_ENDLESS))
def test_an_endless_run_is_stopped(case):
    make_node, options, run, error, check = _ENDLESS[case]
    net = Network(**{k: v for k, v in options.items() if k != "default_max_duration"})
    if "default_max_duration" in options:
        net.default_max_duration = options["default_max_duration"]
    node = net.add_node(make_node(), A)
    with pytest.raises(error):
        run(net)
    assert check(net, node)


def test_until_checked_before_first_event_and_after_each():
    net = Network()
    node = net.add_node(Ticker(1.0), A)
    assert net.run(until=lambda: True) == 0.0
    assert node.fired == []
    assert net.run(until=lambda: len(node.fired) >= 3) == 3.0
    assert node.fired == [1.0, 2.0, 3.0]


def test_run_for_advances_exactly_and_processes_events_up_to_the_end():
    net = Network()
    node = net.add_node(Ticker(0.25), A)
    assert net.run_for(1.0) == 1.0
    assert node.fired == [0.25, 0.5, 0.75, 1.0]
    assert net.run_for(0.1) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        net.run_for(-1.0)


def test_poll_ships_datagrams_created_between_runs():
    net = Network()
    client = net.add_node(Replier(), A)
    net.add_node(SinkNode(), B)
    net.run()
    assert net.node(B).count == 1
    client.out.append((b"later", B))
    net.poll(A)
    assert net.link_stats(A, B).in_flight == 1
    net.run()
    assert net.node(B).count == 2


def test_remove_node():
    net = Network()
    node = net.add_node(Ticker(1.0), A)
    net.add_node(BlastNode(A, 1), B)
    net.poll()
    assert net.remove_node(A) is node
    net.run()
    assert node.fired == [] and net.link_stats(B, A).dropped_unreachable == 1
    assert net.addresses == [B]


# ---------------------------------------------------------------- configuration and helpers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": -1},
        {"delay": math.inf},
        {"jitter": -0.1},
        {"loss": 1.5},
        {"reorder": -0.1},
        {"duplicate": 2},
        {"corrupt": float("nan")},
        {"bandwidth": 0},
        {"bandwidth": math.inf},
        {"queue_limit": -1},
        {"corrupt_bits": 0},
        {"mtu": -5},
        {"jitter_distribution": "pareto"},
    ],
)
def test_link_config_validation(kwargs):
    with pytest.raises(ValueError):
        LinkConfig(**kwargs)


def test_link_config_is_immutable():
    cfg = LinkConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.delay = 1.0  # type: ignore[misc]
    assert dataclasses.replace(cfg, delay=1.0).delay == 1.0


def test_jain_fairness():
    assert jain_fairness([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain_fairness([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_fairness([0, 0]) == 1.0
    assert jain_fairness([1, 3]) == pytest.approx(16 / 20)
    with pytest.raises(ValueError):
        jain_fairness([])
    with pytest.raises(ValueError):
        jain_fairness([1, -1])


# ---------------------------------------------------------------- properties


link_configs = st.builds(
    LinkConfig,
    delay=st.floats(0, 0.05),
    jitter=st.floats(0, 0.01),
    jitter_distribution=st.sampled_from(["uniform", "normal"]),
    bandwidth=st.one_of(st.none(), st.floats(1e5, 1e9)),
    queue_limit=st.one_of(st.none(), st.integers(0, 50000)),
    loss=st.floats(0, 0.5),
    gilbert_elliott=st.one_of(
        st.none(), st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
    ),
    reorder=st.floats(0, 0.5),
    reorder_delay=st.floats(0, 0.02),
    duplicate=st.floats(0, 0.5),
    corrupt=st.floats(0, 0.5),
    corrupt_bits=st.integers(1, 16),
    mtu=st.one_of(st.none(), st.integers(0, 1500)),
    blackholes=st.lists(st.tuples(st.floats(0, 0.05), st.floats(0, 0.05)).map(sorted).map(tuple),
                        max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=link_configs, seed=st.integers(0, 2**32), count=st.integers(0, 200),
       size=st.integers(8, 1500), interval=st.sampled_from([0.0, 0.0001, 0.001]))
def test_accounting_and_ordering_invariants(cfg, seed, count, size, interval):
    net = Network(seed=seed)
    trace = []
    net.on_event(lambda *ev: trace.append(ev))
    sink = net.add_node(SinkNode(), B)
    net.add_node(BlastNode(B, count, size=size, interval=interval), A)
    net.link(A, B, cfg)
    net.run(max_time=1e6)
    s = net.link_stats(A, B)
    assert s.in_flight == 0
    assert s.sent == count
    assert s.sent + s.duplicated == s.delivered + s.dropped
    assert sink.count == s.delivered
    assert s.bytes_sent == count * size
    assert s.bytes_delivered == s.delivered * size
    times = [ev[0] for ev in trace]
    assert times == sorted(times)
    if cfg.queue_limit is not None and cfg.bandwidth is not None:
        assert s.max_queue_bytes <= cfg.queue_limit
    if cfg.corrupt == 0.0:  # corruption may hit the sequence number
        seqs = sink.sequence_numbers()
        if not cfg.reorder and not cfg.jitter_reorders:
            assert seqs == sorted(seqs)
        assert set(seqs) <= set(range(count))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_property_same_seed_is_deterministic(seed):
    cfg = LinkConfig(delay=0.01, jitter=0.003, loss=0.1, reorder=0.1, duplicate=0.1,
                     corrupt=0.1, corrupt_bits=4)

    def once():
        net, sink = blast(cfg, count=60, size=40, interval=0.0005, seed=seed)
        return sink.received, net.stats()

    assert once() == once()


def test_blast_node_payload_format():
    node = BlastNode(B, 3, size=10)
    out = node.datagrams_to_send(0.0)
    assert [struct.unpack("!Q", d[:8])[0] for d, _ in out] == [0, 1, 2]
    assert all(len(d) == 10 and dest == B for d, dest in out)
    assert node.done and node.datagrams_to_send(0.0) == []
    with pytest.raises(ValueError):
        BlastNode(B, 1, size=4)


def _two_senders(cfg, shared):
    """A and C each send ten 1500-byte datagrams to a sink at B over ``cfg`` links; run."""
    net = Network(seed=1)
    sink = net.add_node(SinkNode(), B)
    for src in (A, C):
        net.add_node(BlastNode(B, 10, size=1500), src)
        net.link(src, B, cfg)
    if shared:
        net.share_bottleneck((A, B), (C, B))
    net.run()
    return net, sink


@pytest.mark.parametrize("shared", [False, True])
def test_shared_bottleneck(shared):
    # 1 ms per 1500-byte datagram
    net, sink = _two_senders(LinkConfig(delay=0.0, bandwidth=12e6), shared)
    times = [t for t, _, _ in sink.received]
    assert max(times) == pytest.approx(0.020 if shared else 0.010)
    per_sender = [sum(1 for _, addr, _ in sink.received if addr == x) for x in (A, C)]
    assert per_sender == [10, 10]
    assert jain_fairness(per_sender) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        net.share_bottleneck((A, B))


def test_shared_bottleneck_queue_limit_counts_both_flows():
    net, sink = _two_senders(LinkConfig(delay=0.0, bandwidth=12e6, queue_limit=4 * 1500), True)
    assert sink.count == 4
    assert net.link_stats(A, B).dropped_queue + net.link_stats(C, B).dropped_queue == 16


def test_livelock_zero_delay_ping_pong():
    # Two echo nodes bouncing a datagram over zero-delay links: time never advances.
    net = Network(livelock_threshold=500)
    net.add_node(EchoNode(record=False), B)
    pinger = net.add_node(EchoNode(record=False), A)
    pinger._out.append((b"ping", B))
    net.link(A, B, LinkConfig(delay=0.0))
    with pytest.raises(Livelock):
        net.run(until=lambda: False)
    assert net.now == 0.0
    assert pinger.count == 250
