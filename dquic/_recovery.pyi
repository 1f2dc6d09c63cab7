"""Type stubs for dquic._recovery (RFC 9002 loss detection and RTT estimation)."""
from typing import Any, Iterable, Optional, Sequence, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from ._congestion import CongestionController

__all__ = ["SentPacket", "RttEstimator", "Recovery", "HANDSHAKE", "APPLICATION"]

HANDSHAKE: int
APPLICATION: int

@disjoint_base
class SentPacket:
    packet_number: int
    space: int
    time_sent: float
    sent_bytes: int
    ack_eliciting: bool
    in_flight: bool
    is_probe: bool
    pmtu_probe: bool
    frames: Any
    declared_lost: bool
    delivered: int
    delivered_time: float
    first_sent_time: float
    is_app_limited: bool
    def __init__(
        self,
        packet_number: int,
        space: int,
        time_sent: float,
        sent_bytes: int,
        ack_eliciting: bool = True,
        in_flight: Optional[bool] = None,
        frames: Any = None,
        is_probe: bool = False,
    ) -> None: ...

@disjoint_base
class RttEstimator:
    latest_rtt: float
    smoothed_rtt: float
    rttvar: float
    min_rtt: float
    initial_rtt: float
    has_sample: bool
    def __init__(self, initial_rtt: float = 0.333) -> None: ...
    def reset(self) -> None: ...
    def update(
        self, latest_rtt: float, ack_delay: float, max_ack_delay: float, handshake_confirmed: bool
    ) -> None: ...
    def pto_base(self, granularity: float) -> float: ...

@disjoint_base
class Recovery:
    congestion: CongestionController
    rtt: RttEstimator
    max_ack_delay: float
    packet_threshold: int
    time_threshold: float
    granularity: float
    persistent_congestion_threshold: int
    handshake_confirmed: bool
    pto_count: int
    probes_needed: int
    max_lost_tracked: int
    max_tracked: int
    first_rtt_sample_time: float
    packets_sent: int
    packets_acked: int
    packets_lost: int
    pmtu_probes_lost: int
    bytes_lost: int
    spurious_losses: int
    persistent_congestions: int
    pto_expirations: int
    congestion_undos: int
    adaptive_reordering: bool
    packet_threshold_disabled: bool
    base_packet_threshold: int
    max_packet_threshold: int
    base_time_threshold: float
    max_time_threshold: float
    reordering_decay: int
    max_reordering_seen: int
    delivered: int
    delivered_time: float
    first_sent_time: float
    app_limited_until: int
    last_delivery_rate: float
    def __init__(
        self,
        congestion: CongestionController,
        max_ack_delay: float = 0.025,
        initial_rtt: float = 0.333,
        packet_threshold: int = 3,
        time_threshold: float = 1.125,
        granularity: float = 0.001,
        persistent_congestion_threshold: int = 3,
        max_lost_tracked: int = 256,
        max_tracked: int = 32768,
        adaptive_reordering: bool = True,
        max_packet_threshold: int = 64,
        max_time_threshold: float = 2.0,
        reordering_decay: int = 64,
    ) -> None: ...
    @property
    def bytes_in_flight(self) -> int: ...
    @property
    def ack_eliciting_in_flight(self) -> int: ...
    def largest_acked(self, space: int) -> int: ...
    def largest_sent(self, space: int) -> int: ...
    def loss_time(self, space: int) -> Optional[float]: ...
    def outstanding(self, space: int) -> list[SentPacket]: ...
    def is_discarded(self, space: int) -> bool: ...
    def set_congestion_controller(
        self, congestion: CongestionController, reset_rtt: bool = False
    ) -> None: ...
    def on_packet_sent(self, pkt: SentPacket) -> None: ...
    def on_app_limited(self) -> None: ...
    def on_ack_received(
        self, space: int, ranges: Iterable[Sequence[int]], ack_delay: float, now: float
    ) -> Tuple[list[SentPacket], list[SentPacket]]: ...
    def get_loss_detection_timer(self) -> Optional[float]: ...
    def on_loss_detection_timeout(self, now: float) -> Tuple[list[SentPacket], int]: ...
    def discard_space(self, space: int) -> None: ...
