"""Type stub for dquic._seed (the seed classes; dquic.DQUICHeader / dquic.DQUICFrame)."""
from typing import Optional, Union
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

_BytesLike = Union[bytes, bytearray, memoryview]

__all__ = ["DQUICHeader", "DQUICFrame"]

@disjoint_base
class DQUICHeader:
    packet_type: int
    packet_number: int
    dcid: bytes
    scid: bytes
    version: int
    largest_acked: Optional[int]
    token: bytes
    key_phase: int
    spin: int
    def __init__(self, packet_type: int, packet_number: int, dcid: _BytesLike = b"", scid: _BytesLike = b"",
                 version: int = ..., largest_acked: Optional[int] = None, token: _BytesLike = b"",
                 key_phase: int = 0, spin: int = 0) -> None: ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: _BytesLike, largest_pn: int = -1, dcid_len: Optional[int] = None) -> "DQUICHeader": ...

@disjoint_base
class DQUICFrame:
    stream_id: int
    frame_type: int
    offset: int
    length: int
    @property
    def fin(self) -> bool: ...
    def __init__(self, stream_id: int, frame_type: int, offset: int = 0, length: int = 0) -> None: ...
    def set_length(self, n: int) -> None: ...
    def append_offset(self, n: int) -> None: ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: _BytesLike) -> "DQUICFrame": ...
