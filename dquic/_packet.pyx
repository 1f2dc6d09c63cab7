# cython: language_level=3
"""Building and sealing packets (compiled).

Theory of operation
-------------------
A packet is built in a send buffer from its header to its sealing within one call of the
connection's ``datagram_trains``: ``start_packet`` takes the space's next packet number and
writes the header (long for the handshake space, short for 1-RTT; RFC 9000 §17), the
connection's ``Sender`` (_sender.pyx) writes the frames, ``finish_packet`` pads for the header-protection sample (RFC 9001 §5.4.2),
patches a long header's Length, and seals: into a new ``bytes``, or straight into the caller's
memory (a train of datagrams for segmentation offload). ``pad_to`` pads a handshake datagram to
1200 bytes.

Send buffers are scratch state shared by every connection (``take_scratch``/``give_scratch``):
lent out under the GIL, each holds the largest datagram and shows only the connection's
max_datagram_size, so writing past it fails as with a buffer of its own. A connection gives its
buffer back at the end of each call, so any number of threads may be building packets at once.

Every frame but STREAM, ACK and CONNECTION_CLOSE goes into a packet through ``put_frame``: its
type and integer fields (as many as its kind has, ``FRAME_WIRE_FIELDS`` in _spaces.pxd) as
varints, then a tail of bytes, if it fits before ``end``, and then recorded in the sent packet's
record (kinds before FR_UNRECORDED). ``pay`` does the same for a frame owed (its bit in a
``uint32_t`` of owed frames), which is then no longer owed.

Nothing here knows the connection.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memcpy, memset

from dquic._codec cimport Buffer
from dquic._protection cimport PacketProtection
from dquic._spaces cimport (FR_MAX_STREAMS, FR_STREAMS_BLOCKED, FR_UNRECORDED, FRAME_WIRE_FIELDS,
                            FRAME_WIRE_TYPE, _Sent, _Space, add_record)
from dquic._wire cimport pn_length, varint_len, varint_write

from dquic import _codec as codec
from dquic._spaces import TRACE_NAMES

__all__ = []

cdef uint64_t DQUIC_VERSION_1 = codec.DQUIC_VERSION_1
cdef list _SEND_SCRATCH = []          # idle send buffers


cdef Buffer take_scratch(Py_ssize_t size):
    """A send buffer showing ``size`` bytes (returned with give_scratch)."""
    cdef Buffer b
    if _SEND_SCRATCH:
        b = <Buffer>_SEND_SCRATCH.pop()
    else:
        b = Buffer(capacity=SEND_SCRATCH_SIZE)
        b.enable_gather()  # (STREAM data is sealed from the send buffers: finish_packet)
    b._size = size if size < SEND_SCRATCH_SIZE else SEND_SCRATCH_SIZE  # never past the storage
    return b


cdef void give_scratch(Buffer b):
    b._size = SEND_SCRATCH_SIZE
    b._ngather = 0
    if len(_SEND_SCRATCH) < SEND_SCRATCH_MAX:
        _SEND_SCRATCH.append(b)


cdef int start_packet(Buffer buf, _Space space, int ptype, object dcid, object scid, object token,
                      int64_t* pn_out, int* pn_len_out, Py_ssize_t* length_off) except -1:
    """Write a packet header of ``space``'s next packet number at the start of ``buf``: a long
    header of type ``ptype`` (with ``scid`` and, for INITIAL, ``token``), or a short one when
    ``ptype`` < 0. The payload follows; ``length_off`` is where a long header's Length goes
    (-1: none)."""
    cdef int64_t pn = space.next_pn
    cdef int pn_len
    cdef uint64_t trunc
    space.next_pn += 1
    pn_len = pn_length(pn, space.largest_acked)
    trunc = (<uint64_t>pn) & ((((<uint64_t>1) << (8 * pn_len))) - 1)
    buf._pos = 0
    buf._ngather = 0
    if ptype >= 0:
        length_off[0] = codec.push_long_header(buf, ptype, DQUIC_VERSION_1, dcid, scid, token,
                                               trunc, pn_len)
    else:
        buf.c_push_uint(0x40 | (pn_len - 1), 1)
        buf.c_push_object(dcid)
        buf.c_push_uint(trunc, pn_len)
        length_off[0] = -1
    pn_out[0] = pn
    pn_len_out[0] = pn_len
    return 0


cdef int pad_to(Buffer buf, Py_ssize_t total) except -1:
    """Zeros (PADDING frames) up to ``total`` bytes in the buffer."""
    cdef Py_ssize_t room = total - buf._pos
    if room > 0:
        memset(buf.c_push_ptr(room), 0, room)
    return 0


cdef object finish_packet(Buffer buf, object sealer, bint null_seal, Py_ssize_t hdr_end,
                          Py_ssize_t length_off, int64_t pn, int pn_len, unsigned char* dst):
    """Pad for the header-protection sample, seal with ``sealer`` (``null_seal``: it is a
    NullProtection of a short header, nothing to do) and return the packet's bytes; with
    ``dst`` (room for the packet plus the AEAD tag), write the packet there instead and return
    its length. Bytes the packet references (``Buffer.c_push_ref``: STREAM data left in the
    send buffers) are sealed from where they are when sealing into ``dst``, else copied in
    first."""
    cdef Py_ssize_t payload_len = buf._pos - hdr_end, pad, n
    cdef int i, ng = buf._ngather
    cdef unsigned char* p
    # header protection samples 16 bytes starting 4 after the packet number (RFC 9001 §5.4.2)
    if payload_len + pn_len < 4:
        pad = 4 - payload_len - pn_len
        p = buf.c_push_ptr(pad)
        memset(p, 0, pad)
    if ng and (dst == NULL or type(sealer) is not PacketProtection):
        buf.c_gather()
        ng = 0
    if null_seal:
        if dst != NULL:
            memcpy(dst, buf._base, buf._pos)
            return buf._pos
        return PyBytes_FromStringAndSize(<const char*>buf._base, buf._pos)
    if length_off >= 0:
        codec.patch_length(buf, length_off, pn_len + buf._pos - hdr_end + sealer.tag_size)
    if type(sealer) is PacketProtection:
        if dst != NULL:
            for i in range(ng):
                buf._gather[i].pos -= hdr_end  # (from the payload's start)
            buf._ngather = 0
            return (<PacketProtection>sealer).c_seal_into(
                buf._base, hdr_end, buf._base + hdr_end, buf._pos - hdr_end, pn, dst,
                buf._gather, ng)
        return (<PacketProtection>sealer).c_seal(buf._base, hdr_end, buf._base + hdr_end,
                                                 buf._pos - hdr_end, pn)
    header = PyBytes_FromStringAndSize(<const char*>buf._base, hdr_end)
    payload = PyBytes_FromStringAndSize(<const char*>(buf._base + hdr_end), buf._pos - hdr_end)
    data = sealer.encrypt_packet(header, payload, pn)
    if dst != NULL:
        n = len(data)
        memcpy(dst, <const char*>data, n)
        return n
    return data


cdef int put_frame(Buffer buf, Py_ssize_t end, _Sent rec, int kind, uint64_t a=0, uint64_t b=0,
                   uint64_t c=0, const unsigned char* tail=NULL, Py_ssize_t tail_len=0) except -1:
    """Write the frame ``kind``: its type, its first fields (a, b, c: as many as the
    kind has) as varints, then ``tail``, if it fits before ``end``; and record it in ``rec``
    (kinds before FR_UNRECORDED). Returns 1 if written, 0 if not."""
    cdef uint64_t v[3]
    cdef int n[3]
    cdef int i, fields = FRAME_WIRE_FIELDS[kind]
    cdef Py_ssize_t size = 1 + tail_len
    cdef unsigned char* p
    v[0] = a
    v[1] = b
    v[2] = c
    for i in range(fields):
        n[i] = varint_len(v[i])
        if n[i] == 0:
            raise ValueError(f"{TRACE_NAMES[kind]} field {v[i]} exceeds 2**62-1")
        size += n[i]
    if (kind == FR_MAX_STREAMS or kind == FR_STREAMS_BLOCKED) and a > ((<uint64_t>1) << 60):
        raise ValueError(f"{TRACE_NAMES[kind]} {a} exceeds 2**60")
    if buf._pos + size > end:
        return 0
    p = buf.c_push_ptr(size)
    p[0] = FRAME_WIRE_TYPE[kind]
    p += 1
    for i in range(fields):
        varint_write(p, v[i], n[i])
        p += n[i]
    if tail_len:
        memcpy(p, tail, tail_len)
    if kind < FR_UNRECORDED:
        add_record(rec, kind, a, b, c, False)
    return 1


cdef int pay(Buffer buf, uint32_t* owed, int kind, Py_ssize_t end, _Sent rec, uint64_t a=0,
             uint64_t b=0, uint64_t c=0, const unsigned char* tail=NULL,
             Py_ssize_t tail_len=0) except -1:
    """The frame ``kind``, if it is owed (its bit in ``owed[0]``): written and recorded
    (put_frame), and then no longer owed. Returns 1 if it stays owed for want of room."""
    cdef uint32_t bit = (<uint32_t>1) << kind
    if not (owed[0] & bit):
        return 0
    if not put_frame(buf, end, rec, kind, a, b, c, tail, tail_len):
        return 1
    owed[0] &= ~bit
    return 0
