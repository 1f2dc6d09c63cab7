# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""dquic wire format v1: frames (RFC 9000 §19, RFC 9221; PROTOCOL.md §7).

Frame objects for every frame type, the decoder of a (decrypted) packet payload into frames and
the encoders, plus the C-level fast paths the connection uses for the frequent frames (STREAM
headers, ACK ranges) without building frame objects. The bytes are read and written through
``dquic._codec.Buffer``, whose ``c_need``/``c_room`` checks make every index below safe, which
is why bounds checking is turned off above.

Decoders raise only ``dquic.errors.ProtocolError`` on malformed peer input (with the frame
type when known), never read beyond the bytes they were given and never allocate more than the
input justifies (an ACK range count is checked against the remaining bytes before any list is
built). Encoders raise ``ValueError``/``TypeError`` on bad arguments: local bugs, not peer input.
"""
from cpython.buffer cimport PyBuffer_Release
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLong, PyLong_FromUnsignedLongLong
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memset

from dquic._codec cimport Buffer, arg_bytes_like, arg_u62, arg_u64, byte_len, open_input
from dquic._wire cimport varint_len, varint_read, varint_write

from dquic.errors import ErrorCode, ProtocolError

# ---------------------------------------------------------------------------------------
# Frame types
# ---------------------------------------------------------------------------------------
DEFAULT_MAX_ACK_RANGES = 256
MAX_STREAMS_LIMIT = 1 << 60

FRAME_PADDING = 0x00
FRAME_PING = 0x01
FRAME_ACK = 0x02
FRAME_ACK_ECN = 0x03
FRAME_RESET_STREAM = 0x04
FRAME_STOP_SENDING = 0x05
FRAME_CRYPTO = 0x06
FRAME_NEW_TOKEN = 0x07
FRAME_STREAM = 0x08
FRAME_STREAM_BASE = 0x08
FRAME_STREAM_MAX = 0x0F
STREAM_FLAG_OFF = 0x04
STREAM_FLAG_LEN = 0x02
STREAM_FLAG_FIN = 0x01
FRAME_MAX_DATA = 0x10
FRAME_MAX_STREAM_DATA = 0x11
FRAME_MAX_STREAMS = 0x12
FRAME_DATA_BLOCKED = 0x14
FRAME_STREAM_DATA_BLOCKED = 0x15
FRAME_STREAMS_BLOCKED = 0x16
FRAME_NEW_CONNECTION_ID = 0x18
FRAME_RETIRE_CONNECTION_ID = 0x19
FRAME_PATH_CHALLENGE = 0x1A
FRAME_PATH_RESPONSE = 0x1B
FRAME_CONNECTION_CLOSE = 0x1C
FRAME_CONNECTION_CLOSE_APP = 0x1D
FRAME_HANDSHAKE_DONE = 0x1E
FRAME_DATAGRAM = 0x30
FRAME_DATAGRAM_LEN = 0x31

FRAME_NAMES = {
    0x00: "PADDING", 0x01: "PING", 0x02: "ACK", 0x03: "ACK_ECN", 0x04: "RESET_STREAM",
    0x05: "STOP_SENDING", 0x06: "CRYPTO", 0x07: "NEW_TOKEN", 0x08: "STREAM", 0x09: "STREAM",
    0x0A: "STREAM", 0x0B: "STREAM", 0x0C: "STREAM", 0x0D: "STREAM", 0x0E: "STREAM",
    0x0F: "STREAM", 0x10: "MAX_DATA", 0x11: "MAX_STREAM_DATA", 0x12: "MAX_STREAMS",
    0x14: "DATA_BLOCKED", 0x15: "STREAM_DATA_BLOCKED", 0x16: "STREAMS_BLOCKED",
    0x18: "NEW_CONNECTION_ID", 0x19: "RETIRE_CONNECTION_ID", 0x1A: "PATH_CHALLENGE",
    0x1B: "PATH_RESPONSE", 0x1C: "CONNECTION_CLOSE", 0x1D: "CONNECTION_CLOSE_APP",
    0x1E: "HANDSHAKE_DONE", 0x30: "DATAGRAM", 0x31: "DATAGRAM",
}

# Frames a long-header (Initial/Handshake) packet may carry (RFC 9000 §12.4, Table 3).
LONG_HEADER_FRAME_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x06, 0x1C})

cdef uint64_t C_VARINT_MAX = 0x3FFFFFFFFFFFFFFFULL
cdef object _FRAME_ENCODING_ERROR = ErrorCode.FRAME_ENCODING_ERROR
cdef object _PROTOCOL_VIOLATION = ErrorCode.PROTOCOL_VIOLATION


# ---------------------------------------------------------------------------------------
# Frames (RFC 9000 §19, RFC 9221)
# ---------------------------------------------------------------------------------------
cdef class Frame:
    """Base of all frame classes. ``frame_type`` is the wire type code (except for
    ConnectionCloseFrame, see there); ``wire_type`` is the wire type code for every frame."""

    _field_names = ()  # the attributes that make two frames of one type equal, in repr order

    def _fields(self):
        return tuple([getattr(self, name) for name in self._field_names])

    @property
    def wire_type(self):
        return self.frame_type

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == (<Frame>other)._fields()

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        return f"{type(self).__name__}{self._fields()!r}"


cdef class PaddingFrame(Frame):
    """``length`` PADDING bytes (0x00); consecutive padding decodes as one frame."""
    cdef public Py_ssize_t length
    frame_type = 0x00
    _field_names = ("length",)

    def __init__(self, length=1):
        if not isinstance(length, int):
            raise TypeError("length must be an int")
        if length < 1:
            raise ValueError("length must be >= 1")
        self.length = length


cdef class PingFrame(Frame):
    """PING (0x01): elicits an acknowledgement."""
    frame_type = 0x01


cdef class HandshakeDoneFrame(Frame):
    """HANDSHAKE_DONE (0x1e): server confirms the handshake."""
    frame_type = 0x1E


cdef list _check_ranges(object ranges, bint copy=True):
    """Validate ascending, non-overlapping, non-adjacent half-open ranges; return them as a
    list (the caller's list itself when ``copy`` is False and it is a list)."""
    cdef list rs
    cdef tuple t
    cdef Py_ssize_t i, n
    cdef int64_t start, stop = 0, prev_stop = -1
    cdef int overflow = 0
    if not copy and type(ranges) is list:
        rs = <list>ranges
    else:
        rs = list(ranges)
    n = len(rs)
    if n == 0:
        raise ValueError("an ACK frame needs at least one range")
    for i in range(n):
        r = rs[i]
        if not isinstance(r, tuple) or len(<tuple>r) != 2:
            raise TypeError("ranges must be (start, stop) tuples")
        t = <tuple>r
        if not (isinstance(t[0], int) and isinstance(t[1], int)):
            raise TypeError("range bounds must be ints")
        start = PyLong_AsLongLongAndOverflow(t[0], &overflow)
        if overflow == 0:
            stop = PyLong_AsLongLongAndOverflow(t[1], &overflow)
        if overflow > 0:
            raise ValueError("range beyond 2**62-1")
        if overflow < 0 or start < 0 or stop <= start:
            raise ValueError(f"empty, inverted or negative range {r!r}")
        if stop > ((<int64_t>1) << 62):
            raise ValueError("range beyond 2**62-1")
        if start <= prev_stop:
            raise ValueError("ranges must be ascending with a gap between them")
        prev_stop = stop
    return rs


cdef class AckFrame(Frame):
    """ACK (0x02) / ACK with ECN counts (0x03).

    ``ranges``: ascending, non-overlapping half-open ``(start, stop)`` packet-number ranges;
    ``ack_delay``: raw ACK Delay field (the connection scales it by the exponent);
    ``ecn``: ``(ect0, ect1, ce)`` or None.
    """
    cdef public object ranges
    cdef public uint64_t ack_delay
    cdef public object ecn

    def __init__(self, ranges, ack_delay, ecn=None):
        self.ranges = _check_ranges(ranges)
        self.ack_delay = arg_u62(ack_delay, "ack_delay")
        if ecn is not None:
            if not isinstance(ecn, tuple) or len(ecn) != 3:
                raise TypeError("ecn must be a 3-tuple (ect0, ect1, ce) or None")
            for v in ecn:
                arg_u62(v, "ecn count")
        self.ecn = ecn

    @property
    def frame_type(self):
        return 0x02 if self.ecn is None else 0x03

    def _fields(self):
        return (list(self.ranges), self.ack_delay, self.ecn)


cdef class ResetStreamFrame(Frame):
    """RESET_STREAM (0x04): abandon sending on ``stream_id`` at ``final_size``."""
    cdef public uint64_t stream_id
    cdef public uint64_t error_code
    cdef public uint64_t final_size
    frame_type = 0x04
    _field_names = ("stream_id", "error_code", "final_size")

    def __init__(self, stream_id, error_code, final_size):
        self.stream_id = arg_u62(stream_id, "stream_id")
        self.error_code = arg_u62(error_code, "error_code")
        self.final_size = arg_u62(final_size, "final_size")


cdef class StopSendingFrame(Frame):
    """STOP_SENDING (0x05): ask the peer to stop sending on ``stream_id``."""
    cdef public uint64_t stream_id
    cdef public uint64_t error_code
    frame_type = 0x05
    _field_names = ("stream_id", "error_code")

    def __init__(self, stream_id, error_code):
        self.stream_id = arg_u62(stream_id, "stream_id")
        self.error_code = arg_u62(error_code, "error_code")


cdef class CryptoFrame(Frame):
    """CRYPTO (0x06): handshake bytes at ``offset`` (``data`` is a memoryview when decoded)."""
    cdef public uint64_t offset
    cdef public object data
    frame_type = 0x06

    def __init__(self, offset, data):
        self.offset = arg_u62(offset, "offset")
        self.data = arg_bytes_like(data, "data")
        if self.offset + <uint64_t>byte_len(data) > C_VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")

    def _fields(self):
        return (self.offset, bytes(self.data))


cdef class NewTokenFrame(Frame):
    """NEW_TOKEN (0x07): an address-validation token for future connections (non-empty)."""
    cdef public object token
    frame_type = 0x07

    def __init__(self, token):
        self.token = arg_bytes_like(token, "token")
        if byte_len(token) == 0:
            raise ValueError("NEW_TOKEN token must not be empty")

    def _fields(self):
        return (bytes(self.token),)


cdef class StreamFrame(Frame):
    """STREAM (0x08..0x0f): ``data`` at ``offset`` of ``stream_id``; ``fin`` ends the stream.

    ``has_length`` selects the LEN bit when encoding (True by default; a frame without it
    extends to the end of the packet, so it must be the packet's last frame).
    """
    cdef public uint64_t stream_id
    cdef public uint64_t offset
    cdef public object data
    cdef public bint fin
    cdef public bint has_length

    def __init__(self, stream_id, offset, data, fin=False, has_length=True):
        self.stream_id = arg_u62(stream_id, "stream_id")
        self.offset = arg_u62(offset, "offset")
        self.data = arg_bytes_like(data, "data")
        if self.offset + <uint64_t>byte_len(data) > C_VARINT_MAX:
            raise ValueError("offset + length exceeds 2**62-1")
        self.fin = bool(fin)
        self.has_length = bool(has_length)

    @property
    def frame_type(self):
        return (0x08 | (0x04 if self.offset else 0) | (0x02 if self.has_length else 0)
                | (0x01 if self.fin else 0))

    def _fields(self):
        return (self.stream_id, self.offset, bytes(self.data), self.fin)


cdef class MaxDataFrame(Frame):
    """MAX_DATA (0x10): connection-level flow-control limit."""
    cdef public uint64_t maximum
    frame_type = 0x10
    _field_names = ("maximum",)

    def __init__(self, maximum):
        self.maximum = arg_u62(maximum, "maximum")


cdef class MaxStreamDataFrame(Frame):
    """MAX_STREAM_DATA (0x11): flow-control limit of one stream."""
    cdef public uint64_t stream_id
    cdef public uint64_t maximum
    frame_type = 0x11
    _field_names = ("stream_id", "maximum")

    def __init__(self, stream_id, maximum):
        self.stream_id = arg_u62(stream_id, "stream_id")
        self.maximum = arg_u62(maximum, "maximum")


cdef class MaxStreamsFrame(Frame):
    """MAX_STREAMS (0x12): cumulative number of streams the peer may open (<= 2**60)."""
    cdef public uint64_t maximum
    frame_type = 0x12
    _field_names = ("maximum",)

    def __init__(self, maximum):
        self.maximum = arg_u62(maximum, "maximum")
        if self.maximum > (<uint64_t>1 << 60):
            raise ValueError("MAX_STREAMS maximum exceeds 2**60")


cdef class DataBlockedFrame(Frame):
    """DATA_BLOCKED (0x14): sender is blocked by the connection limit ``limit``."""
    cdef public uint64_t limit
    frame_type = 0x14
    _field_names = ("limit",)

    def __init__(self, limit):
        self.limit = arg_u62(limit, "limit")


cdef class StreamDataBlockedFrame(Frame):
    """STREAM_DATA_BLOCKED (0x15): sender is blocked by a stream's limit."""
    cdef public uint64_t stream_id
    cdef public uint64_t limit
    frame_type = 0x15
    _field_names = ("stream_id", "limit")

    def __init__(self, stream_id, limit):
        self.stream_id = arg_u62(stream_id, "stream_id")
        self.limit = arg_u62(limit, "limit")


cdef class StreamsBlockedFrame(Frame):
    """STREAMS_BLOCKED (0x16): sender wants more streams than ``limit`` (<= 2**60)."""
    cdef public uint64_t limit
    frame_type = 0x16
    _field_names = ("limit",)

    def __init__(self, limit):
        self.limit = arg_u62(limit, "limit")
        if self.limit > (<uint64_t>1 << 60):
            raise ValueError("STREAMS_BLOCKED limit exceeds 2**60")


cdef class NewConnectionIdFrame(Frame):
    """NEW_CONNECTION_ID (0x18): a further CID (1..20 bytes) with its stateless reset token."""
    cdef public uint64_t sequence
    cdef public uint64_t retire_prior_to
    cdef public object connection_id
    cdef public object stateless_reset_token
    frame_type = 0x18

    def __init__(self, sequence, retire_prior_to, connection_id, stateless_reset_token):
        self.sequence = arg_u62(sequence, "sequence")
        self.retire_prior_to = arg_u62(retire_prior_to, "retire_prior_to")
        if self.retire_prior_to > self.sequence:
            raise ValueError("retire_prior_to must be <= sequence")
        self.connection_id = arg_bytes_like(connection_id, "connection_id")
        if not 1 <= byte_len(connection_id) <= 20:
            raise ValueError("connection_id must be 1..20 bytes")
        self.stateless_reset_token = arg_bytes_like(stateless_reset_token, "stateless_reset_token")
        if byte_len(stateless_reset_token) != 16:
            raise ValueError("stateless_reset_token must be 16 bytes")

    def _fields(self):
        return (self.sequence, self.retire_prior_to, bytes(self.connection_id),
                bytes(self.stateless_reset_token))


cdef class RetireConnectionIdFrame(Frame):
    """RETIRE_CONNECTION_ID (0x19): stop using the CID with ``sequence``."""
    cdef public uint64_t sequence
    frame_type = 0x19
    _field_names = ("sequence",)

    def __init__(self, sequence):
        self.sequence = arg_u62(sequence, "sequence")


cdef class PathChallengeFrame(Frame):
    """PATH_CHALLENGE (0x1a): 8 unpredictable bytes to be echoed."""
    cdef public object data
    frame_type = 0x1A

    def __init__(self, data):
        self.data = arg_bytes_like(data, "data")
        if byte_len(data) != 8:
            raise ValueError("PATH_CHALLENGE data must be 8 bytes")

    def _fields(self):
        return (bytes(self.data),)


cdef class PathResponseFrame(Frame):
    """PATH_RESPONSE (0x1b): echo of a PATH_CHALLENGE's 8 bytes."""
    cdef public object data
    frame_type = 0x1B

    def __init__(self, data):
        self.data = arg_bytes_like(data, "data")
        if byte_len(data) != 8:
            raise ValueError("PATH_RESPONSE data must be 8 bytes")

    def _fields(self):
        return (bytes(self.data),)


cdef class ConnectionCloseFrame(Frame):
    """CONNECTION_CLOSE: transport (0x1c; ``frame_type`` = type of the offending frame, 0 if
    unknown) or application (0x1d, ``application=True``; ``frame_type`` is None).

    NOTE: here ``frame_type`` is the frame-type *field* of the close frame; the wire type
    code is ``wire_type`` (0x1c or 0x1d).
    """
    cdef public uint64_t error_code
    cdef public object frame_type
    cdef public object reason
    cdef public bint application

    def __init__(self, error_code, frame_type=None, reason=b"", application=False):
        self.error_code = arg_u62(error_code, "error_code")
        self.application = bool(application)
        if self.application:
            if frame_type is not None:
                raise ValueError("an application CONNECTION_CLOSE has no frame_type")
        else:
            if frame_type is None:
                frame_type = 0
            arg_u62(frame_type, "frame_type")
        self.frame_type = frame_type
        self.reason = arg_bytes_like(reason, "reason")

    @property
    def wire_type(self):
        return 0x1D if self.application else 0x1C

    def _fields(self):
        return (self.error_code, self.frame_type, bytes(self.reason), self.application)


cdef class DatagramFrame(Frame):
    """DATAGRAM (0x31 with length, 0x30 to the end of the packet; RFC 9221)."""
    cdef public object data
    cdef public bint has_length

    def __init__(self, data, has_length=True):
        self.data = arg_bytes_like(data, "data")
        self.has_length = bool(has_length)

    @property
    def frame_type(self):
        return 0x31 if self.has_length else 0x30

    def _fields(self):
        return (bytes(self.data),)


# ---------------------------------------------------------------------------------------
# Frame decoding
# ---------------------------------------------------------------------------------------
cdef int pull_stream_frame_header(Buffer buf, uint64_t frame_type, uint64_t* stream_id,
                                  uint64_t* offset, uint64_t* length, bint* fin) except -1:
    return _pull_stream_hdr(buf, frame_type, stream_id, offset, length, fin, True)


cdef inline Py_ssize_t _parse_stream_hdr(const unsigned char* p, Py_ssize_t avail, uint64_t frame_type,
                                         uint64_t* stream_id, uint64_t* offset, uint64_t* length,
                                         bint data_follows) noexcept nogil:
    """Parse the fields after a STREAM type byte. Returns the bytes consumed (>= 1) or a
    negative fault code (see stream_frame_header_error)."""
    cdef Py_ssize_t n, pos = 0
    n = varint_read(p, avail, stream_id)
    if n == 0:
        return -1
    pos = n
    if frame_type & 0x04:
        n = varint_read(p + pos, avail - pos, offset)
        if n == 0:
            return -2
        pos += n
    else:
        offset[0] = 0
    if frame_type & 0x02:
        n = varint_read(p + pos, avail - pos, length)
        if n == 0:
            return -3
        pos += n
        if data_follows and length[0] > <uint64_t>(avail - pos):
            return -4
    else:
        length[0] = <uint64_t>(avail - pos)
    if offset[0] + length[0] > ((<uint64_t>1) << 62) - 1:
        return -5
    return pos


cdef Py_ssize_t parse_stream_frame_fields(const unsigned char* p, Py_ssize_t avail,
                                          uint64_t frame_type, uint64_t* stream_id, uint64_t* offset,
                                          uint64_t* length, bint data_follows) noexcept nogil:
    return _parse_stream_hdr(p, avail, frame_type, stream_id, offset, length, data_follows)


cdef int stream_frame_header_error(Py_ssize_t code, uint64_t frame_type, uint64_t length,
                                   Py_ssize_t remaining) except -1:
    if code == -1:
        msg = "STREAM frame truncated in stream id"
    elif code == -2:
        msg = "STREAM frame truncated in offset"
    elif code == -3:
        msg = "STREAM frame truncated in length"
    elif code == -4:
        msg = f"STREAM frame length {length} exceeds the remaining bytes"
    else:
        msg = "STREAM frame offset + length exceeds 2**62-1"
    raise ProtocolError(msg, _FRAME_ENCODING_ERROR, frame_type)


cdef inline int _pull_stream_hdr(Buffer buf, uint64_t frame_type, uint64_t* stream_id,
                                 uint64_t* offset, uint64_t* length, bint* fin,
                                 bint data_follows) except -1:
    cdef Py_ssize_t n = _parse_stream_hdr(buf._base + buf._pos, buf._size - buf._pos, frame_type,
                                          stream_id, offset, length, data_follows)
    if n < 0:
        return stream_frame_header_error(n, frame_type, length[0], buf._size - buf._pos)
    fin[0] = frame_type & 0x01
    buf._pos += n
    return 0


cdef inline uint64_t _pv(Buffer buf) except? 0xFFFFFFFFFFFFFFFFULL:
    cdef uint64_t v
    buf.c_pull_varint(&v)
    return v


cdef inline Py_ssize_t _plen(Buffer buf, str what) except -1:
    """Read a length varint and check it against the remaining bytes."""
    cdef uint64_t v
    buf.c_pull_varint(&v)
    if v > <uint64_t>(buf._size - buf._pos):
        raise ProtocolError(f"{what} length {v} exceeds {buf._size - buf._pos} remaining bytes")
    return <Py_ssize_t>v


cdef Py_ssize_t read_varint_at(const unsigned char* p, Py_ssize_t size, Py_ssize_t pos,
                               uint64_t* out) except -1:
    return _rv(p, size, pos, out)


cdef inline Py_ssize_t _rv(const unsigned char* p, Py_ssize_t size, Py_ssize_t pos,
                           uint64_t* out) except -1:
    """Read one varint at p[pos] (size = bytes in p); return the position after it or raise
    ProtocolError when it is truncated. Inline for the per-packet parsers of this module; other
    modules call it through read_varint_at."""
    cdef Py_ssize_t n = varint_read(p + pos, size - pos, out)
    if n == 0:
        raise ProtocolError(f"truncated varint at offset {pos}")
    return pos + n


cdef inline object _pyint(uint64_t v):
    # CPython 3.11's PyLong_FromLong has an allocation fast path for values below 2**30 that
    # PyLong_FromUnsignedLongLong lacks; packet numbers are mostly in that range
    if v < 0x40000000:
        return PyLong_FromLong(<long>v)
    return PyLong_FromUnsignedLongLong(v)


cdef inline tuple _pair(uint64_t a, uint64_t b):
    cdef tuple t = PyTuple_New(2)
    x = _pyint(a)
    Py_INCREF(x)
    PyTuple_SET_ITEM(t, 0, x)
    y = _pyint(b)
    Py_INCREF(y)
    PyTuple_SET_ITEM(t, 1, y)
    return t


cdef inline int _put_range(object ranges, Py_ssize_t slot, uint64_t start, uint64_t stop,
                           bint flat) except -1:
    """Store range number ``slot``: as a tuple in a list made by PyList_New, or (``flat``) as
    two consecutive bounds in a tuple made by PyTuple_New."""
    if flat:
        x = _pyint(start)
        Py_INCREF(x)
        PyTuple_SET_ITEM(ranges, 2 * slot, x)
        y = _pyint(stop)
        Py_INCREF(y)
        PyTuple_SET_ITEM(ranges, 2 * slot + 1, y)
    else:
        t = _pair(start, stop)
        Py_INCREF(t)
        PyList_SET_ITEM(ranges, slot, t)
    return 0


cdef object parse_ack_ranges(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos,
                              Py_ssize_t max_ack_ranges, uint64_t* delay_out, bint flat):
    """Parse an ACK frame from the field after its type byte through the last ACK Range
    (RFC 9000 §19.3): returns the ranges as an ascending list of half-open ``(start, stop)``
    tuples (``flat``: the flat tuple ``(start0, stop0, start1, stop1, ...)``), stores the raw
    ACK Delay in ``delay_out`` and advances ``pos[0]``. Raises ProtocolError (message without
    a frame prefix) on malformed input; the ECN counts of an ACK_ECN frame follow at
    ``pos[0]`` (``parse_ecn``)."""
    cdef uint64_t largest, delay, count, first, gap, rlen, smallest, i
    cdef Py_ssize_t q = pos[0]
    q = _rv(p, size, q, &largest)
    q = _rv(p, size, q, &delay)
    q = _rv(p, size, q, &count)
    q = _rv(p, size, q, &first)
    if count >= <uint64_t>max_ack_ranges:
        raise ProtocolError(f"ACK range count {count} exceeds the limit of {max_ack_ranges} ranges")
    # each further range needs at least two bytes: check before allocating anything
    if count > <uint64_t>((size - q) // 2):
        raise ProtocolError(f"ACK range count {count} exceeds what {size - q} remaining bytes can hold")
    if first > largest:
        raise ProtocolError("ACK first range underflows below packet number 0")
    smallest = largest - first
    # ranges arrive from the highest down: fill the list from its end
    cdef object ranges
    if flat:
        ranges = PyTuple_New((<Py_ssize_t>count + 1) * 2)
    else:
        ranges = PyList_New(<Py_ssize_t>count + 1)
    cdef Py_ssize_t slot = <Py_ssize_t>count
    _put_range(ranges, slot, smallest, largest + 1, flat)
    for i in range(count):
        q = _rv(p, size, q, &gap)
        q = _rv(p, size, q, &rlen)
        # RFC 9000 §19.3.1: largest = previous smallest - gap - 2
        if smallest < gap + 2 or gap > C_VARINT_MAX:
            raise ProtocolError("ACK gap underflows below packet number 0")
        largest = smallest - gap - 2
        if rlen > largest:
            raise ProtocolError("ACK range length underflows below packet number 0")
        smallest = largest - rlen
        slot -= 1
        _put_range(ranges, slot, smallest, largest + 1, flat)
    delay_out[0] = delay
    pos[0] = q
    return ranges


cdef tuple parse_ecn(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos):
    """Parse the three ECN counts of an ACK_ECN frame (RFC 9000 §19.3.2)."""
    cdef uint64_t a, b, c
    cdef Py_ssize_t q = pos[0]
    q = _rv(p, size, q, &a)
    q = _rv(p, size, q, &b)
    q = _rv(p, size, q, &c)
    pos[0] = q
    return (a, b, c)


cdef object _pull_ack(Buffer buf, uint64_t ftype, Py_ssize_t max_ack_ranges):
    cdef AckFrame fr = AckFrame.__new__(AckFrame)
    cdef Py_ssize_t pos = buf._pos
    cdef uint64_t delay
    fr.ranges = parse_ack_ranges(buf._base, buf._size, &pos, max_ack_ranges, &delay, False)
    fr.ack_delay = delay
    fr.ecn = parse_ecn(buf._base, buf._size, &pos) if ftype == 0x03 else None
    buf._pos = pos
    return fr


cdef object _pull_frame(Buffer buf, Py_ssize_t max_ack_ranges):
    cdef uint64_t ftype, a, b, c, length
    cdef bint fin
    cdef Py_ssize_t start = buf._pos, n, tn
    cdef const unsigned char* p
    cdef StreamFrame sf
    cdef CryptoFrame cf
    cdef DatagramFrame df
    cdef PaddingFrame pf
    tn = varint_read(buf._base + buf._pos, buf._size - buf._pos, &ftype)
    if tn == 0:
        raise ProtocolError(f"truncated frame type at offset {buf._pos}")
    if tn != varint_len(ftype):
        raise ProtocolError(f"frame type 0x{ftype:x} is not minimally encoded",
                            _PROTOCOL_VIOLATION, ftype)
    buf._pos += tn
    # STREAM first: the hot path
    if 0x08 <= ftype <= 0x0F:
        pull_stream_frame_header(buf, ftype, &a, &b, &length, &fin)
        sf = StreamFrame.__new__(StreamFrame)
        sf.stream_id = a
        sf.offset = b
        sf.data = buf.c_pull_view(<Py_ssize_t>length)
        sf.fin = fin
        sf.has_length = (ftype & 0x02) != 0
        return sf
    try:
        if ftype == 0x00:
            p = buf._base
            n = buf._pos
            while n < buf._size and p[n] == 0:
                n += 1
            pf = PaddingFrame.__new__(PaddingFrame)
            pf.length = n - start
            buf._pos = n
            return pf
        if ftype == 0x01:
            return PingFrame.__new__(PingFrame)
        if ftype == 0x02 or ftype == 0x03:
            return _pull_ack(buf, ftype, max_ack_ranges)
        if ftype == 0x06:
            a = _pv(buf)
            n = _plen(buf, "data")
            cf = CryptoFrame.__new__(CryptoFrame)
            cf.offset = a
            if a + <uint64_t>n > C_VARINT_MAX:
                raise ProtocolError("offset + length exceeds 2**62-1")
            cf.data = buf.c_pull_view(n)
            return cf
        if ftype == 0x31 or ftype == 0x30:
            if ftype == 0x31:
                n = _plen(buf, "data")
            else:
                n = buf._size - buf._pos
            df = DatagramFrame.__new__(DatagramFrame)
            df.data = buf.c_pull_view(n)
            df.has_length = ftype == 0x31
            return df
        if ftype == 0x04:
            fr = ResetStreamFrame.__new__(ResetStreamFrame)
            (<ResetStreamFrame>fr).stream_id = _pv(buf)
            (<ResetStreamFrame>fr).error_code = _pv(buf)
            (<ResetStreamFrame>fr).final_size = _pv(buf)
            return fr
        if ftype == 0x05:
            fr = StopSendingFrame.__new__(StopSendingFrame)
            (<StopSendingFrame>fr).stream_id = _pv(buf)
            (<StopSendingFrame>fr).error_code = _pv(buf)
            return fr
        if ftype == 0x07:
            n = _plen(buf, "token")
            if n == 0:
                raise ProtocolError("empty token")
            fr = NewTokenFrame.__new__(NewTokenFrame)
            (<NewTokenFrame>fr).token = buf.c_pull_bytes(n)
            return fr
        if ftype == 0x10:
            fr = MaxDataFrame.__new__(MaxDataFrame)
            (<MaxDataFrame>fr).maximum = _pv(buf)
            return fr
        if ftype == 0x11:
            fr = MaxStreamDataFrame.__new__(MaxStreamDataFrame)
            (<MaxStreamDataFrame>fr).stream_id = _pv(buf)
            (<MaxStreamDataFrame>fr).maximum = _pv(buf)
            return fr
        if ftype == 0x12:
            a = _pv(buf)
            if a > (<uint64_t>1 << 60):
                raise ProtocolError("maximum streams exceeds 2**60")
            fr = MaxStreamsFrame.__new__(MaxStreamsFrame)
            (<MaxStreamsFrame>fr).maximum = a
            return fr
        if ftype == 0x14:
            fr = DataBlockedFrame.__new__(DataBlockedFrame)
            (<DataBlockedFrame>fr).limit = _pv(buf)
            return fr
        if ftype == 0x15:
            fr = StreamDataBlockedFrame.__new__(StreamDataBlockedFrame)
            (<StreamDataBlockedFrame>fr).stream_id = _pv(buf)
            (<StreamDataBlockedFrame>fr).limit = _pv(buf)
            return fr
        if ftype == 0x16:
            a = _pv(buf)
            if a > (<uint64_t>1 << 60):
                raise ProtocolError("streams limit exceeds 2**60")
            fr = StreamsBlockedFrame.__new__(StreamsBlockedFrame)
            (<StreamsBlockedFrame>fr).limit = a
            return fr
        if ftype == 0x18:
            a = _pv(buf)
            b = _pv(buf)
            if b > a:
                raise ProtocolError("retire_prior_to exceeds sequence")
            buf.c_pull_uint(1, &c)
            if c < 1 or c > 20:
                raise ProtocolError(f"connection id length {c} outside 1..20")
            fr = NewConnectionIdFrame.__new__(NewConnectionIdFrame)
            (<NewConnectionIdFrame>fr).sequence = a
            (<NewConnectionIdFrame>fr).retire_prior_to = b
            (<NewConnectionIdFrame>fr).connection_id = buf.c_pull_bytes(<Py_ssize_t>c)
            (<NewConnectionIdFrame>fr).stateless_reset_token = buf.c_pull_bytes(16)
            return fr
        if ftype == 0x19:
            fr = RetireConnectionIdFrame.__new__(RetireConnectionIdFrame)
            (<RetireConnectionIdFrame>fr).sequence = _pv(buf)
            return fr
        if ftype == 0x1A:
            fr = PathChallengeFrame.__new__(PathChallengeFrame)
            (<PathChallengeFrame>fr).data = buf.c_pull_bytes(8)
            return fr
        if ftype == 0x1B:
            fr = PathResponseFrame.__new__(PathResponseFrame)
            (<PathResponseFrame>fr).data = buf.c_pull_bytes(8)
            return fr
        if ftype == 0x1C or ftype == 0x1D:
            fr = ConnectionCloseFrame.__new__(ConnectionCloseFrame)
            (<ConnectionCloseFrame>fr).error_code = _pv(buf)
            if ftype == 0x1C:
                (<ConnectionCloseFrame>fr).frame_type = _pv(buf)
                (<ConnectionCloseFrame>fr).application = False
            else:
                (<ConnectionCloseFrame>fr).frame_type = None
                (<ConnectionCloseFrame>fr).application = True
            n = _plen(buf, "reason")
            (<ConnectionCloseFrame>fr).reason = buf.c_pull_bytes(n)
            return fr
        if ftype == 0x1E:
            return HandshakeDoneFrame.__new__(HandshakeDoneFrame)
    except ProtocolError as exc:
        name = FRAME_NAMES.get(ftype, "?")
        raise ProtocolError(f"{name} frame: {exc.args[0]}", exc.error_code, ftype) from None
    raise ProtocolError(f"unknown frame type 0x{ftype:x}", _FRAME_ENCODING_ERROR, ftype)


def pull_frame(Buffer buf, Py_ssize_t max_ack_ranges=256):
    """Decode one frame at ``buf.tell()`` and advance past it.

    Consecutive PADDING bytes become one ``PaddingFrame``. STREAM/CRYPTO/DATAGRAM data are
    zero-copy memoryview slices of the buffer's data. Raises ProtocolError (with
    ``frame_type`` set when known) on malformed input.
    """
    return _pull_frame(buf, max_ack_ranges)


def decode_frames(payload, packet_type=None, Py_ssize_t max_ack_ranges=256):
    """Decode a whole (decrypted) packet payload into a list of frames.

    With ``packet_type`` given, also enforce RFC 9000 §12.4: long-header packets may only
    carry PADDING, PING, ACK, CRYPTO and CONNECTION_CLOSE (0x1c) (else
    ProtocolError(PROTOCOL_VIOLATION)), and a payload without frames is a
    PROTOCOL_VIOLATION.
    """
    cdef Buffer buf = Buffer(payload)
    cdef list frames = []
    cdef bint restricted = packet_type is not None and packet_type != 4
    if packet_type is not None and buf._size == 0:
        raise ProtocolError("packet contains no frames", _PROTOCOL_VIOLATION)
    while buf._pos < buf._size:
        fr = _pull_frame(buf, max_ack_ranges)
        if restricted:
            check_frame_allowed((<Frame>fr).wire_type, packet_type)
        frames.append(fr)
    return frames


def check_frame_allowed(frame_type, packet_type):
    """Raise ProtocolError(PROTOCOL_VIOLATION) if a frame of wire type ``frame_type`` may not
    appear in a packet of ``packet_type`` (RFC 9000 §12.4 Table 3)."""
    if packet_type == 4:
        return
    if packet_type in (0, 2):
        if frame_type in LONG_HEADER_FRAME_TYPES:
            return
        raise ProtocolError(
            f"{FRAME_NAMES.get(frame_type, hex(frame_type))} frame not allowed in a long-header packet",
            _PROTOCOL_VIOLATION, frame_type)
    raise ProtocolError(f"packet type {packet_type} carries no frames", _PROTOCOL_VIOLATION, frame_type)


def decode_stream_frame_header(data, Py_ssize_t offset=0):
    """Fast path: decode the STREAM frame whose type byte is at ``data[offset]``.

    Returns ``(stream_id, stream_offset, length, fin, data_start)`` where the frame's data
    is ``data[data_start:data_start + length]``.
    """
    cdef uint64_t sid = 0, off = 0, length = 0
    cdef bint fin = False
    cdef Py_ssize_t start = c_decode_stream_frame(data, offset, &sid, &off, &length, &fin)
    return sid, off, length, fin, start


cdef Py_ssize_t c_decode_stream_frame(object data, Py_ssize_t offset, uint64_t* stream_id,
                                      uint64_t* stream_offset, uint64_t* length, bint* fin) except -1:
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef bint own_view = open_input(data, &view, &p, &size)
    try:
        return _stream_frame_at(p, size, offset, stream_id, stream_offset, length, fin)
    finally:
        if own_view:
            PyBuffer_Release(&view)


cdef inline Py_ssize_t _stream_frame_at(const unsigned char* p, Py_ssize_t size, Py_ssize_t offset,
                                        uint64_t* stream_id, uint64_t* stream_offset,
                                        uint64_t* length, bint* fin) except -1:
    cdef uint64_t ftype
    cdef Py_ssize_t n
    if offset < 0 or offset >= size:
        raise ProtocolError(f"STREAM frame: offset {offset} outside data of {size} bytes")
    ftype = p[offset]
    if ftype < 0x08 or ftype > 0x0F:
        raise ProtocolError(f"not a STREAM frame type: 0x{ftype:02x}", _FRAME_ENCODING_ERROR, ftype)
    n = _parse_stream_hdr(p + offset + 1, size - offset - 1, ftype, stream_id, stream_offset, length, True)
    if n < 0:
        stream_frame_header_error(n, ftype, length[0], size - offset - 1)
    fin[0] = (ftype & 0x01) != 0
    return offset + 1 + n


# ---------------------------------------------------------------------------------------
# Frame encoding
# ---------------------------------------------------------------------------------------
cdef int c_stream_frame_header_size(uint64_t stream_id, uint64_t offset, uint64_t length) noexcept nogil:
    return (1 + varint_len(stream_id) + (varint_len(offset) if offset else 0)
            + varint_len(length))


cdef int c_push_stream_frame_header(Buffer buf, uint64_t stream_id, uint64_t offset,
                                    uint64_t length, bint fin) except -1:
    cdef int ns = varint_len(stream_id)
    cdef int no = varint_len(offset) if offset else 0
    cdef int nl = varint_len(length)
    cdef unsigned char* p
    if ns == 0 or nl == 0 or (offset and no == 0) or offset + length > C_VARINT_MAX:
        raise ValueError("STREAM frame field exceeds 2**62-1")
    p = buf.c_push_ptr(1 + ns + no + nl)
    p[0] = 0x08 | 0x02 | (0x04 if offset else 0) | (0x01 if fin else 0)
    p += 1
    varint_write(p, stream_id, ns)
    p += ns
    if offset:
        varint_write(p, offset, no)
        p += no
    varint_write(p, length, nl)
    return 0


def stream_frame_header_size(stream_id, offset, length):
    """Encoded size of the header ``push_stream_frame_header`` writes."""
    return c_stream_frame_header_size(arg_u62(stream_id, "stream_id"), arg_u62(offset, "offset"),
                                      arg_u62(length, "length"))


def push_stream_frame_header(Buffer buf, stream_id, offset, length, fin=False):
    """Write a STREAM frame header (LEN bit always, OFF bit iff offset > 0); then push the
    ``length`` data bytes."""
    c_push_stream_frame_header(buf, arg_u64(stream_id, "stream_id"), arg_u64(offset, "offset"),
                               arg_u64(length, "length"), bool(fin))


cdef int _push_ack_ranges(Buffer buf, list ranges, uint64_t ack_delay, object ecn) except -1:
    # ranges are ascending (start, stop); the wire lists them from the highest down
    cdef Py_ssize_t k = len(ranges) - 1
    cdef uint64_t start, stop, prev_start
    start, stop = ranges[k]
    buf.c_push_varint(stop - 1)
    buf.c_push_varint(ack_delay)
    buf.c_push_varint(<uint64_t>k)
    buf.c_push_varint(stop - 1 - start)
    prev_start = start
    while k > 0:
        k -= 1
        start, stop = ranges[k]
        buf.c_push_varint(prev_start - stop - 1)   # gap: (prev smallest) - (this largest) - 2
        buf.c_push_varint(stop - 1 - start)
        prev_start = start
    if ecn is not None:
        buf.c_push_varint(ecn[0])
        buf.c_push_varint(ecn[1])
        buf.c_push_varint(ecn[2])
    return 0


def push_ack_frame(Buffer buf, ranges, ack_delay, ecn=None):
    """Write an ACK (0x02) or, with ``ecn=(ect0, ect1, ce)``, ACK_ECN (0x03) frame.

    ``ranges`` is the ascending list of half-open ``(start, stop)`` packet-number ranges
    (validated: ValueError if empty, overlapping, adjacent or unordered).
    """
    cdef list rs = _check_ranges(ranges, False)
    cdef uint64_t delay = arg_u62(ack_delay, "ack_delay")
    if ecn is not None:
        if not isinstance(ecn, tuple) or len(ecn) != 3:
            raise TypeError("ecn must be a 3-tuple or None")
        for v in ecn:
            arg_u62(v, "ecn count")
    buf.c_push_uint(0x03 if ecn is not None else 0x02, 1)
    _push_ack_ranges(buf, rs, delay, ecn)


cdef int _push_frame(Buffer buf, Frame frame) except -1:
    cdef Py_ssize_t n
    cdef uint64_t ft
    cdef unsigned char* p
    t = type(frame)
    if t is StreamFrame:
        sf = <StreamFrame>frame
        n = byte_len(sf.data)
        if sf.has_length:
            c_push_stream_frame_header(buf, sf.stream_id, sf.offset, <uint64_t>n, sf.fin)
        else:
            if sf.offset + <uint64_t>n > C_VARINT_MAX:
                raise ValueError("STREAM frame offset + length exceeds 2**62-1")
            buf.c_push_uint(0x08 | (0x04 if sf.offset else 0) | (0x01 if sf.fin else 0), 1)
            buf.c_push_varint(sf.stream_id)
            if sf.offset:
                buf.c_push_varint(sf.offset)
        buf.c_push_object(sf.data)
    elif t is PaddingFrame:
        n = (<PaddingFrame>frame).length
        if n < 1:
            raise ValueError("PADDING length must be >= 1")
        p = buf.c_push_ptr(n)
        memset(p, 0, n)
    elif t is AckFrame:
        af = <AckFrame>frame
        push_ack_frame(buf, af.ranges, af.ack_delay, af.ecn)
    elif t is CryptoFrame:
        cf = <CryptoFrame>frame
        n = byte_len(cf.data)
        if cf.offset + <uint64_t>n > C_VARINT_MAX:
            raise ValueError("CRYPTO offset + length exceeds 2**62-1")
        buf.c_push_uint(0x06, 1)
        buf.c_push_varint(cf.offset)
        buf.c_push_varint(n)
        buf.c_push_object(cf.data)
    elif t is DatagramFrame:
        df = <DatagramFrame>frame
        if df.has_length:
            buf.c_push_uint(0x31, 1)
            buf.c_push_varint(byte_len(df.data))
        else:
            buf.c_push_uint(0x30, 1)
        buf.c_push_object(df.data)
    elif t is PingFrame:
        buf.c_push_uint(0x01, 1)
    elif t is HandshakeDoneFrame:
        buf.c_push_uint(0x1E, 1)
    elif t is ResetStreamFrame:
        buf.c_push_uint(0x04, 1)
        buf.c_push_varint((<ResetStreamFrame>frame).stream_id)
        buf.c_push_varint((<ResetStreamFrame>frame).error_code)
        buf.c_push_varint((<ResetStreamFrame>frame).final_size)
    elif t is StopSendingFrame:
        buf.c_push_uint(0x05, 1)
        buf.c_push_varint((<StopSendingFrame>frame).stream_id)
        buf.c_push_varint((<StopSendingFrame>frame).error_code)
    elif t is NewTokenFrame:
        tok = (<NewTokenFrame>frame).token
        n = byte_len(tok)
        if n == 0:
            raise ValueError("NEW_TOKEN token must not be empty")
        buf.c_push_uint(0x07, 1)
        buf.c_push_varint(n)
        buf.c_push_object(tok)
    elif t is MaxDataFrame:
        buf.c_push_uint(0x10, 1)
        buf.c_push_varint((<MaxDataFrame>frame).maximum)
    elif t is MaxStreamDataFrame:
        buf.c_push_uint(0x11, 1)
        buf.c_push_varint((<MaxStreamDataFrame>frame).stream_id)
        buf.c_push_varint((<MaxStreamDataFrame>frame).maximum)
    elif t is MaxStreamsFrame:
        if (<MaxStreamsFrame>frame).maximum > (<uint64_t>1 << 60):
            raise ValueError("MAX_STREAMS maximum exceeds 2**60")
        buf.c_push_uint(0x12, 1)
        buf.c_push_varint((<MaxStreamsFrame>frame).maximum)
    elif t is DataBlockedFrame:
        buf.c_push_uint(0x14, 1)
        buf.c_push_varint((<DataBlockedFrame>frame).limit)
    elif t is StreamDataBlockedFrame:
        buf.c_push_uint(0x15, 1)
        buf.c_push_varint((<StreamDataBlockedFrame>frame).stream_id)
        buf.c_push_varint((<StreamDataBlockedFrame>frame).limit)
    elif t is StreamsBlockedFrame:
        if (<StreamsBlockedFrame>frame).limit > (<uint64_t>1 << 60):
            raise ValueError("STREAMS_BLOCKED limit exceeds 2**60")
        buf.c_push_uint(0x16, 1)
        buf.c_push_varint((<StreamsBlockedFrame>frame).limit)
    elif t is NewConnectionIdFrame:
        nf = <NewConnectionIdFrame>frame
        n = byte_len(nf.connection_id)
        if n < 1 or n > 20:
            raise ValueError("connection_id must be 1..20 bytes")
        if byte_len(nf.stateless_reset_token) != 16:
            raise ValueError("stateless_reset_token must be 16 bytes")
        if nf.retire_prior_to > nf.sequence:
            raise ValueError("retire_prior_to must be <= sequence")
        buf.c_push_uint(0x18, 1)
        buf.c_push_varint(nf.sequence)
        buf.c_push_varint(nf.retire_prior_to)
        buf.c_push_uint(<uint64_t>n, 1)
        buf.c_push_object(nf.connection_id)
        buf.c_push_object(nf.stateless_reset_token)
    elif t is RetireConnectionIdFrame:
        buf.c_push_uint(0x19, 1)
        buf.c_push_varint((<RetireConnectionIdFrame>frame).sequence)
    elif t is PathChallengeFrame or t is PathResponseFrame:
        data = frame.data
        if byte_len(data) != 8:
            raise ValueError("path validation data must be 8 bytes")
        buf.c_push_uint(0x1A if t is PathChallengeFrame else 0x1B, 1)
        buf.c_push_object(data)
    elif t is ConnectionCloseFrame:
        cc = <ConnectionCloseFrame>frame
        buf.c_push_uint(0x1D if cc.application else 0x1C, 1)
        buf.c_push_varint(cc.error_code)
        if not cc.application:
            buf.c_push_varint(arg_u62(cc.frame_type if cc.frame_type is not None else 0, "frame_type"))
        buf.c_push_varint(byte_len(cc.reason))
        buf.c_push_object(cc.reason)
    else:
        raise TypeError(f"cannot encode {t.__name__}")
    return 0


def push_frame(Buffer buf, frame):
    """Encode ``frame`` at the buffer's position (ValueError if it does not fit)."""
    if not isinstance(frame, Frame):
        raise TypeError(f"not a frame: {type(frame).__name__}")
    _push_frame(buf, <Frame>frame)


cdef Py_ssize_t _vs(uint64_t v) except -1:
    cdef int n = varint_len(v)
    if n == 0:
        raise ValueError(f"value {v} exceeds 2**62-1")
    return n


def frame_size(frame):
    """Number of bytes ``push_frame`` writes for ``frame``."""
    cdef Py_ssize_t n
    cdef uint64_t start, stop, prev_start
    t = type(frame)
    if t is StreamFrame:
        sf = <StreamFrame>frame
        n = byte_len(sf.data)
        return (1 + _vs(sf.stream_id) + (_vs(sf.offset) if sf.offset else 0)
                + (_vs(n) if sf.has_length else 0) + n)
    if t is PaddingFrame:
        return (<PaddingFrame>frame).length
    if t is PingFrame or t is HandshakeDoneFrame:
        return 1
    if t is AckFrame:
        af = <AckFrame>frame
        rs = _check_ranges(af.ranges, False)
        k = len(rs) - 1
        start, stop = rs[k]
        n = 1 + _vs(stop - 1) + _vs(af.ack_delay) + _vs(k) + _vs(stop - 1 - start)
        prev_start = start
        while k > 0:
            k -= 1
            start, stop = rs[k]
            n += _vs(prev_start - stop - 1) + _vs(stop - 1 - start)
            prev_start = start
        if af.ecn is not None:
            n += _vs(af.ecn[0]) + _vs(af.ecn[1]) + _vs(af.ecn[2])
        return n
    if t is CryptoFrame:
        n = byte_len((<CryptoFrame>frame).data)
        return 1 + _vs((<CryptoFrame>frame).offset) + _vs(n) + n
    if t is DatagramFrame:
        n = byte_len((<DatagramFrame>frame).data)
        return 1 + (_vs(n) if (<DatagramFrame>frame).has_length else 0) + n
    if t is ResetStreamFrame:
        return (1 + _vs((<ResetStreamFrame>frame).stream_id) + _vs((<ResetStreamFrame>frame).error_code)
                + _vs((<ResetStreamFrame>frame).final_size))
    if t is StopSendingFrame:
        return 1 + _vs((<StopSendingFrame>frame).stream_id) + _vs((<StopSendingFrame>frame).error_code)
    if t is NewTokenFrame:
        n = byte_len((<NewTokenFrame>frame).token)
        return 1 + _vs(n) + n
    if t is MaxDataFrame:
        return 1 + _vs((<MaxDataFrame>frame).maximum)
    if t is MaxStreamDataFrame:
        return 1 + _vs((<MaxStreamDataFrame>frame).stream_id) + _vs((<MaxStreamDataFrame>frame).maximum)
    if t is MaxStreamsFrame:
        return 1 + _vs((<MaxStreamsFrame>frame).maximum)
    if t is DataBlockedFrame:
        return 1 + _vs((<DataBlockedFrame>frame).limit)
    if t is StreamDataBlockedFrame:
        return 1 + _vs((<StreamDataBlockedFrame>frame).stream_id) + _vs((<StreamDataBlockedFrame>frame).limit)
    if t is StreamsBlockedFrame:
        return 1 + _vs((<StreamsBlockedFrame>frame).limit)
    if t is NewConnectionIdFrame:
        nf = <NewConnectionIdFrame>frame
        return (1 + _vs(nf.sequence) + _vs(nf.retire_prior_to) + 1 + byte_len(nf.connection_id) + 16)
    if t is RetireConnectionIdFrame:
        return 1 + _vs((<RetireConnectionIdFrame>frame).sequence)
    if t is PathChallengeFrame or t is PathResponseFrame:
        return 9
    if t is ConnectionCloseFrame:
        cc = <ConnectionCloseFrame>frame
        n = byte_len(cc.reason)
        return (1 + _vs(cc.error_code)
                + (0 if cc.application else _vs(cc.frame_type if cc.frame_type is not None else 0))
                + _vs(n) + n)
    raise TypeError(f"not a frame: {t.__name__}")


def encode_frames(frames, Py_ssize_t capacity=-1):
    """Encode a sequence of frames into bytes (convenience for tests and tools)."""
    frames = list(frames)
    if capacity < 0:
        capacity = sum(frame_size(f) for f in frames)
    cdef Buffer buf = Buffer(capacity=capacity)
    for f in frames:
        push_frame(buf, f)
    return buf.data
