# C-level interface of dquic._codec (wire format v1, see PROTOCOL.md).
#
# Other compiled modules `cimport` from here so that per-packet work never goes through
# Python objects:
#
#     from dquic._codec cimport Buffer, pull_header, c_varint_size
#
# Every `c_pull_*` raises ProtocolError on truncated input (peer data); every `c_push_*`
# raises ValueError when the write would pass the buffer's capacity (a local bug).
from cpython.buffer cimport Py_buffer, PyBUF_SIMPLE, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t

# Bytes of a packet under construction that are not copied into its buffer before it is sealed
# (``Buffer.c_push_ref``): ``n`` bytes at ``src`` belong at offset ``pos`` of the buffer.
cdef struct Gather:
    Py_ssize_t pos
    const unsigned char* src
    Py_ssize_t n

cdef enum:
    MAX_GATHER = 4          # referenced pieces per packet at most (more are copied)
    GATHER_MIN = 1024       # shorter pieces are copied (cheaper than one more cipher call)

cdef class Buffer:
    cdef Py_buffer _view        # the exporter's buffer, held for the Buffer's lifetime
    cdef bint _has_view
    cdef object _obj            # wrapped object (or the bytearray allocated for writing)
    cdef object _mv             # lazily created memoryview of _obj, for zero-copy slices
    cdef unsigned char* _base   # start of the bytes
    cdef Py_ssize_t _pos        # read/write position
    cdef Py_ssize_t _size       # number of bytes available (capacity when writing)
    cdef bint _writable
    cdef unsigned char* _owned  # storage allocated by Buffer(capacity=...), freed on dealloc
    cdef int _exports           # memoryviews currently exported from this Buffer
    cdef Gather* _gather        # a send buffer's referenced pieces (enable_gather), or NULL
    cdef int _ngather           # ... how many the packet being built has
    # Compiled callers may retarget _base/_size/_pos at borrowed memory to parse it in
    # place; the Buffer only ever frees _owned. pull_view is refused on a retargeted buffer.

    cdef int c_need(self, Py_ssize_t n) except -1
    cdef int c_room(self, Py_ssize_t n) except -1
    cdef const unsigned char* c_pull_ptr(self, Py_ssize_t n) except NULL
    cdef unsigned char* c_push_ptr(self, Py_ssize_t n) except NULL
    cdef int c_pull_uint(self, int nbytes, uint64_t* out) except -1
    cdef int c_push_uint(self, uint64_t value, int nbytes) except -1
    cdef int c_pull_varint(self, uint64_t* out) except -1
    cdef int c_push_varint(self, uint64_t value) except -1
    cdef int c_push_varint_fixed(self, uint64_t value, int nbytes) except -1
    cdef int c_push_raw(self, const unsigned char* src, Py_ssize_t n) except -1
    # c_push_raw that may leave the bytes where they are (a send buffer whose sealer reads
    # them from ``src``: they must stay there, unchanged, until the packet is sealed);
    # c_gather copies them in (for any other reader of the packet)
    cdef int enable_gather(self) except -1
    cdef int c_push_ref(self, const unsigned char* src, Py_ssize_t n) except -1
    cdef void c_gather(self) noexcept
    cdef int c_push_object(self, object data) except -1
    cdef bytes c_pull_bytes(self, Py_ssize_t n)
    cdef object c_pull_view(self, Py_ssize_t n)


cdef class PacketHeader:
    cdef readonly int packet_type
    cdef readonly object version
    cdef readonly bytes dcid
    cdef readonly bytes scid
    cdef readonly bytes token
    cdef readonly object integrity_tag
    cdef readonly object supported_versions
    cdef readonly int first_byte
    cdef readonly Py_ssize_t pn_offset
    cdef readonly Py_ssize_t payload_end
    cdef readonly bint is_long


# Size in bytes of the minimal varint encoding of `value`; 0 if value >= 2**62. (Compiled modules
# of dquic use the inline primitives of dquic/_wire.pxd directly.)
cdef int c_varint_size(uint64_t value) noexcept nogil

# Argument checks of the Python-level encoders: TypeError/ValueError (local bugs, not peer input)
# with the argument's name in the message. arg_u62: an int in 0..2**62-1; arg_u64: an int >= 0
# (OverflowError beyond 64 bits); arg_cid: bytes-like of at most 20 bytes; arg_bytes_like returns
# its argument; byte_len: the length of a bytes-like object (TypeError for str and non-buffers).
cdef uint64_t arg_u62(object value, str name) except? 0xFFFFFFFFFFFFFFFFULL
cdef uint64_t arg_u64(object value, str name) except? 0xFFFFFFFFFFFFFFFFULL
cdef int arg_cid(object cid, str name) except -1
cdef object arg_bytes_like(object value, str name)
cdef Py_ssize_t byte_len(object data) except -1


# Point p/size at the bytes of a bytes-like ``data`` (TypeError for str and non-buffers); returns
# True when ``view`` was filled and must be released (PyBuffer_Release) after use. Inline: the
# single-call decoders open their input with it on every call.
cdef inline bint open_input(object data, Py_buffer* view, const unsigned char** p,
                            Py_ssize_t* size) except -1:
    if PyBytes_CheckExact(data):
        p[0] = <const unsigned char*>PyBytes_AS_STRING(data)
        size[0] = PyBytes_GET_SIZE(data)
        return False
    if isinstance(data, str):
        raise TypeError("expected a bytes-like object, got str")
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    p[0] = <const unsigned char*>view.buf
    size[0] = view.len
    return True

# Parse one packet header at buf's position (PROTOCOL.md §4/§5); buf is left at pn_offset.
cpdef PacketHeader pull_header(Buffer buf, Py_ssize_t short_dcid_len)
