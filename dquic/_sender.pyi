"""Type stub of dquic._sender (building one connection's packets; compiled)."""
from typing import Any, List, Optional

from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._cids import CidState
from dquic._codec import Buffer
from dquic._congestion import Pacer
from dquic._paths import PathState
from dquic._recovery import Recovery
from dquic._spaces import _Space
from dquic._streamset import StreamSet

__all__ = ["Sender", "MIN_ELICITING_PACKET", "MAX_LOST_STREAM_PACKETS"]

MIN_ELICITING_PACKET: int
MAX_LOST_STREAM_PACKETS: int

@disjoint_base
class Sender:
    @property
    def is_client(self) -> bool: ...
    @property
    def seal(self) -> List[Any]: ...
    @property
    def hs(self) -> _Space: ...
    @property
    def app(self) -> _Space: ...
    @property
    def cids(self) -> CidState: ...
    @property
    def paths(self) -> PathState: ...
    @property
    def sset(self) -> StreamSet: ...
    @property
    def recovery(self) -> Recovery: ...
    @property
    def pacer(self) -> Optional[Pacer]: ...
    events: List[Any]
    sbuf: Optional[Buffer]
    app_seal: Any
    app_seal_null: bool
    app_tag: int
    retry_token: bytes
    qlog: Any
    pacing_deadline: float
    datagrams: Any  # a deque of (id, data), None while empty
    datagram_seq: int
    last_eliciting_sent: float
    eliciting_since_receive: bool
    idle_restart: float
    noted: bool
    ask_pn: int  # our newest ack-eliciting packet with a full ACK, -1: none in flight
    asked_hi: int
    ask_time: float
    @property
    def mds(self) -> int: ...
    @property
    def base_mds(self) -> int: ...
    @property
    def pmtu_max(self) -> int: ...
    @property
    def pmtu_hi(self) -> int: ...
    @property
    def pmtu_probe_size(self) -> int: ...
    @property
    def pmtu_fails(self) -> int: ...
    @property
    def pmtu_failed_sizes(self) -> int: ...
    @property
    def pmtu_probes_sent(self) -> int: ...
    pmtud: bool
    def __init__(self, config: Any, is_client: bool, seal: List[Any], hs: _Space, app: _Space,
                 cids: CidState, paths: PathState, sset: StreamSet, recovery: Recovery,
                 pacer: Optional[Pacer], reset_token: Any, events: List[Any]) -> None: ...
