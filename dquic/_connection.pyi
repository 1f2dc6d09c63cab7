"""Type stub of dquic._connection (the compiled sans-IO connection, re-exported by
dquic.connection)."""
from typing import Any, Callable, Dict, List, Optional, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._congestion import CongestionController
from dquic._ranges import RangeSet
from dquic._recovery import Recovery, SentPacket
from dquic._streams import FlowWindow, RecvStream, SendStream
from dquic.config import Configuration
from dquic.events import ConnectionTerminated, Event

__all__ = ["CoreConnection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION"]

SPACE_HANDSHAKE: int
SPACE_APPLICATION: int
MAX_STREAM_ID: int
MAX_CRYPTO_BUFFER: int
MAX_PENDING_PATH_RESPONSES: int
IDLE_RELEASE_AFTER: float

class _PlainHandshake:
    complete: bool
    peer_static: Optional[bytes]
    peer_transport_params: Optional[bytes]
    def __init__(self, is_client: bool, transport_params: bytes) -> None: ...
    def start(self) -> bytes: ...
    def receive(self, message: bytes) -> Optional[bytes]: ...
    def protections(self, **_: Any) -> Tuple[Any, Any]: ...

@disjoint_base
class _Space:
    rx: Optional[RangeSet]  # None once the space is discarded
    rx_floor: int
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
    def __init__(self, max_ranges: int, crypto: bool = ...) -> None: ...
    def release(self) -> None: ...

@disjoint_base
class _Stream:
    stream_id: int
    send: SendStream
    recv: RecvStream
    send_limit: int
    readable_signalled: bool
    send_opened: bool
    recv_opened: bool
    owed: int  # frames owed to the peer: a bit (1 << kind) each for RESET_STREAM, STOP_SENDING, MAX_STREAM_DATA
    reset_code: int  # the error code of the RESET_STREAM owed
    stop_code: int  # the error code of the STOP_SENDING owed
    blocked_reported: int
    queued: bool
    closed_counted: bool
    counted: bool
    # lifecycle (PROTOCOL.md §16.7)
    pinned: bool
    credit_wait: bool
    idle_since: float
    idle_gen: int
    send_gen: int
    send_next: Optional[SendStream]
    send_min_pn: int
    recv_gen: int
    recv_done: bool
    recv_w: int
    recv_c: int
    recv_lo: int
    recv_min_pn: int
    recv_next: Optional[RecvStream]
    recv_next_lo: int
    def __init__(self, stream_id: int, window_max: int, window_initial: int,
                 send_limit: int) -> None: ...

@disjoint_base
class _Sent(SentPacket):
    def frames_for_trace(self) -> List[Dict[str, Any]]: ...

class ConnectionStats:
    smoothed_rtt: float
    min_rtt: float
    latest_rtt: float
    rttvar: float
    cwnd: int
    bytes_in_flight: int
    packets_sent: int
    packets_received: int
    packets_lost: int
    spurious_losses: int
    bytes_sent: int
    bytes_received: int
    stream_bytes_sent: int
    stream_bytes_received: int
    bytes_retransmitted: int
    bytes_lost: int
    packets_dropped: int
    duplicate_packets: int
    send_window_used: float
    recv_window_used: float
    recv_window: int
    pto_count: int
    def __init__(self, **values: Any) -> None: ...
    def as_dict(self) -> Dict[str, Any]: ...

@disjoint_base
class CoreConnection:
    config: Configuration
    is_client: bool
    peer_addr: Tuple[Any, ...]
    host_cid: bytes
    peer_cid: bytes
    original_dcid: Optional[bytes]
    cid_changes: Optional[List[Tuple[str, bytes]]]  # None while there is nothing to report
    peer_key: Optional[bytes]
    packets_received: int
    packets_dropped: int
    duplicate_packets: int
    bytes_sent: int
    bytes_received: int
    stream_bytes_received: int
    # internals kept visible for tests and tools
    _spaces: List[_Space]
    _streams: Dict[int, _Stream]
    _recv_window: FlowWindow
    _recovery: Recovery
    _cc: CongestionController
    _seal: List[Any]
    _open: List[Any]
    _retry_scid: Optional[bytes]
    _qlog: Any
    _work: Optional[Dict[Any, Any]]  # the driving endpoint's connections with output to build
    _host_cids: Dict[int, bytes]  # sequence number -> our connection ID
    @property
    def _owed(self) -> Dict[str, Any]: ...  # control frames owed to the peer, by qlog name

    def __init__(self, config: Configuration, peer_addr: Tuple[Any, ...], *,
                 host_cid: Optional[bytes] = ..., peer_cid: Optional[bytes] = ...,
                 original_dcid: Optional[bytes] = ..., retry_source_cid: Optional[bytes] = ...,
                 random_bytes: Callable[[int], bytes] = ...,
                 reset_token: Optional[Callable[[bytes], bytes]] = ...,
                 handshake: Any = ...) -> None: ...
    # state
    @property
    def is_established(self) -> bool: ...
    @property
    def is_closed(self) -> bool: ...
    @property
    def close_sent(self) -> bool: ...
    @property
    def is_terminated(self) -> bool: ...
    @property
    def handshake_confirmed(self) -> bool: ...
    @property
    def handshake_complete(self) -> bool: ...
    @property
    def stats(self) -> ConnectionStats: ...
    @property
    def send_buffered(self) -> int: ...
    def stream_open_blocked(self, stream_id: int) -> bool: ...
    @property
    def peer_allows_no_streams(self) -> bool: ...
    def pin_stream(self, stream_id: int) -> None: ...
    def streams(self) -> List[int]: ...
    def stream_bytes(self, stream_id: int) -> Tuple[int, int]: ...
    # commands
    def connect(self, now: float) -> None: ...
    def send_message(self, stream_id: int, data: Any) -> int: ...
    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = ...) -> int: ...
    def end_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int = ...) -> None: ...
    def stop_sending(self, stream_id: int, error_code: int = ...) -> None: ...
    def send_datagram(self, data: Any) -> int: ...
    def close(self, error_code: int = ..., reason: str = ..., application: bool = ...) -> None: ...
    def request_ack(self) -> None: ...
    def request_key_update(self) -> None: ...
    def change_address(self) -> None: ...
    def attach_qlog(self, trace: Any, now: float) -> None: ...
    # reading
    def next_event(self) -> Optional[Event]: ...
    def take_events(self) -> List[Event]: ...
    def readable_streams(self) -> List[int]: ...
    def stream_finished(self, stream_id: int) -> bool: ...
    def stream_send_complete(self, stream_id: int) -> bool: ...
    def message_ready(self, stream_id: int, max_bytes: int) -> bool: ...
    def read_message(self, stream_id: int, max_bytes: int) -> Optional[Tuple[bytes, bool]]: ...
    def read_messages(
        self, order: List[int], budget: int, out: Dict[int, bytes]
    ) -> Tuple[int, int, int]: ...
    # driving
    def receive_datagram(self, data: Any, addr: Tuple[Any, ...], now: float) -> None: ...
    def receive_segments(self, data: Any, segment_size: int, addr: Tuple[Any, ...], now: float) -> int: ...
    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple[Any, ...]]]: ...
    def datagram_trains(
        self, now: float, max_bytes: int = 65000, max_segments: int = 64
    ) -> List[Tuple[Any, int, Tuple[Any, ...]]]: ...
    def get_timer(self) -> Optional[float]: ...
    @property
    def timers(self) -> Dict[str, float]: ...
    def handle_timer(self, now: float) -> None: ...
    # stateless reset (RFC 9000 §10.3)
    def peer_reset_tokens(self) -> List[bytes]: ...
    @property
    def reset_token(self) -> Optional[bytes]: ...
    def is_stateless_reset(self, datagram: Any) -> bool: ...
    def on_stateless_reset(self, now: float) -> None: ...
