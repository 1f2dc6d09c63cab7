# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Single-call entry points to dquic's wire codec, for the codec benchmarks.

One Python call per header or frame, with no Buffer and no frame object: each encoder computes
the exact size, allocates the result ``bytes`` once and writes into it; each decoder parses
straight from the caller's bytes and returns a tuple. They produce and accept exactly the same
bytes as the Buffer and frame-object API of ``dquic._codec`` and ``dquic._frames``
(test_codec_fast.py checks that), validate their arguments the same way (TypeError/ValueError
for local mistakes) and raise only ProtocolError on malformed input bytes.
``bench/baseline_codec.py`` has the same signatures in pure Python; ``test_bench_codec.py``
measures one against the other.

Not part of dquic (the transport never needed them): compiled on first use against the
installed dquic by ``build_ext.py`` beside this file, which cimports the codec's C API
(``dquic/_codec.pxd``, ``dquic/_frames.pxd``) and the inline wire primitives
(``dquic/_wire.pxd``).
"""
from cpython.buffer cimport Py_buffer, PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from dquic._codec cimport Buffer, arg_u62, arg_u64, open_input
from dquic._frames cimport (c_decode_stream_frame, parse_ack_ranges, parse_ecn,
                            pull_stream_frame_header, read_varint_at)
from dquic._wire cimport be_read, be_write, varint_len, varint_write

from time import perf_counter_ns as _perf_counter_ns

from dquic._codec import DQUIC_VERSION_1, MAX_CID_LEN
from dquic.errors import ErrorCode, ProtocolError

cdef uint64_t C_VARINT_MAX = 0x3FFFFFFFFFFFFFFFULL
cdef uint32_t C_VERSION_1 = 0x44510001
cdef object _VERSION_1_OBJ = DQUIC_VERSION_1
cdef object _FRAME_ENCODING_ERROR = ErrorCode.FRAME_ENCODING_ERROR


cdef inline uint64_t _fast_u62(object value, str name) except? 0xFFFFFFFFFFFFFFFFULL:
    """``arg_u62`` with a single C call on the common path (an int in range)."""
    cdef int overflow = 0
    cdef long long x
    if PyLong_Check(value):
        x = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and x >= 0 and x <= <long long>0x3FFFFFFFFFFFFFFF:
            return <uint64_t>x
    return arg_u62(value, name)  # raises the precise TypeError/ValueError


cdef inline int _fast_small(object value, str name) except? -1:
    """An int argument that must be small and non-negative (lengths, bits): TypeError for
    non-ints, -2 for anything outside 0..255 so the caller reports the range."""
    cdef int overflow = 0
    cdef long x
    if not PyLong_Check(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    x = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow or x < 0 or x > 255:
        return -2
    return <int>x


cdef inline int _put_varint(unsigned char* p, uint64_t v) noexcept nogil:
    """Write v (< 2**62, checked by the caller) as a minimal varint; return its size."""
    cdef int n = varint_len(v)
    varint_write(p, v, n)
    return n


def encode_stream_frame(stream_id, offset, data, fin=False):
    """Encode a complete STREAM frame (header + data) as one ``bytes`` object.

    Same bytes as ``push_stream_frame_header`` followed by the data, or ``push_frame`` of a
    ``StreamFrame`` with ``has_length=True``: LEN bit always set, OFF bit iff
    ``offset > 0``, FIN bit iff ``fin`` (RFC 9000 §19.8). ``data`` is any bytes-like
    object; it is copied once, straight into the result. Append the result to a packet
    payload; decode with ``decode_stream_frame``.
    """
    cdef uint64_t sid = _fast_u62(stream_id, "stream_id")
    cdef uint64_t off = _fast_u62(offset, "offset")
    cdef Py_buffer view
    cdef const unsigned char* src
    cdef Py_ssize_t n
    cdef bint own = open_input(data, &view, &src, &n)
    cdef int ns, no, nl
    cdef unsigned char* q
    cdef bytes out
    try:
        if off + <uint64_t>n > C_VARINT_MAX:
            raise ValueError("STREAM frame offset + length exceeds 2**62-1")
        ns = varint_len(sid)
        no = varint_len(off) if off else 0
        nl = varint_len(<uint64_t>n)
        out = PyBytes_FromStringAndSize(NULL, 1 + ns + no + nl + n)
        q = <unsigned char*>PyBytes_AS_STRING(out)
        q[0] = 0x08 | 0x02 | (0x04 if off else 0) | (0x01 if fin else 0)
        varint_write(q + 1, sid, ns)
        if off:
            varint_write(q + 1 + ns, off, no)
        varint_write(q + 1 + ns + no, <uint64_t>n, nl)
        if n:
            memcpy(q + 1 + ns + no + nl, src, n)
    finally:
        if own:
            PyBuffer_Release(&view)
    return out


def decode_stream_frame(data, Py_ssize_t offset=0):
    """Decode the STREAM frame whose type byte is at ``data[offset]``.

    Returns ``(stream_id, stream_offset, fin, data_start, data_end)``: the frame's data is
    ``data[data_start:data_end]`` (bounds, not a copy or a view: slice or ``memoryview`` it
    only if you need it) and the next frame starts at ``data_end``. Any STREAM type
    0x08..0x0f is accepted (absent offset = 0; without the LEN bit the data runs to the end
    of ``data``). ProtocolError on a non-STREAM type byte, truncation, a length beyond the
    data or ``offset + length >= 2**62``.
    """
    cdef uint64_t sid = 0, off = 0, length = 0
    cdef bint fin = False
    cdef Py_ssize_t start = c_decode_stream_frame(data, offset, &sid, &off, &length, &fin)
    return sid, off, fin, start, start + <Py_ssize_t>length


def encode_short_header(dcid, pn_truncated, pn_len, key_phase=0, spin=0):
    """Encode a 1-RTT (short) header as ``bytes``: first byte, DCID, packet number.

    Same bytes as ``push_short_header`` (RFC 9000 §17.3.1; reserved bits zero). The header is
    unprotected: append the payload, encrypt, then apply header protection. Decode an
    unprotected short header with ``decode_short_header``.
    """
    cdef uint64_t pn = _fast_u62(pn_truncated, "pn_truncated")
    cdef int c_pn_len = _fast_small(pn_len, "pn_len")
    cdef int kp = _fast_small(key_phase, "key_phase")
    cdef int sp = _fast_small(spin, "spin")
    cdef Py_buffer view
    cdef const unsigned char* src
    cdef Py_ssize_t n
    cdef bint own
    cdef unsigned char* q
    cdef bytes out
    if c_pn_len < 1 or c_pn_len > 4:
        raise ValueError("pn_len must be 1..4")
    if pn >> (8 * c_pn_len):
        raise ValueError("pn_truncated does not fit in pn_len bytes")
    if kp > 1 or sp > 1 or kp < 0 or sp < 0:
        raise ValueError("key_phase and spin must be 0 or 1")
    if not PyBytes_CheckExact(dcid) and not isinstance(dcid, (bytes, bytearray, memoryview)):
        raise TypeError("dcid must be bytes-like")
    own = open_input(dcid, &view, &src, &n)
    try:
        if n > 20:
            raise ValueError(f"dcid longer than {MAX_CID_LEN} bytes")
        out = PyBytes_FromStringAndSize(NULL, 1 + n + c_pn_len)
        q = <unsigned char*>PyBytes_AS_STRING(out)
        q[0] = 0x40 | (sp << 5) | (kp << 2) | (c_pn_len - 1)
        if n:
            memcpy(q + 1, src, n)
        be_write(q + 1 + n, pn, c_pn_len)
    finally:
        if own:
            PyBuffer_Release(&view)
    return out


def decode_short_header(data, Py_ssize_t dcid_len, Py_ssize_t offset=0):
    """Decode an *unprotected* 1-RTT header starting at ``data[offset]``.

    Call it on a header whose protection has been removed (or was never applied); for a
    protected packet use ``pull_header`` (which stops before the packet number). ``dcid_len``
    is the length of our own connection IDs (short headers do not carry it). Returns
    ``(dcid, pn_truncated, pn_len, key_phase, spin, payload_offset)``; recover the full
    packet number with ``decode_packet_number`` and check the reserved bits with
    ``check_reserved_bits`` once the packet is authenticated. ProtocolError when the long-
    header bit is set, the fixed bit is 0, or the data is too short.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t size, pos
    cdef int b0, pn_len
    cdef uint64_t pn
    cdef bytes dcid
    cdef bint own
    if dcid_len < 0 or dcid_len > 20:
        raise ValueError("dcid_len must be 0..20")
    own = open_input(data, &view, &p, &size)
    try:
        if offset < 0 or offset >= size:
            raise ProtocolError(f"short header: offset {offset} outside data of {size} bytes")
        b0 = p[offset]
        if b0 & 0x80:
            raise ProtocolError("not a short header (long-header bit set)")
        if not (b0 & 0x40):
            raise ProtocolError("fixed bit is 0")
        pn_len = (b0 & 0x03) + 1
        if size - offset < 1 + dcid_len + pn_len:
            raise ProtocolError(
                f"truncated short header: need {1 + dcid_len + pn_len} bytes, {size - offset} remaining")
        pos = offset + 1
        dcid = PyBytes_FromStringAndSize(<const char*>(p + pos), dcid_len)
        pos += dcid_len
        pn = be_read(p + pos, pn_len)
    finally:
        if own:
            PyBuffer_Release(&view)
    return dcid, pn, pn_len, (b0 >> 2) & 1, (b0 >> 5) & 1, pos + pn_len


def encode_long_header(packet_type, version, dcid, scid, token, pn_truncated, pn_len,
                       payload_length=0):
    """Encode an Initial or Handshake header through the packet number as ``bytes``.

    Same bytes as ``push_long_header`` followed by ``patch_length(buf, offset,
    pn_len + payload_length)``: the Length field is always the 2-byte varint form
    (RFC 9000 §17.2), so ``pn_len + payload_length`` must be < 16384. ``payload_length``
    is the number of bytes that will follow the packet number (ciphertext including the
    AEAD tag). ``token`` must be empty (or None) for Handshake packets. Decode an unprotected
    long header with ``decode_long_header``.
    """
    cdef int c_type = _fast_small(packet_type, "packet_type")
    cdef uint64_t c_version = arg_u64(version, "version")
    cdef uint64_t pn = _fast_u62(pn_truncated, "pn_truncated")
    cdef int c_pn_len = _fast_small(pn_len, "pn_len")
    cdef uint64_t plen = _fast_u62(payload_length, "payload_length")
    cdef Py_buffer vd, vs, vt
    cdef const unsigned char* pd
    cdef const unsigned char* ps
    cdef const unsigned char* pt
    cdef Py_ssize_t nd, ns, nt, total
    cdef bint od = False, os_ = False, ot = False
    cdef int ntl
    cdef unsigned char* q
    cdef bytes out
    if c_type != 0 and c_type != 2:
        raise ValueError("encode_long_header writes PACKET_INITIAL or PACKET_HANDSHAKE headers")
    if c_version > 0xFFFFFFFF:
        raise ValueError("version does not fit in 32 bits")
    if c_pn_len < 1 or c_pn_len > 4:
        raise ValueError("pn_len must be 1..4")
    if pn >> (8 * c_pn_len):
        raise ValueError("pn_truncated does not fit in pn_len bytes")
    if plen + <uint64_t>c_pn_len >= 0x4000:
        raise ValueError("pn_len + payload_length must be < 16384 for the 2-byte Length field")
    if token is None:
        token = b""
    for obj, name in ((dcid, "dcid"), (scid, "scid"), (token, "token")):
        if not isinstance(obj, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name} must be bytes-like")
    od = open_input(dcid, &vd, &pd, &nd)
    try:
        os_ = open_input(scid, &vs, &ps, &ns)
        ot = open_input(token, &vt, &pt, &nt)
        if nd > 20:
            raise ValueError(f"dcid longer than {MAX_CID_LEN} bytes")
        if ns > 20:
            raise ValueError(f"scid longer than {MAX_CID_LEN} bytes")
        if c_type != 0 and nt:
            raise ValueError("only Initial packets carry a token")
        ntl = varint_len(<uint64_t>nt) if c_type == 0 else 0
        total = 1 + 4 + 1 + nd + 1 + ns + ntl + (nt if c_type == 0 else 0) + 2 + c_pn_len
        out = PyBytes_FromStringAndSize(NULL, total)
        q = <unsigned char*>PyBytes_AS_STRING(out)
        q[0] = 0xC0 | (c_type << 4) | (c_pn_len - 1)
        be_write(q + 1, c_version, 4)
        q += 5
        q[0] = <unsigned char>nd
        if nd:
            memcpy(q + 1, pd, nd)
        q += 1 + nd
        q[0] = <unsigned char>ns
        if ns:
            memcpy(q + 1, ps, ns)
        q += 1 + ns
        if c_type == 0:
            varint_write(q, <uint64_t>nt, ntl)
            q += ntl
            if nt:
                memcpy(q, pt, nt)
            q += nt
        varint_write(q, plen + <uint64_t>c_pn_len, 2)
        be_write(q + 2, pn, c_pn_len)
    finally:
        if od:
            PyBuffer_Release(&vd)
        if os_:
            PyBuffer_Release(&vs)
        if ot:
            PyBuffer_Release(&vt)
    return out


def decode_long_header(data, Py_ssize_t offset=0):
    """Decode an *unprotected* Initial or Handshake header starting at ``data[offset]``.

    Call it once header protection is removed (or was never applied); for a protected
    packet, or for Retry/Version Negotiation packets, use ``pull_header``. Returns
    ``(packet_type, version, dcid, scid, token, pn_truncated, pn_len, payload_offset,
    packet_end)``: the payload is ``data[payload_offset:packet_end]`` and a coalesced next
    packet starts at ``packet_end`` (RFC 9000 §12.2). ProtocolError for anything else:
    short header, unsupported version, Retry/0-RTT/Version Negotiation, fixed bit 0, CID
    over 20 bytes, token or Length beyond the data, Length smaller than the packet number.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t size, pos, nd, ns
    cdef int b0, ptype, pn_len
    cdef uint64_t version, ntok, length, pn
    cdef bytes dcid, scid, token
    cdef bint own = open_input(data, &view, &p, &size)
    try:
        if offset < 0 or offset >= size:
            raise ProtocolError(f"long header: offset {offset} outside data of {size} bytes")
        b0 = p[offset]
        if not (b0 & 0x80):
            raise ProtocolError("not a long header (long-header bit clear)")
        if size - offset < 7:
            raise ProtocolError("truncated long header")
        version = be_read(p + offset + 1, 4)
        if version == 0:
            raise ProtocolError("version negotiation packet (use pull_header)")
        if version != C_VERSION_1:
            raise ProtocolError(f"unsupported version 0x{version:08x}")
        if not (b0 & 0x40):
            raise ProtocolError("fixed bit is 0")
        ptype = (b0 >> 4) & 0x03
        if ptype == 1:
            raise ProtocolError("0-RTT packets are not used in version 1")
        if ptype == 3:
            raise ProtocolError("retry packet has no packet number (use pull_header)")
        pos = offset + 5
        nd = p[pos]
        if nd > 20:
            raise ProtocolError(f"DCID length {nd} exceeds {MAX_CID_LEN}")
        if size - pos - 1 < nd + 1:
            raise ProtocolError("truncated long header in DCID")
        dcid = PyBytes_FromStringAndSize(<const char*>(p + pos + 1), nd)
        pos += 1 + nd
        ns = p[pos]
        if ns > 20:
            raise ProtocolError(f"SCID length {ns} exceeds {MAX_CID_LEN}")
        if size - pos - 1 < ns:
            raise ProtocolError("truncated long header in SCID")
        scid = PyBytes_FromStringAndSize(<const char*>(p + pos + 1), ns)
        pos += 1 + ns
        if ptype == 0:
            pos = read_varint_at(p, size, pos, &ntok)
            if ntok > <uint64_t>(size - pos):
                raise ProtocolError(f"token length {ntok} exceeds {size - pos} remaining bytes")
            token = PyBytes_FromStringAndSize(<const char*>(p + pos), <Py_ssize_t>ntok)
            pos += <Py_ssize_t>ntok
        else:
            token = b""
        pos = read_varint_at(p, size, pos, &length)
        if length > <uint64_t>(size - pos):
            raise ProtocolError(f"Length field {length} exceeds {size - pos} remaining bytes")
        pn_len = (b0 & 0x03) + 1
        if length < <uint64_t>pn_len:
            raise ProtocolError("Length field smaller than the packet number")
        pn = be_read(p + pos, pn_len)
    finally:
        if own:
            PyBuffer_Release(&view)
    return (ptype, _VERSION_1_OBJ, dcid, scid, token, pn, pn_len, pos + pn_len,
            pos + <Py_ssize_t>length)


def encode_ack(ranges, ack_delay, ecn=None):
    """Encode an ACK (0x02) or, with ``ecn=(ect0, ect1, ce)``, ACK_ECN (0x03) frame as
    ``bytes``.

    ``ranges`` is a list or tuple of ascending, non-overlapping, non-adjacent half-open
    ``(start, stop)`` tuples, exactly as for ``push_ack_frame`` (same bytes, same
    ValueError/TypeError on bad ranges), or a flat sequence of bounds ``(start0, stop0, start1,
    stop1, ...)`` such as ``decode_ack`` returns. ``ack_delay`` is the raw ACK Delay field. The
    ranges are read in place, highest first, straight into the frame: no Python object is
    created per range. Decode with ``decode_ack``.
    """
    cdef uint64_t delay = _fast_u62(ack_delay, "ack_delay")
    cdef uint64_t e[3]
    cdef unsigned char stackbuf[1024]
    cdef unsigned char* tmp = stackbuf
    cdef unsigned char* q
    cdef PyObject** items
    cdef Py_ssize_t n, count, k, cap
    cdef int64_t start, stop, prev_start
    cdef int overflow = 0
    cdef bint flat
    if ecn is not None:
        if not isinstance(ecn, tuple) or len(<tuple>ecn) != 3:
            raise TypeError("ecn must be a 3-tuple or None")
        for k in range(3):
            e[k] = _fast_u62((<tuple>ecn)[k], "ecn count")
    seq = PySequence_Fast(ranges, "ranges must be a sequence of (start, stop) tuples")
    n = PySequence_Fast_GET_SIZE(seq)
    if n == 0:
        raise ValueError("an ACK frame needs at least one range")
    items = PySequence_Fast_ITEMS(seq)
    flat = PyLong_Check(<object>items[0])
    if flat:
        if n % 2:
            raise ValueError("flat ACK bounds must come in (start, stop) pairs")
        count = n // 2
    else:
        count = n
    # type + largest + delay + count + first range + (gap, length) per further range + ECN
    cap = 1 + 4 * 8 + 16 * (count - 1) + 3 * 8
    if cap > <Py_ssize_t>sizeof(stackbuf):
        tmp = <unsigned char*>PyMem_Malloc(cap)
        if tmp == NULL:
            raise MemoryError()
    try:
        q = tmp
        q[0] = 0x02 if ecn is None else 0x03
        q += 1
        prev_start = -1
        k = count
        while k > 0:
            k -= 1
            if flat:
                r = None
                a = <object>items[2 * k]
                b = <object>items[2 * k + 1]
            else:
                r = <object>items[k]
                if PyTuple_CheckExact(r) and PyTuple_GET_SIZE(r) == 2:
                    a = (<tuple>r)[0]
                    b = (<tuple>r)[1]
                elif isinstance(r, tuple) and len(r) == 2:
                    a, b = r
                else:
                    raise TypeError("ranges must be (start, stop) tuples")
            if not (PyLong_Check(a) and PyLong_Check(b)):
                raise TypeError("range bounds must be ints")
            start = PyLong_AsLongLongAndOverflow(a, &overflow)
            if overflow > 0:
                raise ValueError("range beyond 2**62-1")
            if overflow < 0:
                raise ValueError(f"empty, inverted or negative range {(a, b)!r}")
            stop = PyLong_AsLongLongAndOverflow(b, &overflow)
            if overflow > 0 or stop > ((<int64_t>1) << 62):
                raise ValueError("range beyond 2**62-1")
            if start < 0 or overflow < 0 or stop <= start:
                raise ValueError(f"empty, inverted or negative range {(a, b)!r}")
            if prev_start < 0:
                # the highest range: Largest Acknowledged, ACK Delay, Range Count, First Range
                q += _put_varint(q, <uint64_t>(stop - 1))
                q += _put_varint(q, delay)
                q += _put_varint(q, <uint64_t>(count - 1))
            else:
                if stop >= prev_start:
                    raise ValueError("ranges must be ascending with a gap between them")
                # Gap: (previous smallest) - (this largest) - 2 (RFC 9000 §19.3.1)
                q += _put_varint(q, <uint64_t>(prev_start - stop - 1))
            q += _put_varint(q, <uint64_t>(stop - 1 - start))
            prev_start = start
        if ecn is not None:
            q += _put_varint(q, e[0])
            q += _put_varint(q, e[1])
            q += _put_varint(q, e[2])
        return PyBytes_FromStringAndSize(<const char*>tmp, q - tmp)
    finally:
        if tmp != stackbuf:
            PyMem_Free(tmp)


def decode_ack(data, Py_ssize_t offset=0, Py_ssize_t max_ack_ranges=256):
    """Decode the ACK or ACK_ECN frame whose type byte is at ``data[offset]``.

    Returns ``(bounds, ack_delay, ecn, next_offset)``. ``bounds`` is the flat ascending tuple
    ``(start0, stop0, start1, stop1, ...)`` of the acknowledged half-open ranges: the same
    ranges as ``AckFrame.ranges`` without a tuple per range (a third of the objects to
    allocate). Iterate it as pairs with ``it = iter(bounds); for start, stop in zip(it, it)``
    (zip reuses its tuple), or pass it back to ``encode_ack``. ``ack_delay`` is the raw field,
    ``ecn`` the ``(ect0, ect1, ce)`` counts or None, and ``next_offset`` where the next frame
    starts. ProtocolError (frame_type set) on a non-ACK type byte, truncation,
    a range count of ``max_ack_ranges`` or more, or ranges below packet number 0.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t size, pos
    cdef uint64_t ftype = 0, delay
    cdef tuple bounds
    cdef bint own = open_input(data, &view, &p, &size)
    try:
        if offset < 0 or offset >= size:
            raise ProtocolError(f"ACK frame: offset {offset} outside data of {size} bytes")
        ftype = p[offset]
        if ftype != 0x02 and ftype != 0x03:
            raise ProtocolError(f"not an ACK frame type: 0x{ftype:02x}", _FRAME_ENCODING_ERROR, ftype)
        pos = offset + 1
        bounds = parse_ack_ranges(p, size, &pos, max_ack_ranges, &delay, True)
        ecn = parse_ecn(p, size, &pos) if ftype == 0x03 else None
    except ProtocolError as exc:
        if exc.frame_type is not None:
            raise
        raise ProtocolError(f"ACK frame: {exc.args[0]}", _FRAME_ENCODING_ERROR, ftype) from None
    finally:
        if own:
            PyBuffer_Release(&view)
    return bounds, delay, ecn, pos


# ---------------------------------------------------------------------------------------
# The codec's STREAM frame header decode in a C loop (no Python call per decode)
# ---------------------------------------------------------------------------------------
def bench_decode_stream_headers(data, Py_ssize_t n):
    """Decode the STREAM frame header at the start of ``data`` ``n`` times
    in a C loop; returns the elapsed nanoseconds (time.perf_counter_ns around the loop)."""
    cdef Buffer buf = Buffer(data)
    cdef uint64_t ftype, sid, off, length, acc = 0
    cdef bint fin
    cdef Py_ssize_t i
    if buf._size < 1:
        raise ProtocolError("empty data")
    t0 = _perf_counter_ns()
    for i in range(n):
        buf._pos = 0
        ftype = buf._base[0]
        buf._pos = 1
        pull_stream_frame_header(buf, ftype, &sid, &off, &length, &fin)
        acc += sid + off + length
    t1 = _perf_counter_ns()
    if acc == 0xFFFFFFFFFFFFFFFFULL:  # keep the loop from being optimised away
        print(acc)
    return t1 - t0
