# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The seed project's header and STREAM frame classes, ``DQUICHeader`` and ``DQUICFrame``.

Whole values in, bytes out (and back): a header with its full packet number, a STREAM frame
header with its offset and length. They are written with the codec of ``dquic._codec`` and
produce exactly its bytes; ``dquic.DQUICHeader``/``dquic.DQUICFrame`` and the compatibility
module ``DQUIC`` re-export them. Nothing in the transport uses them.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t

from dquic._codec cimport (Buffer, PacketHeader, arg_bytes_like, arg_cid, arg_u62, byte_len,
                           parse_stream_frame_fields, pull_header, stream_frame_header_error)
from dquic._wire cimport varint_len, varint_write

from dquic._codec import (
    DQUIC_VERSION_1,
    MAX_CID_LEN,
    VARINT_MAX,
    decode_packet_number,
    encode_packet_number,
    patch_length,
    pull_packet_number,
    push_long_header,
    push_short_header,
)
from dquic.errors import ErrorCode, ProtocolError

__all__ = ["DQUICHeader", "DQUICFrame"]

cdef object _FRAME_ENCODING_ERROR = ErrorCode.FRAME_ENCODING_ERROR


cdef class DQUICHeader:
    """A complete packet header with its full packet number.

    ``DQUICHeader(packet_type, packet_number, dcid=b"", scid=b"", version=DQUIC_VERSION_1,
    largest_acked=None, token=b"", key_phase=0, spin=0)``. ``to_bytes()`` writes the long form
    for PACKET_INITIAL/PACKET_HANDSHAKE (Length = packet-number bytes only) and the short
    form for PACKET_SHORT, truncating the packet number per RFC 9000 A.2 against
    ``largest_acked``. ``from_bytes(data, largest_pn=-1, dcid_len=None)`` reverses it; for a
    short header ``dcid_len`` defaults to "all bytes between the first byte and the packet
    number" (exactly what ``to_bytes`` produces). No header protection is applied.
    """
    cdef public object packet_type
    cdef public object packet_number
    cdef public object dcid
    cdef public object scid
    cdef public object version
    cdef public object largest_acked
    cdef public object token
    cdef public object key_phase
    cdef public object spin

    def __init__(self, packet_type, packet_number, dcid=b"", scid=b"", version=DQUIC_VERSION_1,
                 largest_acked=None, token=b"", key_phase=0, spin=0):
        if not isinstance(packet_type, int):
            raise TypeError("packet_type must be an int")
        if packet_type not in (0, 2, 4):
            raise ValueError("packet_type must be PACKET_INITIAL, PACKET_HANDSHAKE or PACKET_SHORT")
        arg_u62(packet_number, "packet_number")
        arg_cid(dcid, "dcid")
        arg_cid(scid, "scid")
        if not isinstance(version, int):
            raise TypeError("version must be an int")
        if version <= 0 or version > 0xFFFFFFFF:
            raise ValueError("version must be a non-zero 32-bit value")
        if largest_acked is not None:
            arg_u62(largest_acked, "largest_acked")
            if largest_acked >= packet_number:
                raise ValueError("largest_acked must be smaller than packet_number")
        arg_bytes_like(token, "token")
        if packet_type != 0 and byte_len(token):
            raise ValueError("only Initial packets carry a token")
        for bit, name in ((key_phase, "key_phase"), (spin, "spin")):
            if not isinstance(bit, int):
                raise TypeError(f"{name} must be an int")
            if bit not in (0, 1):
                raise ValueError(f"{name} must be 0 or 1")
        self.packet_type = packet_type
        self.packet_number = packet_number
        self.dcid = bytes(dcid)
        self.scid = bytes(scid)
        self.version = version
        self.largest_acked = largest_acked
        self.token = bytes(token)
        self.key_phase = key_phase
        self.spin = spin

    def to_bytes(self):
        """Encode the header (through the packet number)."""
        truncated, pn_len = encode_packet_number(self.packet_number, self.largest_acked)
        cdef Buffer buf = Buffer(capacity=1 + 4 + 2 + 40 + 8 + len(self.token) + 2 + 4)
        if self.packet_type == 4:
            push_short_header(buf, self.dcid, truncated, pn_len, self.key_phase, self.spin)
        else:
            off = push_long_header(buf, self.packet_type, self.version, self.dcid, self.scid,
                                   self.token, truncated, pn_len)
            patch_length(buf, off, pn_len)
        return buf.data

    @classmethod
    def from_bytes(cls, data, largest_pn=-1, dcid_len=None):
        """Decode bytes produced by ``to_bytes`` (or any unprotected header); ProtocolError
        on malformed input."""
        cdef Buffer buf = Buffer(data)
        cdef PacketHeader hdr
        if buf._size < 1:
            raise ProtocolError("empty header")
        first = buf._base[0]
        pn_len = (first & 0x03) + 1
        if not (first & 0x80) and dcid_len is None:
            dcid_len = buf._size - 1 - pn_len
            if dcid_len < 0:
                raise ProtocolError("short header truncated")
            if dcid_len > 20:
                raise ProtocolError(f"DCID length {dcid_len} exceeds {MAX_CID_LEN}")
        hdr = pull_header(buf, 0 if dcid_len is None else dcid_len)
        if hdr.packet_type not in (0, 2, 4):
            raise ProtocolError("not an Initial, Handshake or 1-RTT header")
        if hdr.payload_end - hdr.pn_offset < pn_len:
            raise ProtocolError("Length field smaller than the packet number")
        truncated = pull_packet_number(buf, pn_len)
        pn = decode_packet_number(truncated, pn_len, largest_pn)
        if hdr.packet_type == 4:
            return cls(4, pn, dcid=hdr.dcid, key_phase=(first >> 2) & 1, spin=(first >> 5) & 1)
        return cls(hdr.packet_type, pn, dcid=hdr.dcid, scid=hdr.scid, version=hdr.version,
                   token=hdr.token)

    def __eq__(self, other):
        if not isinstance(other, DQUICHeader):
            return NotImplemented
        o = <DQUICHeader>other
        return ((self.packet_type, self.packet_number, self.dcid, self.scid, self.version,
                 self.token, self.key_phase, self.spin)
                == (o.packet_type, o.packet_number, o.dcid, o.scid, o.version, o.token,
                    o.key_phase, o.spin))

    __hash__ = None

    def __repr__(self):
        return (f"DQUICHeader(packet_type={self.packet_type}, packet_number={self.packet_number}, "
                f"dcid={self.dcid!r}, scid={self.scid!r}, version=0x{self.version:08x})")


cdef class DQUICFrame:
    """A STREAM frame header: ``DQUICFrame(stream_id, frame_type, offset, length)``.

    ``frame_type`` must be a STREAM type (0x08..0x0f); its FIN bit (0x01) is carried over.
    ``to_bytes()`` always writes the OFF and LEN fields; ``from_bytes(data)`` accepts any
    STREAM type (absent offset = 0, absent length = bytes after the header) and keeps the
    wire type in ``frame_type``. ``offset + length`` must stay <= 2**62-1.
    """
    cdef public object stream_id
    cdef public object frame_type
    cdef public object offset
    cdef public object length

    def __init__(self, stream_id, frame_type, offset=0, length=0):
        arg_u62(stream_id, "stream_id")
        if not isinstance(frame_type, int):
            raise TypeError("frame_type must be an int")
        if frame_type < 0x08 or frame_type > 0x0F:
            raise ValueError("frame_type must be a STREAM frame type (0x08..0x0f)")
        arg_u62(offset, "offset")
        arg_u62(length, "length")
        if offset + length > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.stream_id = stream_id
        self.frame_type = frame_type
        self.offset = offset
        self.length = length

    @property
    def fin(self):
        return bool(self.frame_type & 0x01)

    def set_length(self, n):
        """Set the data length (ValueError if offset + n > 2**62-1)."""
        arg_u62(n, "length")
        if self.offset + n > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.length = n

    def append_offset(self, n):
        """Advance the offset by ``n`` (e.g. after the previous chunk was sent)."""
        arg_u62(n, "n")
        if self.offset + n + self.length > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.offset = self.offset + n

    def to_bytes(self):
        """Encode as type (OFF|LEN|FIN), stream id, offset, length."""
        cdef unsigned char tmp[25]
        cdef uint64_t sid = self.stream_id, off = self.offset, ln = self.length
        cdef int a = varint_len(sid), b = varint_len(off), c = varint_len(ln)
        tmp[0] = 0x08 | 0x04 | 0x02 | (self.frame_type & 0x01)
        varint_write(tmp + 1, sid, a)
        varint_write(tmp + 1 + a, off, b)
        varint_write(tmp + 1 + a + b, ln, c)
        return PyBytes_FromStringAndSize(<const char*>tmp, 1 + a + b + c)

    @classmethod
    def from_bytes(cls, data):
        """Decode a STREAM frame header at the start of ``data`` (ProtocolError if malformed)."""
        cdef Buffer buf = Buffer(data)
        cdef uint64_t ftype, sid, off, ln
        cdef Py_ssize_t n
        if buf._size < 1:
            raise ProtocolError("empty STREAM frame header")
        ftype = buf._base[0]
        if ftype < 0x08 or ftype > 0x0F:
            raise ProtocolError(f"not a STREAM frame type: 0x{ftype:02x}", _FRAME_ENCODING_ERROR, ftype)
        # the header alone: the length is not checked against the bytes that follow
        n = parse_stream_frame_fields(buf._base + 1, buf._size - 1, ftype, &sid, &off, &ln, False)
        if n < 0:
            stream_frame_header_error(n, ftype, ln, buf._size - 1)
        return cls(sid, ftype, off, ln)

    def __eq__(self, other):
        if not isinstance(other, DQUICFrame):
            return NotImplemented
        o = <DQUICFrame>other
        return ((self.stream_id, self.fin, self.offset, self.length)
                == (o.stream_id, o.fin, o.offset, o.length))

    __hash__ = None

    def __repr__(self):
        return (f"DQUICFrame(stream_id={self.stream_id}, frame_type=0x{self.frame_type:02x}, "
                f"offset={self.offset}, length={self.length})")
