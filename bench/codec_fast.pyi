"""Type stub for bench/codec_fast.pyx: single-call entry points to the wire codec (one call, one
result allocation, the same bytes as dquic._codec's Buffer/frame-object API)."""
from typing import Optional, Sequence, Tuple, Union

BytesLike = Union[bytes, bytearray, memoryview]
Range = Tuple[int, int]

def encode_stream_frame(stream_id: int, offset: int, data: BytesLike, fin: bool = False) -> bytes: ...
def decode_stream_frame(data: BytesLike, offset: int = 0) -> Tuple[int, int, bool, int, int]:
    """(stream_id, stream_offset, fin, data_start, data_end)"""
def encode_short_header(dcid: BytesLike, pn_truncated: int, pn_len: int, key_phase: int = 0,
                        spin: int = 0) -> bytes: ...
def decode_short_header(data: BytesLike, dcid_len: int,
                        offset: int = 0) -> Tuple[bytes, int, int, int, int, int]:
    """(dcid, pn_truncated, pn_len, key_phase, spin, payload_offset); unprotected headers."""
def encode_long_header(packet_type: int, version: int, dcid: BytesLike, scid: BytesLike,
                       token: Optional[BytesLike], pn_truncated: int, pn_len: int,
                       payload_length: int = 0) -> bytes: ...
def decode_long_header(data: BytesLike,
                       offset: int = 0) -> Tuple[int, int, bytes, bytes, bytes, int, int, int, int]:
    """(packet_type, version, dcid, scid, token, pn_truncated, pn_len, payload_offset,
    packet_end); unprotected Initial/Handshake headers."""
def encode_ack(ranges: Union[Sequence[Range], Sequence[int]], ack_delay: int,
               ecn: Optional[Tuple[int, int, int]] = None) -> bytes: ...
def decode_ack(data: BytesLike, offset: int = 0, max_ack_ranges: int = 256
               ) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int, int]], int]:
    """(bounds (start0, stop0, start1, stop1, ...), ack_delay, ecn, next_offset)"""

def bench_decode_stream_headers(data: BytesLike, n: int) -> int:
    """Decode the STREAM frame header at data[0] n times in a C loop; elapsed nanoseconds."""
