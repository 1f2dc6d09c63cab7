# C-level interface of dquic._frames (frames of wire format v1, see PROTOCOL.md §7).
#
# The connection cimports the fast paths for the frequent frames from here, so that per-packet
# work never builds frame objects:
#
#     from dquic._frames cimport parse_ack_ranges, c_push_stream_frame_header
#
# Parsers raise ProtocolError on malformed peer input; writers raise ValueError when the write
# would pass the buffer's capacity (a local bug).
from libc.stdint cimport uint64_t

from dquic._codec cimport Buffer

# STREAM frame fast path. `frame_type` is the already-read type byte (0x08..0x0f); on return
# buf is positioned at the first data byte and `length` is the data length (to the end of the
# buffer when the LEN bit is clear). Checks length against the buffer and offset+length < 2**62.
cdef int pull_stream_frame_header(Buffer buf, uint64_t frame_type, uint64_t* stream_id,
                                  uint64_t* offset, uint64_t* length, bint* fin) except -1
# The same parse on raw memory: the fields after the type byte, from p[0:avail]. Returns the bytes
# consumed, or a negative fault code that stream_frame_header_error raises as ProtocolError
# (FRAME_ENCODING_ERROR). With data_follows False the length is not checked against avail
# (a STREAM frame header without its data).
cdef Py_ssize_t parse_stream_frame_fields(const unsigned char* p, Py_ssize_t avail,
                                          uint64_t frame_type, uint64_t* stream_id, uint64_t* offset,
                                          uint64_t* length, bint data_follows) noexcept nogil
cdef int stream_frame_header_error(Py_ssize_t code, uint64_t frame_type, uint64_t length,
                                   Py_ssize_t remaining) except -1
# A whole STREAM frame header whose type byte is at data[offset] (data: any bytes-like object):
# the offset, the type (0x08..0x0f) and the fields checked, ProtocolError otherwise; returns the
# offset of the first data byte.
cdef Py_ssize_t c_decode_stream_frame(object data, Py_ssize_t offset, uint64_t* stream_id,
                                      uint64_t* stream_offset, uint64_t* length, bint* fin) except -1
# Writes a STREAM frame header (LEN bit always set, OFF bit iff offset > 0); the caller then
# writes exactly `length` data bytes.
cdef int c_push_stream_frame_header(Buffer buf, uint64_t stream_id, uint64_t offset,
                                    uint64_t length, bint fin) except -1
cdef int c_stream_frame_header_size(uint64_t stream_id, uint64_t offset,
                                    uint64_t length) noexcept nogil

# ACK frame body after its type byte (RFC 9000 §19.3): ascending half-open (start, stop) ranges
# (a list, or with `flat` a flat tuple), the raw ACK Delay in delay_out, pos advanced past the
# last range; ProtocolError (no frame prefix) on malformed input. An ACK_ECN frame's three
# counts follow: parse_ecn.
cdef object parse_ack_ranges(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos,
                             Py_ssize_t max_ack_ranges, uint64_t* delay_out, bint flat)
cdef tuple parse_ecn(const unsigned char* p, Py_ssize_t size, Py_ssize_t* pos)
# One varint at p[pos] (p[0:size] the input): the position after it; ProtocolError when truncated.
cdef Py_ssize_t read_varint_at(const unsigned char* p, Py_ssize_t size, Py_ssize_t pos,
                               uint64_t* out) except -1
