# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""dquic wire format v1: the Buffer, varints, packet numbers and packet headers (frames are
``dquic._frames``).

Every index into the wrapped bytes goes through ``Buffer.c_need``/``Buffer.c_room`` (or is
computed from values they checked), which is why bounds checking is turned off above.

Decoders raise only ``dquic.errors.ProtocolError`` on malformed peer input, never read
beyond the bytes they were given and never allocate more than the input justifies (an ACK
range count is checked against the remaining bytes before any list is built). Encoders raise
``ValueError``/``TypeError`` on bad arguments: those are local bugs, not peer input.

The layouts follow RFC 9000 §16, §17, §19 and Appendix A with the dquic v1 choices documented
in PROTOCOL.md.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBuffer_FillInfo, PyBUF_SIMPLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.bytearray cimport PyByteArray_CheckExact
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.sequence cimport PySequence_GetSlice
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLong, PyLong_FromUnsignedLongLong
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset

from dquic._wire cimport (be_read, be_write, pn_decode, pn_length, pn_truncate, varint_len,
                         varint_read, varint_write)

from dquic.errors import ErrorCode, ProtocolError

# ---------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------
DQUIC_VERSION_1 = 0x44510001
MAX_CID_LEN = 20
VARINT_MAX = 0x3FFFFFFFFFFFFFFF
STATELESS_RESET_TOKEN_LEN = 16
RETRY_INTEGRITY_TAG_LEN = 16

PACKET_INITIAL = 0
PACKET_ZERO_RTT = 1
PACKET_HANDSHAKE = 2
PACKET_RETRY = 3
PACKET_SHORT = 4
PACKET_1RTT = 4
PACKET_VERSION_NEGOTIATION = 5

cdef uint64_t C_VARINT_MAX = 0x3FFFFFFFFFFFFFFFULL
cdef uint32_t C_VERSION_1 = 0x44510001
cdef int C_MAX_CID = 20

cdef object _VERSION_1_OBJ = DQUIC_VERSION_1
cdef object _PROTOCOL_VIOLATION = ErrorCode.PROTOCOL_VIOLATION


# ---------------------------------------------------------------------------------------
# C helpers: varint size (the primitives themselves are dquic._wire's), argument checks
# ---------------------------------------------------------------------------------------
cdef int c_varint_size(uint64_t value) noexcept nogil:
    return varint_len(value)


cdef Py_ssize_t byte_len(object data) except -1:
    """Length in bytes of a bytes-like object (TypeError for anything else)."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        return PyBytes_GET_SIZE(data)
    if isinstance(data, str):
        raise TypeError("expected a bytes-like object, got str")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    n = view.len
    PyBuffer_Release(&view)
    return n


cdef inline uint64_t _pull_uint(Buffer buf, int n) except? 0xFFFFFFFFFFFFFFFFULL:
    """Buffer.pull_uint8/16/32/64: the n-byte big-endian integer at the position."""
    cdef uint64_t v
    buf.c_pull_uint(n, &v)
    return v


cdef inline int _push_uint(Buffer buf, object value, int n) except -1:
    """Buffer.push_uint8/16/32/64: ``value`` as n big-endian bytes (ValueError if it does not fit)."""
    cdef uint64_t v = arg_u64(value, "value")
    if n < 8 and v >> (8 * n):
        raise ValueError(f"value does not fit in {8 * n} bits")
    return buf.c_push_uint(v, n)


cdef uint64_t arg_u62(object value, str name) except? 0xFFFFFFFFFFFFFFFFULL:
    """Validate a Python int in 0 .. 2**62-1 (TypeError/ValueError otherwise)."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > VARINT_MAX:
        raise ValueError(f"{name} must be in 0..2**62-1, got {value}")
    return <uint64_t>value


cdef uint64_t arg_u64(object value, str name) except? 0xFFFFFFFFFFFFFFFFULL:
    """Convert an int argument to uint64 (TypeError for non-ints such as floats,
    ValueError for negatives, OverflowError beyond 64 bits)."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return <uint64_t>value


cdef inline int _arg_int(object value, str name) except? -1:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return <int>value


cdef object arg_bytes_like(object value, str name):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}")



# ---------------------------------------------------------------------------------------
# Buffer
# ---------------------------------------------------------------------------------------
cdef class Buffer:
    """A cursor over bytes: wraps any contiguous buffer for reading, or allocates
    ``capacity`` bytes for writing.

    Read with ``pull_*`` (past-the-end reads raise ``ProtocolError``: the bytes came from the
    network), write with ``push_*`` (writes past the capacity raise ``ValueError``: a local
    bug). A writable wrapped buffer (``bytearray``) may also be written in place, e.g. to
    patch a Length field. ``data`` returns the bytes before the current position.
    """

    def __cinit__(self, data=None, Py_ssize_t capacity=0):
        if data is not None:
            PyObject_GetBuffer(data, &self._view, PyBUF_SIMPLE)
            self._has_view = True
            self._obj = data
            self._writable = not self._view.readonly
            self._base = <unsigned char*>self._view.buf
            self._size = self._view.len
        else:
            if capacity < 0:
                raise ValueError("capacity must be >= 0")
            # zeroed so that data_slice never exposes stale memory
            self._owned = <unsigned char*>PyMem_Calloc(capacity if capacity > 0 else 1, 1)
            if self._owned == NULL:
                raise MemoryError()
            self._base = self._owned
            self._writable = True
            self._size = capacity
        self._pos = 0

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)
            self._has_view = False
        if self._owned != NULL:
            PyMem_Free(self._owned)
            self._owned = NULL
            self._base = NULL
        PyMem_Free(self._gather)
        self._gather = NULL

    def __sizeof__(self):
        # the object plus the storage it allocated (what sys.getsizeof reports)
        cdef Py_ssize_t owned = 0
        if self._owned != NULL:
            owned = self._size if self._base == self._owned else 1
        return type(self).__basicsize__ + owned

    def __getbuffer__(self, Py_buffer* view, int flags):
        # exports the whole storage (read-only), so pull_view works on write buffers too
        if (self._owned != NULL and self._base != self._owned) or (
                self._owned == NULL and self._base != <unsigned char*>self._view.buf):
            raise BufferError("Buffer is retargeted at borrowed memory")
        PyBuffer_FillInfo(view, self, self._base, self._size, 1, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self._exports -= 1

    # -- C level -------------------------------------------------------------------------
    cdef int c_need(self, Py_ssize_t n) except -1:
        if n < 0 or self._size - self._pos < n:
            raise ProtocolError(
                f"truncated: need {n} bytes at offset {self._pos}, {self._size - self._pos} remaining")
        return 0

    cdef int c_room(self, Py_ssize_t n) except -1:
        if not self._writable:
            raise ValueError("buffer is read-only")
        if n < 0 or self._size - self._pos < n:
            raise ValueError(
                f"write of {n} bytes at offset {self._pos} exceeds capacity {self._size}")
        return 0

    cdef const unsigned char* c_pull_ptr(self, Py_ssize_t n) except NULL:
        cdef const unsigned char* p
        if n < 0 or self._size - self._pos < n:
            self.c_need(n)
        p = self._base + self._pos
        self._pos += n
        return p

    cdef unsigned char* c_push_ptr(self, Py_ssize_t n) except NULL:
        cdef unsigned char* p
        if not self._writable or n < 0 or self._size - self._pos < n:
            self.c_room(n)
        p = self._base + self._pos
        self._pos += n
        return p

    cdef int c_pull_uint(self, int nbytes, uint64_t* out) except -1:
        cdef const unsigned char* p = self.c_pull_ptr(nbytes)
        out[0] = be_read(p, nbytes)
        return 0

    cdef int c_push_uint(self, uint64_t value, int nbytes) except -1:
        cdef unsigned char* p = self.c_push_ptr(nbytes)
        be_write(p, value, nbytes)
        return 0

    cdef int c_pull_varint(self, uint64_t* out) except -1:
        cdef Py_ssize_t n = varint_read(self._base + self._pos, self._size - self._pos, out)
        if n == 0:
            raise ProtocolError(f"truncated varint at offset {self._pos}")
        self._pos += n
        return 0

    cdef int c_push_varint(self, uint64_t value) except -1:
        cdef int n = varint_len(value)
        if n == 0:
            raise ValueError(f"varint value {value} exceeds 2**62-1")
        varint_write(self.c_push_ptr(n), value, n)
        return 0

    cdef int c_push_varint_fixed(self, uint64_t value, int nbytes) except -1:
        if nbytes not in (1, 2, 4, 8):
            raise ValueError("varint width must be 1, 2, 4 or 8")
        if varint_len(value) == 0 or varint_len(value) > nbytes:
            raise ValueError(f"varint value {value} does not fit in {nbytes} bytes")
        varint_write(self.c_push_ptr(nbytes), value, nbytes)
        return 0

    cdef int c_push_raw(self, const unsigned char* src, Py_ssize_t n) except -1:
        cdef unsigned char* p = self.c_push_ptr(n)
        if n:
            memcpy(p, src, n)
        return 0

    cdef int enable_gather(self) except -1:
        if self._gather == NULL:
            self._gather = <Gather*>PyMem_Malloc(MAX_GATHER * sizeof(Gather))
            if self._gather == NULL:
                raise MemoryError()
        self._ngather = 0
        return 0

    cdef int c_push_ref(self, const unsigned char* src, Py_ssize_t n) except -1:
        cdef Gather* g
        if self._gather == NULL or self._ngather >= MAX_GATHER or n < GATHER_MIN:
            return self.c_push_raw(src, n)
        g = &self._gather[self._ngather]
        g.pos = self._pos
        g.src = src
        g.n = n
        self.c_push_ptr(n)  # (the room, and the position past it)
        self._ngather += 1
        return 0

    cdef void c_gather(self) noexcept:
        cdef int i
        for i in range(self._ngather):
            memcpy(self._base + self._gather[i].pos, self._gather[i].src, <size_t>self._gather[i].n)
        self._ngather = 0

    cdef int c_push_object(self, object data) except -1:
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            return self.c_push_raw(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if isinstance(data, str):
            raise TypeError("expected a bytes-like object, got str")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.c_push_raw(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef bytes c_pull_bytes(self, Py_ssize_t n):
        cdef const unsigned char* p = self.c_pull_ptr(n)
        return PyBytes_FromStringAndSize(<const char*>p, n)

    cdef object c_pull_view(self, Py_ssize_t n):
        cdef Py_ssize_t start = self._pos
        self.c_pull_ptr(n)
        if ((self._owned != NULL and self._base != self._owned)
                or (self._owned == NULL and self._base != <unsigned char*>self._view.buf)):
            raise ValueError("pull_view on a Buffer retargeted at borrowed memory")
        if self._mv is None:
            if self._owned != NULL:
                mv = PyMemoryView_FromObject(self)
            else:
                mv = PyMemoryView_FromObject(self._obj)
            if not (self._owned != NULL or PyBytes_CheckExact(self._obj) or PyByteArray_CheckExact(self._obj)):
                if mv.ndim != 1 or mv.format != "B":
                    mv = mv.cast("B")
            self._mv = mv
        return PySequence_GetSlice(self._mv, start, start + n)

    # -- Python level --------------------------------------------------------------------
    @property
    def capacity(self):
        """Total size in bytes (the wrapped data's length, or the allocated capacity)."""
        return self._size

    @property
    def remaining(self):
        """Bytes between the position and the end."""
        return self._size - self._pos

    @property
    def data(self):
        """The bytes before the current position (what has been written so far)."""
        return PyBytes_FromStringAndSize(<const char*>self._base, self._pos)

    def data_slice(self, Py_ssize_t start, Py_ssize_t end):
        """Copy of bytes [start, end) of the underlying storage (ValueError if out of range)."""
        if start < 0 or end > self._size or start > end:
            raise ValueError(f"slice [{start}:{end}] outside buffer of {self._size} bytes")
        return PyBytes_FromStringAndSize(<const char*>(self._base + start), end - start)

    def tell(self):
        """Current position."""
        return self._pos

    def seek(self, Py_ssize_t pos):
        """Move to ``pos`` (0 <= pos <= capacity, else ValueError)."""
        if pos < 0 or pos > self._size:
            raise ValueError(f"seek to {pos} outside buffer of {self._size} bytes")
        self._pos = pos

    def eof(self):
        """True when no bytes remain."""
        return self._pos >= self._size

    def pull_uint8(self):
        return _pull_uint(self, 1)

    def pull_uint16(self):
        return _pull_uint(self, 2)

    def pull_uint32(self):
        return _pull_uint(self, 4)

    def pull_uint64(self):
        return _pull_uint(self, 8)

    def pull_varint(self):
        """Read one varint (non-minimal encodings are accepted, RFC 9000 §16)."""
        cdef uint64_t v
        self.c_pull_varint(&v)
        return v

    def pull_bytes(self, Py_ssize_t n):
        """Read ``n`` bytes as a new ``bytes`` object."""
        return self.c_pull_bytes(n)

    def pull_view(self, Py_ssize_t n):
        """Read ``n`` bytes as a zero-copy memoryview slice of the wrapped data."""
        return self.c_pull_view(n)

    def push_uint8(self, value):
        _push_uint(self, value, 1)

    def push_uint16(self, value):
        _push_uint(self, value, 2)

    def push_uint32(self, value):
        _push_uint(self, value, 4)

    def push_uint64(self, value):
        _push_uint(self, value, 8)

    def push_varint(self, value):
        """Write ``v`` as a minimal varint (ValueError if v >= 2**62)."""
        cdef uint64_t v = arg_u64(value, "value")
        self.c_push_varint(v)

    def push_varint_fixed(self, value, width):
        """Write ``value`` as a varint of exactly ``width`` (1, 2, 4 or 8) bytes."""
        cdef uint64_t v = arg_u64(value, "value")
        cdef int nbytes = _arg_int(width, "width")
        self.c_push_varint_fixed(v, nbytes)

    def push_bytes(self, data):
        """Append the bytes of any bytes-like object."""
        self.c_push_object(data)


# ---------------------------------------------------------------------------------------
# Varints, Python level
# ---------------------------------------------------------------------------------------
def varint_size(value):
    """Bytes of the minimal varint encoding of ``value`` (ValueError if out of range)."""
    cdef uint64_t v = arg_u62(value, "value")
    return varint_len(v)


def encode_varint(value):
    """Minimal varint encoding of ``value`` (0 <= value < 2**62) as bytes."""
    cdef uint64_t v = arg_u62(value, "value")
    cdef unsigned char tmp[8]
    cdef int n = varint_len(v)
    varint_write(tmp, v, n)
    return PyBytes_FromStringAndSize(<const char*>tmp, n)


def decode_varint(data, Py_ssize_t offset=0):
    """Decode a varint at ``offset`` of ``data``; returns ``(value, next_offset)``."""
    cdef Buffer buf = Buffer(data)
    cdef uint64_t v
    if offset < 0 or offset > buf._size:
        raise ProtocolError(f"offset {offset} outside data of {buf._size} bytes")
    buf._pos = offset
    buf.c_pull_varint(&v)
    return v, buf._pos


# ---------------------------------------------------------------------------------------
# Packet numbers (RFC 9000 §17.1, Appendix A.2 and A.3)
# ---------------------------------------------------------------------------------------
def encode_packet_number(full_pn, largest_acked=None):
    """Truncate ``full_pn`` for the wire: returns ``(truncated, length_bytes)``.

    The length spans more than twice the distance to ``largest_acked`` (None or -1: nothing
    acked yet), RFC 9000 §17.1 (Appendix A.2's pseudocode allows one byte less at exact powers
    of two). ValueError when that distance is 2**31 or more (more than 4 bytes would be needed)
    or ``largest_acked >= full_pn``.
    """
    cdef uint64_t pn = arg_u62(full_pn, "full_pn")
    cdef int64_t la = -1
    cdef int nbytes
    if not (largest_acked is None or (isinstance(largest_acked, int) and largest_acked == -1)):
        la = <int64_t>arg_u62(largest_acked, "largest_acked")
    nbytes = pn_length(<int64_t>pn, la)
    return pn_truncate(pn, nbytes), nbytes


def decode_packet_number(truncated, length_bytes, largest_pn):
    """Recover the full packet number from its truncated form (RFC 9000 Appendix A.3).

    ``largest_pn`` is the largest packet number successfully processed in this space
    (-1 when none).
    """
    if not isinstance(truncated, int) or not isinstance(length_bytes, int) or not isinstance(largest_pn, int):
        raise TypeError("decode_packet_number takes ints")
    if length_bytes < 1 or length_bytes > 4:
        raise ValueError("length_bytes must be 1..4")
    if truncated < 0 or truncated >= (1 << (8 * length_bytes)):
        raise ValueError("truncated packet number does not fit in length_bytes")
    if largest_pn < -1 or largest_pn > VARINT_MAX:
        raise ValueError("largest_pn out of range")
    return pn_decode(<int64_t>truncated, 8 * <int>length_bytes, <int64_t>largest_pn + 1)


def packet_number_length(first_byte):
    """Packet-number length (1..4) from an unprotected first byte."""
    cdef int fb = _arg_int(first_byte, "first_byte")
    return (fb & 0x03) + 1


def key_phase_of(first_byte):
    """Key phase bit (0/1) of an unprotected short-header first byte."""
    cdef int fb = _arg_int(first_byte, "first_byte")
    return (fb >> 2) & 1


def check_reserved_bits(first_byte):
    """Raise ProtocolError(PROTOCOL_VIOLATION) if the reserved bits of an unprotected first
    byte are not zero (RFC 9000 §17.2/§17.3.1). Call after removing header protection, and
    act on it only once the packet has been authenticated."""
    cdef int fb = _arg_int(first_byte, "first_byte")
    cdef int mask = 0x0C if fb & 0x80 else 0x18
    if fb & mask:
        raise ProtocolError("reserved header bits are not zero", _PROTOCOL_VIOLATION)


# ---------------------------------------------------------------------------------------
# Packet headers (RFC 9000 §17)
# ---------------------------------------------------------------------------------------
cdef class PacketHeader:
    """One parsed packet header (what ``pull_header`` returns).

    ``first_byte`` is as received (still header-protected for Initial/Handshake/1-RTT), so
    ``key_phase`` is only meaningful once the caller has unmasked it; ``pn_offset`` is -1
    for Retry and Version Negotiation (no packet number); ``payload_end`` is where this
    packet ends in the datagram (the next coalesced packet, if any, starts there).
    """

    def __repr__(self):
        return (f"PacketHeader(packet_type={self.packet_type}, version={self.version!r}, "
                f"dcid={self.dcid.hex()}, scid={self.scid.hex()}, token_len={len(self.token)}, "
                f"first_byte=0x{self.first_byte:02x}, pn_offset={self.pn_offset}, "
                f"payload_end={self.payload_end})")

    @property
    def key_phase(self):
        """Key phase bit of a short header's (unprotected) first byte; 0 for long headers."""
        return 0 if self.is_long else (self.first_byte >> 2) & 1

    @property
    def spin_bit(self):
        """Latency spin bit of a short header (not protected); 0 for long headers."""
        return 0 if self.is_long else (self.first_byte >> 5) & 1

    @property
    def length(self):
        """Value of the Length field (packet number + payload bytes) for Initial/Handshake,
        or the bytes from pn_offset to the end for short headers; 0 for Retry/VN."""
        return 0 if self.pn_offset < 0 else self.payload_end - self.pn_offset


cdef inline bytes _pull_cid(Buffer buf, str which):
    cdef uint64_t n
    buf.c_pull_uint(1, &n)
    if n > 20:
        raise ProtocolError(f"{which} length {n} exceeds {MAX_CID_LEN}")
    return buf.c_pull_bytes(<Py_ssize_t>n)


cpdef PacketHeader pull_header(Buffer buf, Py_ssize_t short_dcid_len):
    """Parse one packet header starting at ``buf.tell()``.

    Leaves ``buf`` at ``pn_offset`` (Initial/Handshake/1-RTT; the caller removes header
    protection then calls ``pull_packet_number``) or at the end of the datagram
    (Retry/Version Negotiation). ``short_dcid_len`` is the length of our own connection IDs
    (short headers do not carry it). Raises ProtocolError for anything unparseable; every
    such packet is dropped (PROTOCOL.md §10).
    """
    cdef PacketHeader hdr = PacketHeader.__new__(PacketHeader)
    cdef uint64_t b0, version, n, length
    cdef Py_ssize_t rest
    cdef int ptype
    buf.c_pull_uint(1, &b0)
    hdr.first_byte = <int>b0
    hdr.token = b""
    hdr.scid = b""
    if b0 & 0x80:
        hdr.is_long = True
        buf.c_pull_uint(4, &version)
        hdr.version = _VERSION_1_OBJ if version == C_VERSION_1 else version
        hdr.dcid = _pull_cid(buf, "DCID")
        hdr.scid = _pull_cid(buf, "SCID")
        if version == 0:
            # Version Negotiation (RFC 9000 §17.2.1): fixed bit and type are unused
            hdr.packet_type = 5
            rest = buf._size - buf._pos
            if rest == 0 or rest % 4:
                raise ProtocolError(
                    f"version negotiation list of {rest} bytes is not a non-empty multiple of 4")
            versions = []
            while buf._pos < buf._size:
                buf.c_pull_uint(4, &n)
                versions.append(n)
            hdr.supported_versions = versions
            hdr.pn_offset = -1
            hdr.payload_end = buf._size
            return hdr
        if version != C_VERSION_1:
            raise ProtocolError(f"unsupported version 0x{version:08x}")
        if not (b0 & 0x40):
            raise ProtocolError("fixed bit is 0")
        ptype = (b0 >> 4) & 0x03
        hdr.packet_type = ptype
        if ptype == 1:
            raise ProtocolError("0-RTT packets are not used in version 1")
        if ptype == 3:
            rest = buf._size - buf._pos
            if rest <= 16:
                raise ProtocolError(f"retry packet too short ({rest} bytes after the header)")
            hdr.token = buf.c_pull_bytes(rest - 16)
            hdr.integrity_tag = buf.c_pull_bytes(16)
            hdr.pn_offset = -1
            hdr.payload_end = buf._size
            return hdr
        if ptype == 0:
            buf.c_pull_varint(&n)
            if n > <uint64_t>(buf._size - buf._pos):
                raise ProtocolError(f"token length {n} exceeds {buf._size - buf._pos} remaining bytes")
            hdr.token = buf.c_pull_bytes(<Py_ssize_t>n)
        buf.c_pull_varint(&length)
        if length > <uint64_t>(buf._size - buf._pos):
            raise ProtocolError(f"Length field {length} exceeds {buf._size - buf._pos} remaining bytes")
        hdr.pn_offset = buf._pos
        hdr.payload_end = buf._pos + <Py_ssize_t>length
        return hdr
    # short header (RFC 9000 §17.3.1)
    hdr.is_long = False
    hdr.packet_type = 4
    if not (b0 & 0x40):
        raise ProtocolError("fixed bit is 0")
    if short_dcid_len < 0 or short_dcid_len > 20:
        raise ValueError("short_dcid_len must be 0..20")
    hdr.dcid = buf.c_pull_bytes(short_dcid_len)
    hdr.pn_offset = buf._pos
    hdr.payload_end = buf._size
    return hdr


def parse_version_invariant(data):
    """Read the version-independent fields of a datagram's first packet (RFC 8999).

    Returns ``(is_long, version, dcid, scid)`` (version/scid None for short headers, dcid
    b"" for short headers). Long-header CIDs may be up to 255 bytes here. Use it to answer an
    unsupported version with Version Negotiation after ``pull_header`` refused the packet.
    """
    cdef Buffer buf = Buffer(data)
    cdef uint64_t b0, version, n
    buf.c_pull_uint(1, &b0)
    if not (b0 & 0x80):
        return False, None, b"", None
    buf.c_pull_uint(4, &version)
    buf.c_pull_uint(1, &n)
    dcid = buf.c_pull_bytes(<Py_ssize_t>n)
    buf.c_pull_uint(1, &n)
    scid = buf.c_pull_bytes(<Py_ssize_t>n)
    return True, version, dcid, scid


def pull_packet_number(Buffer buf, pn_len):
    """Read the ``pn_len``-byte truncated packet number (call after header protection is
    removed); then decode it with ``decode_packet_number``."""
    cdef int c_pn_len = _arg_int(pn_len, "pn_len")
    cdef uint64_t v
    if c_pn_len < 1 or c_pn_len > 4:
        raise ValueError("pn_len must be 1..4")
    buf.c_pull_uint(c_pn_len, &v)
    return v


cdef int arg_cid(object cid, str name) except -1:
    if not isinstance(cid, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes-like")
    if byte_len(cid) > 20:
        raise ValueError(f"{name} longer than {MAX_CID_LEN} bytes")
    return 0


cdef int _check_pn(uint64_t pn_truncated, int pn_len) except -1:
    if pn_len < 1 or pn_len > 4:
        raise ValueError("pn_len must be 1..4")
    if pn_truncated >> (8 * pn_len):
        raise ValueError("pn_truncated does not fit in pn_len bytes")
    return 0


def push_long_header(Buffer buf, packet_type, version, dcid, scid, token, pn_truncated, pn_len):
    """Write an Initial or Handshake header, a 2-byte Length placeholder and the packet number.

    Returns the offset of the Length field: once the payload (and AEAD tag) is written, call
    ``patch_length(buf, offset, pn_len + payload_len)``.
    """
    cdef int c_type = _arg_int(packet_type, "packet_type")
    cdef uint64_t c_version = arg_u64(version, "version")
    cdef uint64_t c_pn = arg_u64(pn_truncated, "pn_truncated")
    cdef int c_pn_len = _arg_int(pn_len, "pn_len")
    if c_type != 0 and c_type != 2:
        raise ValueError("push_long_header writes PACKET_INITIAL or PACKET_HANDSHAKE headers")
    if c_version > 0xFFFFFFFF:
        raise ValueError("version does not fit in 32 bits")
    arg_cid(dcid, "dcid")
    arg_cid(scid, "scid")
    _check_pn(c_pn, c_pn_len)
    if token is None:
        token = b""
    arg_bytes_like(token, "token")
    if c_type != 0 and byte_len(token):
        raise ValueError("only Initial packets carry a token")
    buf.c_push_uint(0xC0 | (c_type << 4) | (c_pn_len - 1), 1)
    buf.c_push_uint(c_version, 4)
    buf.c_push_uint(byte_len(dcid), 1)
    buf.c_push_object(dcid)
    buf.c_push_uint(byte_len(scid), 1)
    buf.c_push_object(scid)
    if c_type == 0:
        buf.c_push_varint(byte_len(token))
        buf.c_push_object(token)
    cdef Py_ssize_t length_offset = buf._pos
    buf.c_push_varint_fixed(0, 2)
    buf.c_push_uint(c_pn, c_pn_len)
    return length_offset


def patch_length(Buffer buf, Py_ssize_t length_offset, value):
    """Fill the 2-byte Length placeholder written by ``push_long_header``."""
    cdef uint64_t c_value = arg_u64(value, "value")
    if c_value >= 0x4000:
        raise ValueError("Length must be < 16384 for the 2-byte placeholder")
    if not buf._writable:
        raise ValueError("buffer is read-only")
    if length_offset < 0 or length_offset + 2 > buf._size:
        raise ValueError("length_offset outside buffer")
    varint_write(buf._base + length_offset, c_value, 2)


def push_short_header(Buffer buf, dcid, pn_truncated, pn_len, key_phase=0, spin=0):
    """Write a 1-RTT header: first byte, DCID (its length is not on the wire), packet number."""
    cdef uint64_t c_pn = arg_u64(pn_truncated, "pn_truncated")
    cdef int c_pn_len = _arg_int(pn_len, "pn_len")
    cdef int kp = _arg_int(key_phase, "key_phase")
    cdef int sp = _arg_int(spin, "spin")
    arg_cid(dcid, "dcid")
    _check_pn(c_pn, c_pn_len)
    if kp not in (0, 1) or sp not in (0, 1):
        raise ValueError("key_phase and spin must be 0 or 1")
    buf.c_push_uint(0x40 | (sp << 5) | (kp << 2) | (c_pn_len - 1), 1)
    buf.c_push_object(dcid)
    buf.c_push_uint(c_pn, c_pn_len)


def encode_retry(version, dcid, scid, token, integrity_tag=None):
    """Encode a Retry packet (RFC 9000 §17.2.5).

    With ``integrity_tag=None`` the bytes stop before the tag (what the Retry integrity tag
    is computed over, after the original DCID prefix); otherwise the 16-byte tag is appended.
    """
    cdef uint64_t v = arg_u62(version, "version")
    if v > 0xFFFFFFFF or v == 0:
        raise ValueError("version must be a non-zero 32-bit value")
    arg_cid(dcid, "dcid")
    arg_cid(scid, "scid")
    arg_bytes_like(token, "token")
    if byte_len(token) == 0:
        raise ValueError("a Retry token must not be empty")
    if integrity_tag is not None:
        arg_bytes_like(integrity_tag, "integrity_tag")
        if byte_len(integrity_tag) != 16:
            raise ValueError("integrity_tag must be 16 bytes")
    cdef Buffer buf = Buffer(capacity=7 + 40 + byte_len(token) + 16)
    buf.c_push_uint(0xF0, 1)
    buf.c_push_uint(v, 4)
    buf.c_push_uint(byte_len(dcid), 1)
    buf.c_push_object(dcid)
    buf.c_push_uint(byte_len(scid), 1)
    buf.c_push_object(scid)
    buf.c_push_object(token)
    if integrity_tag is not None:
        buf.c_push_object(integrity_tag)
    return buf.data


def encode_version_negotiation(dcid, scid, versions):
    """Encode a Version Negotiation packet listing ``versions`` (RFC 9000 §17.2.1).

    ``dcid``/``scid`` are the client's SCID/DCID echoed back (swapped by the caller).
    """
    arg_cid(dcid, "dcid")
    arg_cid(scid, "scid")
    versions = list(versions)
    if not versions:
        raise ValueError("at least one version is required")
    cdef Buffer buf = Buffer(capacity=7 + 40 + 4 * len(versions))
    buf.c_push_uint(0xC0, 1)
    buf.c_push_uint(0, 4)
    buf.c_push_uint(byte_len(dcid), 1)
    buf.c_push_object(dcid)
    buf.c_push_uint(byte_len(scid), 1)
    buf.c_push_object(scid)
    for ver in versions:
        if not isinstance(ver, int):
            raise TypeError("versions must be ints")
        if ver <= 0 or ver > 0xFFFFFFFF:
            raise ValueError("versions must be non-zero 32-bit values")
        buf.c_push_uint(<uint64_t>ver, 4)
    return buf.data
