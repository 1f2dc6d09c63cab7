"""Type stubs for dquic._congestion (congestion controllers and pacer)."""
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

__all__ = ["CongestionController", "NewReno", "Cubic", "Bbr", "Pacer"]

@disjoint_base
class CongestionController:
    congestion_window: int
    bytes_in_flight: int
    ssthresh: float
    max_datagram_size: int
    initial_window: int
    minimum_window: int
    maximum_window: int
    in_recovery: bool
    recovery_start_time: float
    is_app_limited: bool
    congestion_events: int
    persistent_congestion_events: int
    congestion_undos: int
    def __init__(
        self,
        max_datagram_size: int = 1200,
        initial_window: int | None = None,
        minimum_window: int | None = None,
        maximum_window: int | None = None,
    ) -> None: ...
    def on_packet_sent(self, sent_bytes: int, now: float) -> None: ...
    def on_packets_acked(
        self,
        acked_bytes: int,
        largest_time_sent: float,
        now: float,
        rtt_sample: float,
        smoothed_rtt: float,
        min_rtt: float,
    ) -> None: ...
    def on_packets_lost(self, lost_bytes: int, now: float) -> None: ...
    def on_congestion_event(self, time_sent: float, now: float) -> None: ...
    def on_persistent_congestion(self, now: float) -> None: ...
    def on_packet_discarded(self, sent_bytes: int) -> None: ...
    def on_spurious_congestion(self, now: float) -> None: ...
    def on_rate_sample(
        self,
        delivery_rate: float,
        rtt: float,
        delivered: int,
        prior_delivered: int,
        is_app_limited: bool,
        now: float,
    ) -> None: ...
    def pacing_rate(self) -> float: ...
    def can_send(self, size: int = 1200) -> bool: ...
    def available(self) -> int: ...
    def in_slow_start(self) -> bool: ...
    def congestion_state(self, app_limited: bool = ...) -> str: ...

@disjoint_base
class NewReno(CongestionController): ...

BBR_STARTUP: int
BBR_DRAIN: int
BBR_PROBE_BW: int
BBR_PROBE_RTT: int

@disjoint_base
class Bbr(CongestionController):
    mode: int
    btl_bw: float
    min_rtt: float
    min_rtt_stamp: float
    min_rtt_window: float
    probe_rtt_duration: float
    pacing_gain: float
    cwnd_gain: float
    high_gain: float
    loss_threshold: float
    filled_pipe: bool
    round_count: int
    full_bw: float
    full_bw_count: int
    cycle_index: int
    cycle_stamp: float
    initial_rtt: float
    probe_rtt_rounds: int
    bw_resets: int
    def __init__(
        self,
        max_datagram_size: int = 1200,
        initial_window: int | None = None,
        minimum_window: int | None = None,
        maximum_window: int | None = None,
        initial_rtt: float = 0.1,
        min_rtt_window: float = 10.0,
        probe_rtt_duration: float = 0.2,
        loss_threshold: float = 0.02,
        seed: int = 1,
    ) -> None: ...

@disjoint_base
class Cubic(CongestionController):
    c: float
    beta: float
    fast_convergence: bool
    hystart: bool
    w_max: float
    k: float
    epoch_start: float
    cwnd_epoch: float
    w_est: float
    in_css: bool
    css_rounds: int
    css_baseline_min_rtt: float
    last_round_min_rtt: float
    current_round_min_rtt: float
    rtt_sample_count: int
    round_marker: float
    hystart_exits: int
    def __init__(
        self,
        max_datagram_size: int = 1200,
        initial_window: int | None = None,
        minimum_window: int | None = None,
        maximum_window: int | None = None,
        c: float = 0.4,
        beta: float = 0.7,
        fast_convergence: bool = True,
        hystart: bool = True,
    ) -> None: ...
    def w_cubic(self, t: float) -> float: ...

@disjoint_base
class Pacer:
    max_datagram_size: int
    burst_packets: float
    gain: float
    slow_start_gain: float
    rate: float
    capacity: float
    tokens: float
    last_time: float
    burst_time: float
    max_burst_packets: float
    def __init__(
        self,
        max_datagram_size: int = 1200,
        burst_packets: float = 10.0,
        gain: float = 1.25,
        slow_start_gain: float = 2.0,
        burst_time: float = 0.001,
        max_burst_packets: float = 64.0,
    ) -> None: ...
    def update(
        self, cwnd: int, srtt: float, slow_start: bool = False, pacing_rate: float = 0.0
    ) -> None: ...
    def next_send_time(self, now: float) -> float: ...
    def on_sent(self, size: int, now: float) -> None: ...
