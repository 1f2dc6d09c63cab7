"""Type stub for dquic._codec (wire format v1; see PROTOCOL.md)."""
from typing import Any, ClassVar, Iterable, List, Optional, Sequence, Tuple, Union
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

_BytesLike = Union[bytes, bytearray, memoryview]
_Range = Tuple[int, int]

DQUIC_VERSION_1: int
MAX_CID_LEN: int
VARINT_MAX: int
STATELESS_RESET_TOKEN_LEN: int
RETRY_INTEGRITY_TAG_LEN: int
MAX_STREAMS_LIMIT: int
DEFAULT_MAX_ACK_RANGES: int

PACKET_INITIAL: int
PACKET_ZERO_RTT: int
PACKET_HANDSHAKE: int
PACKET_RETRY: int
PACKET_SHORT: int
PACKET_1RTT: int
PACKET_VERSION_NEGOTIATION: int

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

@disjoint_base
class Buffer:
    def __new__(cls, data: Optional[Any] = None, capacity: int = 0) -> "Buffer": ...
    @property
    def capacity(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    def data_slice(self, start: int, end: int) -> bytes: ...
    def tell(self) -> int: ...
    def seek(self, pos: int) -> None: ...
    def eof(self) -> bool: ...
    def pull_uint8(self) -> int: ...
    def pull_uint16(self) -> int: ...
    def pull_uint32(self) -> int: ...
    def pull_uint64(self) -> int: ...
    def pull_varint(self) -> int: ...
    def pull_bytes(self, n: int) -> bytes: ...
    def pull_view(self, n: int) -> memoryview: ...
    def push_uint8(self, value: int) -> None: ...
    def push_uint16(self, value: int) -> None: ...
    def push_uint32(self, value: int) -> None: ...
    def push_uint64(self, value: int) -> None: ...
    def push_varint(self, value: int) -> None: ...
    def push_varint_fixed(self, value: int, width: int) -> None: ...
    def push_bytes(self, data: _BytesLike) -> None: ...

def varint_size(value: int) -> int: ...
def encode_varint(value: int) -> bytes: ...
def decode_varint(data: _BytesLike, offset: int = 0) -> Tuple[int, int]: ...
def encode_packet_number(full_pn: int, largest_acked: Optional[int] = None) -> Tuple[int, int]: ...
def decode_packet_number(truncated: int, length_bytes: int, largest_pn: int) -> int: ...
def packet_number_length(first_byte: int) -> int: ...
def key_phase_of(first_byte: int) -> int: ...
def check_reserved_bits(first_byte: int) -> None: ...

@disjoint_base
class PacketHeader:
    packet_type: int
    version: Optional[int]
    dcid: bytes
    scid: bytes
    token: bytes
    integrity_tag: Optional[bytes]
    supported_versions: Optional[List[int]]
    first_byte: int
    pn_offset: int
    payload_end: int
    is_long: bool
    @property
    def key_phase(self) -> int: ...
    @property
    def spin_bit(self) -> int: ...
    @property
    def length(self) -> int: ...

def pull_header(buf: Buffer, short_dcid_len: int) -> PacketHeader: ...
def parse_version_invariant(data: _BytesLike) -> Tuple[bool, Optional[int], bytes, Optional[bytes]]: ...
def pull_packet_number(buf: Buffer, pn_len: int) -> int: ...
def push_long_header(buf: Buffer, packet_type: int, version: int, dcid: _BytesLike, scid: _BytesLike,
                     token: Optional[_BytesLike], pn_truncated: int, pn_len: int) -> int: ...
def patch_length(buf: Buffer, length_offset: int, value: int) -> None: ...
def push_short_header(buf: Buffer, dcid: _BytesLike, pn_truncated: int, pn_len: int,
                      key_phase: int = 0, spin: int = 0) -> None: ...
def encode_retry(version: int, dcid: _BytesLike, scid: _BytesLike, token: _BytesLike,
                 integrity_tag: Optional[_BytesLike] = None) -> bytes: ...
def encode_version_negotiation(dcid: _BytesLike, scid: _BytesLike, versions: Iterable[int]) -> bytes: ...

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
