"""Pure-Python baseline of the dquic v1 encodings, written with ``struct``.

It implements the same wire format as the compiled ``dquic._codec`` (varints, short/long
headers, STREAM and ACK frames) the way a straightforward Python implementation would: a
cursor object over a bytes/bytearray plus ``struct`` packing. The benchmarks run both and
compare; the tests in bench/test_bench_codec.py also check that both produce the same bytes.
"""
from __future__ import annotations

import struct

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class DecodeError(ValueError):
    pass


class PyBuffer:
    """A read/write cursor over a bytes-like object (writing appends to a bytearray)."""

    __slots__ = ("data", "pos")

    def __init__(self, data=None):
        self.data = bytearray() if data is None else data
        self.pos = 0

    # -- reading ---------------------------------------------------------------------------
    def need(self, n):
        if self.pos + n > len(self.data):
            raise DecodeError("truncated")

    def pull_uint8(self):
        self.need(1)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def pull_bytes(self, n):
        self.need(n)
        v = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return v

    def pull_view(self, n):
        self.need(n)
        v = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return v

    def pull_uint(self, n):
        self.need(n)
        if n == 1:
            v = self.data[self.pos]
        elif n == 2:
            v = _U16.unpack_from(self.data, self.pos)[0]
        elif n == 4:
            v = _U32.unpack_from(self.data, self.pos)[0]
        elif n == 8:
            v = _U64.unpack_from(self.data, self.pos)[0]
        else:
            v = int.from_bytes(self.data[self.pos:self.pos + n], "big")
        self.pos += n
        return v

    def pull_varint(self):
        self.need(1)
        first = self.data[self.pos]
        kind = first >> 6
        if kind == 0:
            self.pos += 1
            return first
        if kind == 1:
            self.need(2)
            v = _U16.unpack_from(self.data, self.pos)[0] & 0x3FFF
            self.pos += 2
            return v
        if kind == 2:
            self.need(4)
            v = _U32.unpack_from(self.data, self.pos)[0] & 0x3FFFFFFF
            self.pos += 4
            return v
        self.need(8)
        v = _U64.unpack_from(self.data, self.pos)[0] & 0x3FFFFFFFFFFFFFFF
        self.pos += 8
        return v

    # -- writing ---------------------------------------------------------------------------
    def push_uint8(self, v):
        self.data += _U8.pack(v)

    def push_uint(self, v, n):
        if n == 1:
            self.data += _U8.pack(v)
        elif n == 2:
            self.data += _U16.pack(v)
        elif n == 4:
            self.data += _U32.pack(v)
        else:
            self.data += v.to_bytes(n, "big")

    def push_bytes(self, b):
        self.data += b

    def push_varint(self, v):
        if v < 0x40:
            self.data += _U8.pack(v)
        elif v < 0x4000:
            self.data += _U16.pack(v | 0x4000)
        elif v < 0x40000000:
            self.data += _U32.pack(v | 0x80000000)
        elif v < 0x4000000000000000:
            self.data += _U64.pack(v | 0xC000000000000000)
        else:
            raise ValueError("varint too large")


# -- headers -------------------------------------------------------------------------------
def push_short_header(buf, dcid, pn, pn_len, key_phase=0, spin=0):
    buf.push_uint8(0x40 | (spin << 5) | (key_phase << 2) | (pn_len - 1))
    buf.push_bytes(dcid)
    buf.push_uint(pn, pn_len)


def push_long_header(buf, ptype, version, dcid, scid, token, pn, pn_len):
    buf.push_uint8(0xC0 | (ptype << 4) | (pn_len - 1))
    buf.push_uint(version, 4)
    buf.push_uint8(len(dcid))
    buf.push_bytes(dcid)
    buf.push_uint8(len(scid))
    buf.push_bytes(scid)
    if ptype == 0:
        buf.push_varint(len(token))
        buf.push_bytes(token)
    length_offset = len(buf.data)
    buf.push_uint(0x4000, 2)
    buf.push_uint(pn, pn_len)
    return length_offset


def patch_length(buf, offset, value):
    _U16.pack_into(buf.data, offset, 0x4000 | value)


def pull_header(buf, short_dcid_len):
    """Returns (packet_type, version, dcid, scid, token, pn_offset, payload_end)."""
    first = buf.pull_uint8()
    if not first & 0x40:
        raise DecodeError("fixed bit")
    if first & 0x80:
        version = buf.pull_uint(4)
        n = buf.pull_uint8()
        if n > 20:
            raise DecodeError("cid")
        dcid = buf.pull_bytes(n)
        n = buf.pull_uint8()
        if n > 20:
            raise DecodeError("cid")
        scid = buf.pull_bytes(n)
        ptype = (first >> 4) & 3
        token = b""
        if ptype == 0:
            token = buf.pull_bytes(buf.pull_varint())
        length = buf.pull_varint()
        if buf.pos + length > len(buf.data):
            raise DecodeError("length")
        return ptype, version, dcid, scid, token, buf.pos, buf.pos + length
    dcid = buf.pull_bytes(short_dcid_len)
    return 4, None, dcid, b"", b"", buf.pos, len(buf.data)


# -- STREAM frames -------------------------------------------------------------------------
class PyStreamFrame:
    __slots__ = ("stream_id", "offset", "data", "fin")

    def __init__(self, stream_id, offset, data, fin):
        self.stream_id = stream_id
        self.offset = offset
        self.data = data
        self.fin = fin


def push_stream_frame(buf, stream_id, offset, data, fin):
    buf.push_uint8(0x08 | 0x02 | (0x04 if offset else 0) | (0x01 if fin else 0))
    buf.push_varint(stream_id)
    if offset:
        buf.push_varint(offset)
    buf.push_varint(len(data))
    buf.push_bytes(data)


def pull_stream_frame_header(buf):
    """Reads the type byte and header; returns (stream_id, offset, length, fin)."""
    ftype = buf.pull_uint8()
    if not 0x08 <= ftype <= 0x0F:
        raise DecodeError("not a STREAM frame")
    stream_id = buf.pull_varint()
    offset = buf.pull_varint() if ftype & 0x04 else 0
    if ftype & 0x02:
        length = buf.pull_varint()
        if length > len(buf.data) - buf.pos:
            raise DecodeError("length")
    else:
        length = len(buf.data) - buf.pos
    if offset + length > 0x3FFFFFFFFFFFFFFF:
        raise DecodeError("offset")
    return stream_id, offset, length, bool(ftype & 0x01)


def pull_stream_frame(buf):
    stream_id, offset, length, fin = pull_stream_frame_header(buf)
    return PyStreamFrame(stream_id, offset, buf.pull_view(length), fin)


# -- ACK frames ----------------------------------------------------------------------------
def push_ack_frame(buf, ranges, ack_delay):
    """``ranges`` ascending half-open (start, stop) pairs."""
    buf.push_uint8(0x02)
    start, stop = ranges[-1]
    buf.push_varint(stop - 1)
    buf.push_varint(ack_delay)
    buf.push_varint(len(ranges) - 1)
    buf.push_varint(stop - 1 - start)
    below = start
    for start, stop in reversed(ranges[:-1]):
        buf.push_varint(below - stop - 1)
        buf.push_varint(stop - 1 - start)
        below = start


# -- single-call forms ---------------------------------------------------------------------
# The same signatures and results as the compiled single-call entry points
# (dquic._codec.encode_stream_frame & co.), built from the cursor functions above, so that
# each benchmark compares one call against one call.
def encode_short_header(dcid, pn, pn_len, key_phase=0, spin=0):
    buf = PyBuffer()
    push_short_header(buf, dcid, pn, pn_len, key_phase, spin)
    return bytes(buf.data)


def decode_short_header(data, dcid_len, offset=0):
    """Returns (dcid, pn_truncated, pn_len, key_phase, spin, payload_offset)."""
    buf = PyBuffer(data)
    buf.pos = offset
    first = data[offset] if offset < len(data) else 0
    if first & 0x80:
        raise DecodeError("long header")
    _, _, dcid, _, _, pn_offset, _ = pull_header(buf, dcid_len)
    pn_len = (first & 0x03) + 1
    pn = buf.pull_uint(pn_len)
    return dcid, pn, pn_len, (first >> 2) & 1, (first >> 5) & 1, buf.pos


def encode_long_header(ptype, version, dcid, scid, token, pn, pn_len, payload_length=0):
    buf = PyBuffer()
    off = push_long_header(buf, ptype, version, dcid, scid, token, pn, pn_len)
    patch_length(buf, off, pn_len + payload_length)
    return bytes(buf.data)


def decode_long_header(data, offset=0):
    """Returns (packet_type, version, dcid, scid, token, pn_truncated, pn_len, payload_offset,
    packet_end)."""
    buf = PyBuffer(data)
    buf.pos = offset
    ptype, version, dcid, scid, token, pn_offset, end = pull_header(buf, 0)
    pn_len = (data[offset] & 0x03) + 1
    if end - pn_offset < pn_len:
        raise DecodeError("length")
    pn = buf.pull_uint(pn_len)
    return ptype, version, dcid, scid, token, pn, pn_len, buf.pos, end


def encode_stream_frame(stream_id, offset, data, fin=False):
    buf = PyBuffer()
    push_stream_frame(buf, stream_id, offset, data, fin)
    return bytes(buf.data)


def decode_stream_frame(data, offset=0):
    """Returns (stream_id, stream_offset, fin, data_start, data_end)."""
    buf = PyBuffer(data)
    buf.pos = offset
    stream_id, stream_offset, length, fin = pull_stream_frame_header(buf)
    return stream_id, stream_offset, fin, buf.pos, buf.pos + length


def encode_ack(ranges, ack_delay):
    buf = PyBuffer()
    push_ack_frame(buf, ranges, ack_delay)
    return bytes(buf.data)


def decode_ack(data, offset=0, max_ranges=256):
    """Returns (bounds, ack_delay, ecn, next_offset), bounds = [start0, stop0, start1, ...]
    ascending, in a list (the natural container here; the compiled decode_ack returns the same
    values in a tuple). The only ACK parser of the baseline: nothing here needs (start, stop)
    tuples."""
    buf = PyBuffer(data)
    buf.pos = offset
    ftype = buf.pull_uint8()
    if ftype not in (0x02, 0x03):
        raise DecodeError("not an ACK frame")
    largest = buf.pull_varint()
    delay = buf.pull_varint()
    count = buf.pull_varint()
    first = buf.pull_varint()
    if count >= max_ranges or count > (len(buf.data) - buf.pos) // 2:
        raise DecodeError("range count")
    if first > largest:
        raise DecodeError("underflow")
    smallest = largest - first
    bounds = [largest + 1, smallest]  # highest range first, reversed below
    append = bounds.append
    for _ in range(count):
        gap = buf.pull_varint()
        length = buf.pull_varint()
        if smallest < gap + 2:
            raise DecodeError("underflow")
        largest = smallest - gap - 2
        if length > largest:
            raise DecodeError("underflow")
        smallest = largest - length
        append(largest + 1)
        append(smallest)
    bounds.reverse()
    ecn = None
    if ftype == 0x03:
        ecn = (buf.pull_varint(), buf.pull_varint(), buf.pull_varint())
    return bounds, delay, ecn, buf.pos
