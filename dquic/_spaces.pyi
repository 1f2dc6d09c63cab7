"""Type stub of dquic._spaces (packet-number spaces and sent-packet records; compiled)."""
from typing import Any, Dict, List, Optional, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._ranges import RangeSet
from dquic._recovery import SentPacket
from dquic._streams import RecvStream, SendStream

__all__ = ["MAX_CRYPTO_BUFFER", "TRACE_NAMES", "FREE_SENT"]

MAX_CRYPTO_BUFFER: int
TRACE_NAMES: Tuple[str, ...]
FREE_SENT: List["_Sent"]

@disjoint_base
class _Space:
    rx: Optional[RangeSet]  # None once the space is discarded
    rx_floor: int  # packet numbers below it are duplicates (see the module)
    max_ranges: int
    largest_rx: int
    largest_rx_time: float
    ack_pending: bool
    unacked_eliciting: int
    ack_deadline: float  # < 0: none
    next_pn: int
    crypto_send: Optional[SendStream]  # the handshake space's, until it is discarded
    crypto_recv: Optional[RecvStream]
    discarded: bool
    largest_acked: int
    ack_hi_max: int
    acks_written: int
    nfills: int
    def __init__(self, max_ranges: int, crypto: bool = ...) -> None: ...
    def release(self) -> None: ...

@disjoint_base
class _Sent(SentPacket):
    def frames_for_trace(self) -> List[Dict[str, Any]]: ...

