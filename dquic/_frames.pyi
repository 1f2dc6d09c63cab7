"""Type stub for dquic._frames (frames of wire format v1; see PROTOCOL.md §7)."""
from typing import Any, ClassVar, Iterable, List, Optional, Sequence, Tuple, Union
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._codec import Buffer

_BytesLike = Union[bytes, bytearray, memoryview]
_Range = Tuple[int, int]

DEFAULT_MAX_ACK_RANGES: int
MAX_STREAMS_LIMIT: int

FRAME_PADDING: int
FRAME_PING: int
FRAME_ACK: int
FRAME_ACK_ECN: int
FRAME_RESET_STREAM: int
FRAME_STOP_SENDING: int
FRAME_CRYPTO: int
FRAME_NEW_TOKEN: int
FRAME_STREAM: int
FRAME_STREAM_BASE: int
FRAME_STREAM_MAX: int
STREAM_FLAG_OFF: int
STREAM_FLAG_LEN: int
STREAM_FLAG_FIN: int
FRAME_MAX_DATA: int
FRAME_MAX_STREAM_DATA: int
FRAME_MAX_STREAMS: int
FRAME_DATA_BLOCKED: int
FRAME_STREAM_DATA_BLOCKED: int
FRAME_STREAMS_BLOCKED: int
FRAME_NEW_CONNECTION_ID: int
FRAME_RETIRE_CONNECTION_ID: int
FRAME_PATH_CHALLENGE: int
FRAME_PATH_RESPONSE: int
FRAME_CONNECTION_CLOSE: int
FRAME_CONNECTION_CLOSE_APP: int
FRAME_HANDSHAKE_DONE: int
FRAME_DATAGRAM: int
FRAME_DATAGRAM_LEN: int
FRAME_NAMES: dict
LONG_HEADER_FRAME_TYPES: frozenset

class Frame:
    frame_type: Any
    @property
    def wire_type(self) -> int: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@disjoint_base
class PaddingFrame(Frame):
    length: int
    frame_type: int
    def __init__(self, length: int = 1) -> None: ...

class PingFrame(Frame):
    frame_type: int
    def __init__(self) -> None: ...

class HandshakeDoneFrame(Frame):
    frame_type: int
    def __init__(self) -> None: ...

@disjoint_base
class AckFrame(Frame):
    ranges: List[_Range]
    ack_delay: int
    ecn: Optional[Tuple[int, int, int]]
    frame_type: int
    def __init__(self, ranges: Sequence[_Range], ack_delay: int,
                 ecn: Optional[Tuple[int, int, int]] = None) -> None: ...

@disjoint_base
class ResetStreamFrame(Frame):
    stream_id: int
    error_code: int
    final_size: int
    frame_type: int
    def __init__(self, stream_id: int, error_code: int, final_size: int) -> None: ...

@disjoint_base
class StopSendingFrame(Frame):
    stream_id: int
    error_code: int
    frame_type: int
    def __init__(self, stream_id: int, error_code: int) -> None: ...

@disjoint_base
class CryptoFrame(Frame):
    offset: int
    data: _BytesLike
    frame_type: int
    def __init__(self, offset: int, data: _BytesLike) -> None: ...

@disjoint_base
class NewTokenFrame(Frame):
    token: _BytesLike
    frame_type: int
    def __init__(self, token: _BytesLike) -> None: ...

@disjoint_base
class StreamFrame(Frame):
    stream_id: int
    offset: int
    data: _BytesLike
    fin: bool
    has_length: bool
    frame_type: int
    def __init__(self, stream_id: int, offset: int, data: _BytesLike, fin: bool = False,
                 has_length: bool = True) -> None: ...

@disjoint_base
class MaxDataFrame(Frame):
    maximum: int
    frame_type: int
    def __init__(self, maximum: int) -> None: ...

@disjoint_base
class MaxStreamDataFrame(Frame):
    stream_id: int
    maximum: int
    frame_type: int
    def __init__(self, stream_id: int, maximum: int) -> None: ...

@disjoint_base
class MaxStreamsFrame(Frame):
    maximum: int
    frame_type: int
    def __init__(self, maximum: int) -> None: ...

@disjoint_base
class DataBlockedFrame(Frame):
    limit: int
    frame_type: int
    def __init__(self, limit: int) -> None: ...

@disjoint_base
class StreamDataBlockedFrame(Frame):
    stream_id: int
    limit: int
    frame_type: int
    def __init__(self, stream_id: int, limit: int) -> None: ...

@disjoint_base
class StreamsBlockedFrame(Frame):
    limit: int
    frame_type: int
    def __init__(self, limit: int) -> None: ...

@disjoint_base
class NewConnectionIdFrame(Frame):
    sequence: int
    retire_prior_to: int
    connection_id: _BytesLike
    stateless_reset_token: _BytesLike
    frame_type: int
    def __init__(self, sequence: int, retire_prior_to: int, connection_id: _BytesLike,
                 stateless_reset_token: _BytesLike) -> None: ...

@disjoint_base
class RetireConnectionIdFrame(Frame):
    sequence: int
    frame_type: int
    def __init__(self, sequence: int) -> None: ...

@disjoint_base
class PathChallengeFrame(Frame):
    data: _BytesLike
    frame_type: int
    def __init__(self, data: _BytesLike) -> None: ...

@disjoint_base
class PathResponseFrame(Frame):
    data: _BytesLike
    frame_type: int
    def __init__(self, data: _BytesLike) -> None: ...

@disjoint_base
class ConnectionCloseFrame(Frame):
    error_code: int
    frame_type: Optional[int]  # the offending frame's type (None for application closes)
    reason: _BytesLike
    application: bool
    def __init__(self, error_code: int, frame_type: Optional[int] = None, reason: _BytesLike = b"",
                 application: bool = False) -> None: ...

@disjoint_base
class DatagramFrame(Frame):
    data: _BytesLike
    has_length: bool
    frame_type: int
    def __init__(self, data: _BytesLike, has_length: bool = True) -> None: ...

_AnyFrame = Union[PaddingFrame, PingFrame, AckFrame, ResetStreamFrame, StopSendingFrame, CryptoFrame,
                 NewTokenFrame, StreamFrame, MaxDataFrame, MaxStreamDataFrame, MaxStreamsFrame,
                 DataBlockedFrame, StreamDataBlockedFrame, StreamsBlockedFrame, NewConnectionIdFrame,
                 RetireConnectionIdFrame, PathChallengeFrame, PathResponseFrame, ConnectionCloseFrame,
                 HandshakeDoneFrame, DatagramFrame]

def pull_frame(buf: Buffer, max_ack_ranges: int = 256) -> _AnyFrame: ...
def push_frame(buf: Buffer, frame: Frame) -> None: ...
def frame_size(frame: Frame) -> int: ...
def encode_frames(frames: Iterable[Frame], capacity: int = -1) -> bytes: ...
def decode_frames(payload: _BytesLike, packet_type: Optional[int] = None,
                  max_ack_ranges: int = 256) -> List[_AnyFrame]: ...
def check_frame_allowed(frame_type: int, packet_type: int) -> None: ...
def decode_stream_frame_header(data: _BytesLike, offset: int = 0) -> Tuple[int, int, int, bool, int]: ...
def push_stream_frame_header(buf: Buffer, stream_id: int, offset: int, length: int, fin: bool = False) -> None: ...
def stream_frame_header_size(stream_id: int, offset: int, length: int) -> int: ...
def push_ack_frame(buf: Buffer, ranges: Sequence[_Range], ack_delay: int,
                   ecn: Optional[Tuple[int, int, int]] = None) -> None: ...
