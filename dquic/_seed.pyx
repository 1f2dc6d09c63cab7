# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The seed project's header and STREAM frame classes, ``DQUICHeader`` and ``DQUICFrame``.

Whole values in, bytes out (and back): a header with its full packet number, a STREAM frame
header with its offset and length. They are written with ``dquic._codec`` and ``dquic._frames`` and
produce exactly its bytes; ``dquic.DQUICHeader``/``dquic.DQUICFrame`` and the compatibility
module ``DQUIC`` re-export them. Nothing in the transport uses them.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t

from dquic._codec cimport Buffer, PacketHeader, arg_bytes_like, arg_cid, arg_u62, byte_len, pull_header
from dquic._frames cimport parse_stream_frame_fields, stream_frame_header_error
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
cdef bytes _VERSION_1_BYTES = DQUIC_VERSION_1.to_bytes(4, "big")
# a packet number is at most 4 bytes, and RFC 9000 §17.1 has it span more than twice the
# distance to the largest acknowledged one: that distance stays below 2**31
cdef object _PN_DISTANCE_LIMIT = 1 << 31


cdef class DQUICHeader:
    """A complete packet header with its full packet number.

    ``DQUICHeader(packet_type, packet_number, dcid=b"", scid=b"", version=DQUIC_VERSION_1,
    largest_acked=None, token=b"", key_phase=0, spin=0)``. ``to_bytes()`` writes the long form
    for PACKET_INITIAL/PACKET_HANDSHAKE (Length = packet-number bytes only) and the short
    form for PACKET_SHORT, truncating the packet number per RFC 9000 §17.1 against
    ``largest_acked``. ``from_bytes(data, largest_pn=-1, dcid_len=None)`` reverses it; for a
    short header ``dcid_len`` defaults to "all bytes between the first byte and the packet
    number" (exactly what ``to_bytes`` produces). No header protection is applied.

    The constructor accepts only what the wire can carry, so that every header it accepts
    comes back from ``from_bytes(h.to_bytes(), largest_pn=...)`` (``h.largest_acked``, -1 for
    None) with every attribute equal: ``packet_number - largest_acked`` (``packet_number + 1`` without
    ``largest_acked``) below 2**31, the limit of a 4-byte packet number; ``key_phase``/``spin``
    only on short headers; no ``scid`` and the default ``version`` on short headers.
    ``version`` may be any non-zero 32-bit value: the layout written is version 1's.
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
        # RFC 9000 §17.1: the truncated packet number must span more than twice the distance to
        # the largest acknowledged packet number (-1 when none is), and it has at most 4 bytes
        if packet_number - (-1 if largest_acked is None else largest_acked) >= _PN_DISTANCE_LIMIT:
            raise ValueError("packet_number is 2**31 or more past largest_acked (or past -1 when it "
                             "is None): more than a 4-byte packet number can encode")
        arg_bytes_like(token, "token")
        if packet_type != 0 and byte_len(token):
            raise ValueError("only Initial packets carry a token")
        for bit, name in ((key_phase, "key_phase"), (spin, "spin")):
            if not isinstance(bit, int):
                raise TypeError(f"{name} must be an int")
            if bit not in (0, 1):
                raise ValueError(f"{name} must be 0 or 1")
        if packet_type == 4:
            # a short header carries neither a source connection ID nor a version
            if byte_len(scid):
                raise ValueError("short headers carry no scid")
            if version != DQUIC_VERSION_1:
                raise ValueError("short headers carry no version (leave it DQUIC_VERSION_1)")
        elif key_phase or spin:
            raise ValueError("key_phase and spin are bits of short headers only")
        self.packet_type = int(packet_type)
        self.packet_number = int(packet_number)
        self.dcid = bytes(dcid)
        self.scid = bytes(scid)
        self.version = int(version)
        self.largest_acked = None if largest_acked is None else int(largest_acked)
        self.token = bytes(token)
        self.key_phase = int(key_phase)
        self.spin = int(spin)

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
        on malformed input.

        ``largest_pn`` is the largest packet number the receiver has processed in the space
        (-1: none). The result's ``largest_acked`` is the reference the packet number was
        recovered against: ``largest_pn`` (None for -1) when the packet is newer, so that
        ``to_bytes()`` writes it again for the same receiver; for an older (reordered) packet,
        the farthest reference that can still encode it (None below 2**31 - 1).
        """
        cdef Buffer buf = Buffer(data)
        cdef PacketHeader hdr
        if buf._size < 1:
            raise ProtocolError("empty header")
        first = buf._base[0]
        pn_len = (first & 0x03) + 1
        version = DQUIC_VERSION_1
        if first & 0x80:
            if buf._size >= 5:
                version = int.from_bytes(bytes(buf._base[1:5]), "big")
            if version != 0 and version != DQUIC_VERSION_1:
                # to_bytes writes the version-1 layout under any version: read it back as such
                data = bytearray(buf._base[:buf._size])
                data[1:5] = _VERSION_1_BYTES
                buf = Buffer(data)
        elif dcid_len is None:
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
        if pn > VARINT_MAX:
            raise ProtocolError("no packet number below 2**62 fits the truncated value")
        if pn > largest_pn:
            if pn - largest_pn >= _PN_DISTANCE_LIMIT:
                raise ProtocolError(f"packet number {pn} is 2**31 or more past largest_pn "
                                    f"{largest_pn}: no sender encodes that in 4 bytes")
            largest_acked = None if largest_pn < 0 else largest_pn
        else:
            largest_acked = pn - _PN_DISTANCE_LIMIT + 1
            if largest_acked < 0:
                largest_acked = None
        if hdr.packet_type == 4:
            return cls(4, pn, dcid=hdr.dcid, largest_acked=largest_acked,
                       key_phase=(first >> 2) & 1, spin=(first >> 5) & 1)
        return cls(hdr.packet_type, pn, dcid=hdr.dcid, scid=hdr.scid, version=version,
                   largest_acked=largest_acked, token=hdr.token)

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

    The frame always carries its offset and length (``set_length``/``append_offset`` change
    them), so ``frame_type`` is 0x0e (STREAM with OFF and LEN) or 0x0f (the same with FIN):
    exactly the type ``to_bytes()`` writes. ``from_bytes(data)`` accepts any STREAM type
    (0x08..0x0f; absent offset = 0, absent length = bytes after the header) and returns the
    same frame in that explicit form: 0x0e or 0x0f by its FIN bit. ``offset + length`` must
    stay <= 2**62-1.
    """
    cdef public object stream_id
    cdef public object frame_type
    cdef public object offset
    cdef public object length

    def __init__(self, stream_id, frame_type, offset=0, length=0):
        arg_u62(stream_id, "stream_id")
        if not isinstance(frame_type, int):
            raise TypeError("frame_type must be an int")
        if frame_type != 0x0E and frame_type != 0x0F:
            raise ValueError("frame_type must be 0x0e (STREAM with offset and length) or 0x0f "
                             "(the same with FIN): the frame always carries both fields")
        arg_u62(offset, "offset")
        arg_u62(length, "length")
        if offset + length > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.stream_id = int(stream_id)
        self.frame_type = int(frame_type)
        self.offset = int(offset)
        self.length = int(length)

    @property
    def fin(self):
        return bool(self.frame_type & 0x01)

    def set_length(self, n):
        """Set the data length (ValueError if offset + n > 2**62-1)."""
        arg_u62(n, "length")
        if self.offset + n > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.length = int(n)

    def append_offset(self, n):
        """Advance the offset by ``n`` (e.g. after the previous chunk was sent)."""
        arg_u62(n, "n")
        if self.offset + n + self.length > VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.offset = self.offset + int(n)

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
        return cls(sid, 0x0E | (ftype & 0x01), off, ln)

    def __eq__(self, other):
        if not isinstance(other, DQUICFrame):
            return NotImplemented
        o = <DQUICFrame>other
        return ((self.stream_id, self.frame_type, self.offset, self.length)
                == (o.stream_id, o.frame_type, o.offset, o.length))

    __hash__ = None

    def __repr__(self):
        return (f"DQUICFrame(stream_id={self.stream_id}, frame_type=0x{self.frame_type:02x}, "
                f"offset={self.offset}, length={self.length})")
