"""Type stub of dquic._streamset (the streams of one connection; compiled)."""
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, final
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._recovery import RttEstimator
from dquic._spaces import _Space
from dquic._streams import FlowWindow, RecvStream, SendStream

__all__ = ["StreamSet", "MAX_STREAM_ID"]

MAX_STREAM_ID: int

class _DropPacket(Exception): ...

@final
class _Stream:
    stream_id: int
    send: SendStream
    recv: RecvStream
    send_limit: int
    readable_signalled: int  # 0 or 1
    send_opened: int  # 0 or 1
    recv_opened: int  # 0 or 1
    owed: int  # frames owed to the peer: a bit (1 << kind) each for RESET_STREAM, STOP_SENDING, MAX_STREAM_DATA
    reset_code: int  # the error code of the RESET_STREAM owed
    stop_code: int  # the error code of the STOP_SENDING owed
    blocked_reported: int
    queued: int  # 0 or 1
    closed_counted: int  # 0 or 1
    counted: int  # 0 or 1
    # lifecycle (PROTOCOL.md §16.7)
    pinned: int  # 0 or 1
    credit_wait: int  # 0 or 1
    busy: int  # 0 or 1
    idle_since: float
    readable_listed: int  # 0 or 1
    in_table: int  # 0 or 1
    idle_gen: int
    send_gen: int
    send_next: Optional[SendStream]
    send_min_pn: int
    recv_gen: int
    recv_done: int  # 0 or 1
    recv_w: int
    recv_c: int
    recv_min_pn: int
    recv_next: Optional[RecvStream]
    recv_next_hi: int

@final
class Ring:
    """A first-in first-out queue of objects with C fields (the stream set's lists)."""
    @property
    def n(self) -> int: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Tuple[Any, int, int, int, float]]: ...


@final
class StreamSet:
    @property
    def streams(self) -> StreamView: ...
    def _table_state(self) -> Tuple[int, int, int, int]: ...
    @property
    def last_stream(self) -> Optional[_Stream]: ...
    send_queue: Optional[Ring]  # None while empty
    @property
    def readable(self) -> Optional[List[_Stream]]: ...
    events: List[Any]
    app: _Space
    rtt: RttEstimator
    now: float
    noted: bool
    owed: int
    recv_window: FlowWindow
    data_received: int
    peer_max_data: int
    data_sent: int
    data_blocked_reported: int
    send_buffered: int
    stream_bytes_received: int
    window_max: int
    window_initial: int
    peer_stream_limit: int
    peer_stream_credit: int
    peer_streams_window: int
    peer_opened: int
    max_streams_local: int
    streams_blocked_reported: int
    streams_counted: int
    streams_waiting: int
    credit_waiters: Optional[Ring]
    idle_halves: Optional[Ring]
    finished: Optional[Ring]
    finished_max: int
    credit_owed: int
    unresolved: int
    tomb: Optional[Ring]  # complete peer halves awaiting resolution
    tomb_hi: int
    stale_below: int
    rx_pn: int
    refuse: bool
    message_events: bool
    readable_noted: bool
    applying: bool
    trim_due: bool
    gen_seq: int
    lost_streams: Optional[Dict[int, Any]]
    lost_streams_pns: Optional[List[int]]
    def __init__(self, config: Any, events: List[Any], app: _Space, rtt: RttEstimator) -> None: ...


@disjoint_base
class StreamView(Mapping[int, _Stream]):
    """A read-only mapping view of a connection's stream table."""
    def __new__(cls, sset: StreamSet) -> StreamView: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> _Stream: ...
    def __iter__(self) -> Iterator[int]: ...
    def keys(self) -> List[int]: ...  # type: ignore[override]
    def values(self) -> List[_Stream]: ...  # type: ignore[override]
    def items(self) -> List[Tuple[int, _Stream]]: ...  # type: ignore[override]
