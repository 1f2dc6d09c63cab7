"""Tests of dquic._codec: varints, packet numbers, headers, frames and malformed input."""
from __future__ import annotations

import pytest

from dquic._codec import (
    DQUIC_VERSION_1,
    PACKET_HANDSHAKE,
    PACKET_INITIAL,
    PACKET_RETRY,
    PACKET_SHORT,
    PACKET_VERSION_NEGOTIATION,
    VARINT_MAX,
    Buffer,
    check_reserved_bits,
    decode_packet_number,
    decode_varint,
    encode_packet_number,
    encode_retry,
    encode_varint,
    encode_version_negotiation,
    key_phase_of,
    packet_number_length,
    parse_version_invariant,
    patch_length,
    pull_header,
    pull_packet_number,
    push_long_header,
    push_short_header,
    varint_size,
)
from dquic._frames import (
    FRAME_DATAGRAM_LEN,
    FRAME_PADDING,
    FRAME_STREAM,
    AckFrame,
    ConnectionCloseFrame,
    CryptoFrame,
    DataBlockedFrame,
    DatagramFrame,
    HandshakeDoneFrame,
    MaxDataFrame,
    MaxStreamDataFrame,
    MaxStreamsFrame,
    NewConnectionIdFrame,
    NewTokenFrame,
    PaddingFrame,
    PathChallengeFrame,
    PathResponseFrame,
    PingFrame,
    ResetStreamFrame,
    RetireConnectionIdFrame,
    StopSendingFrame,
    StreamDataBlockedFrame,
    StreamFrame,
    StreamsBlockedFrame,
    check_frame_allowed,
    decode_frames,
    decode_stream_frame_header,
    encode_frames,
    frame_size,
    pull_frame,
    push_ack_frame,
    push_frame,
    push_stream_frame_header,
    stream_frame_header_size,
)
from dquic.errors import ErrorCode, ProtocolError
from test_codec_reference import (
    ref_frame,
    ref_long_header,
    ref_short_header,
    ref_stream_header,
    ref_varint,
)

# One instance of every frame class, in both variants where the wire type has two forms.
SAMPLE_FRAMES = [
    PaddingFrame(1),
    PaddingFrame(5),
    PingFrame(),
    AckFrame([(0, 1)], 0),
    AckFrame([(0, 5), (7, 10), (100, 1000)], 25),
    AckFrame([(3, 4)], 2**20, (1, 2, 3)),
    ResetStreamFrame(3, 0x10, 70000),
    StopSendingFrame(2**62 - 1, 7),
    CryptoFrame(0, b"hello crypto"),
    CryptoFrame(1 << 40, b""),
    NewTokenFrame(b"t" * 50),
    StreamFrame(0, 0, b"", fin=True),
    StreamFrame(5, 0, b"abc"),
    StreamFrame(2**62 - 1, 2**30, b"x" * 300, fin=False),
    StreamFrame(9, 77, b"no length", fin=True, has_length=False),
    MaxDataFrame(2**62 - 1),
    MaxStreamDataFrame(4, 65536),
    MaxStreamsFrame(2**60),
    DataBlockedFrame(12345),
    StreamDataBlockedFrame(8, 9),
    StreamsBlockedFrame(100),
    NewConnectionIdFrame(7, 3, b"\x01" * 20, b"\xaa" * 16),
    NewConnectionIdFrame(0, 0, b"\x02", b"\xbb" * 16),
    RetireConnectionIdFrame(63),
    PathChallengeFrame(b"12345678"),
    PathResponseFrame(b"abcdefgh"),
    ConnectionCloseFrame(ErrorCode.PROTOCOL_VIOLATION, 0x08, b"bad stream"),
    ConnectionCloseFrame(0x1234, None, b"bye", application=True),
    HandshakeDoneFrame(),
    DatagramFrame(b"datagram!"),
    DatagramFrame(b"to the end", has_length=False),
]

# Frames whose encoding is self-delimiting (no "to the end of the packet" form and not padding)
DELIMITED = [f for f in SAMPLE_FRAMES
             if not isinstance(f, PaddingFrame) and getattr(f, "has_length", True)]


def enc(frame) -> bytes:
    buf = Buffer(capacity=frame_size(frame))
    push_frame(buf, frame)
    assert buf.eof()
    return buf.data


def raises_protocol(data, match=None, code=None, **kw):
    with pytest.raises(ProtocolError, match=match) as info:
        decode_frames(data, **kw)
    if code is not None:
        assert info.value.error_code == code
    return info.value


# ---------------------------------------------------------------------------------------------
# Varints
# ---------------------------------------------------------------------------------------------
RFC_VARINTS = [
    ("c2197c5eff14e88c", 151288809941952652),
    ("9d7f3e7d", 494878333),
    ("7bbd", 15293),
    ("25", 37),
    ("4025", 37),
]


@pytest.mark.parametrize("hexdata,value", RFC_VARINTS)
def test_varint_rfc9000_a1_vectors(hexdata, value):
    data = bytes.fromhex(hexdata)
    assert decode_varint(data) == (value, len(data))
    buf = Buffer(data)
    assert buf.pull_varint() == value
    assert buf.eof()


def test_varint_encoder_is_minimal():
    assert encode_varint(37) == b"\x25"  # never the 2-byte form of the RFC example
    assert encode_varint(15293) == bytes.fromhex("7bbd")
    assert encode_varint(494878333) == bytes.fromhex("9d7f3e7d")
    assert encode_varint(151288809941952652) == bytes.fromhex("c2197c5eff14e88c")


@pytest.mark.parametrize("value,size", [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4),
                                        (2**30 - 1, 4), (2**30, 8), (2**62 - 1, 8)])
def test_varint_boundaries(value, size):
    assert varint_size(value) == size
    assert encode_varint(value) == ref_varint(value)
    assert decode_varint(encode_varint(value)) == (value, size)


def test_varint_non_minimal_encodings_accepted():
    for width in (2, 4, 8):
        buf = Buffer(capacity=8)
        buf.push_varint_fixed(5, width)
        assert len(buf.data) == width
        assert decode_varint(buf.data) == (5, width)


@pytest.mark.parametrize("bad", [-1, 2**62, 2**64])
def test_varint_encode_out_of_range(bad):
    with pytest.raises((ValueError, OverflowError)):
        encode_varint(bad)
    with pytest.raises((ValueError, OverflowError)):
        Buffer(capacity=8).push_varint(bad)


def test_varint_encode_type_errors():
    for bad in ("1", 1.0, None):
        with pytest.raises(TypeError):
            encode_varint(bad)


@pytest.mark.parametrize("data", [b"", b"\x40", b"\x80\x00\x00", b"\xc0" + b"\x00" * 6])
def test_varint_truncated(data):
    with pytest.raises(ProtocolError, match="truncated varint"):
        decode_varint(data)


def test_decode_varint_offset():
    assert decode_varint(b"\xff\x25\x40\x01", 1) == (37, 2)
    assert decode_varint(b"\xff\x25\x40\x01", 2) == (1, 4)
    with pytest.raises(ProtocolError):
        decode_varint(b"\x25", 5)


def test_push_varint_fixed_rejects_too_small_width():
    with pytest.raises(ValueError):
        Buffer(capacity=8).push_varint_fixed(64, 1)
    with pytest.raises(ValueError):
        Buffer(capacity=8).push_varint_fixed(1, 3)


# ---------------------------------------------------------------------------------------------
# Packet numbers (RFC 9000 Appendix A.2 / A.3)
# ---------------------------------------------------------------------------------------------
def test_packet_number_encode_rfc_a2_examples():
    # 0xac5c02 with 0xabe8b3 acked: 29,519 unacked -> 16 bits
    assert encode_packet_number(0xAC5C02, 0xABE8B3) == (0x5C02, 2)
    # 0xace8fe with 0xabe8b3 acked: needs 18 bits -> 3 bytes
    assert encode_packet_number(0xACE8FE, 0xABE8B3) == (0xACE8FE & 0xFFFFFF, 3)


def test_packet_number_decode_rfc_a3_example():
    assert decode_packet_number(0x9B32, 2, 0xA82F30EA) == 0xA82F9B32


@pytest.mark.parametrize("pn,acked,length", [(0, None, 1), (0, -1, 1), (126, None, 1),
                                             (127, None, 2), (200, 100, 1), (228, 100, 2),
                                             (2**30, 2**30 - 1, 1), (2**24, None, 4),
                                             (2**32, 2**32 - 2**23, 4), (2**40 + 5, 2**40 - 2**30, 4)])
def test_packet_number_lengths(pn, acked, length):
    truncated, n = encode_packet_number(pn, acked)
    assert n == length
    assert truncated == pn & ((1 << (8 * n)) - 1)
    largest = -1 if acked is None else acked
    assert decode_packet_number(truncated, n, largest) == pn


def test_packet_number_encode_errors():
    with pytest.raises(ValueError):
        encode_packet_number(2**31, None)  # more than 2**31 unacknowledged
    with pytest.raises(ValueError):
        encode_packet_number(10, 10)
    with pytest.raises(ValueError):
        encode_packet_number(-1, None)
    with pytest.raises(TypeError):
        encode_packet_number("1", None)


def test_packet_number_decode_wraps_both_ways():
    # candidate too far below the expected value -> add a window
    assert decode_packet_number(0x01, 1, 0xFF) == 0x101
    # candidate too far above -> subtract a window
    assert decode_packet_number(0xFF, 1, 0x100) == 0xFF
    # near 2**62 no addition past the limit
    top = 2**62 - 1
    assert decode_packet_number(top & 0xFF, 1, top - 1) == top


def test_packet_number_decode_argument_errors():
    with pytest.raises(ValueError):
        decode_packet_number(0x100, 1, 0)
    with pytest.raises(ValueError):
        decode_packet_number(1, 5, 0)
    with pytest.raises(TypeError):
        decode_packet_number(1.0, 1, 0)


def test_first_byte_helpers():
    assert packet_number_length(0x43) == 4
    assert packet_number_length(0xC0) == 1
    assert key_phase_of(0x44) == 1 and key_phase_of(0x40) == 0
    check_reserved_bits(0xC3)
    check_reserved_bits(0x67)
    with pytest.raises(ProtocolError, match="reserved") as info:
        check_reserved_bits(0xC4)
    assert info.value.error_code == ErrorCode.PROTOCOL_VIOLATION
    with pytest.raises(ProtocolError, match="reserved"):
        check_reserved_bits(0x48)


# ---------------------------------------------------------------------------------------------
# Buffer
# ---------------------------------------------------------------------------------------------
def test_buffer_read_fixed_width():
    buf = Buffer(bytes(range(1, 16)))
    assert buf.capacity == 15
    assert buf.pull_uint8() == 1
    assert buf.pull_uint16() == 0x0203
    assert buf.pull_uint32() == 0x04050607
    assert buf.pull_uint64() == 0x08090A0B0C0D0E0F
    assert buf.eof() and buf.remaining == 0
    with pytest.raises(ProtocolError, match="truncated"):
        buf.pull_uint8()


def test_buffer_write_and_data():
    buf = Buffer(capacity=16)
    buf.push_uint8(1)
    buf.push_uint16(0x0203)
    buf.push_uint32(0x04050607)
    buf.push_uint64(0x08090A0B0C0D0E0F)
    assert buf.data == bytes(range(1, 16))
    assert buf.tell() == 15 and buf.remaining == 1
    assert buf.data_slice(1, 3) == b"\x02\x03"
    with pytest.raises(ValueError, match="capacity"):
        buf.push_uint16(0)
    buf.push_uint8(0xFF)
    with pytest.raises(ValueError):
        buf.push_bytes(b"x")
    with pytest.raises(ValueError):
        buf.data_slice(3, 100)


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_fixed_width_integers_round_trip_and_refuse_what_does_not_fit(bits):
    buf = Buffer(capacity=16)
    top = (1 << bits) - 1
    getattr(buf, f"push_uint{bits}")(top)
    assert buf.tell() == bits // 8
    with pytest.raises(ValueError if bits < 64 else OverflowError):
        getattr(buf, f"push_uint{bits}")(top + 1)
    assert buf.tell() == bits // 8  # nothing written
    assert getattr(Buffer(bytes(buf.data[:buf.tell()])), f"pull_uint{bits}")() == top


def test_buffer_readonly_wrapped_bytes():
    buf = Buffer(b"abc")
    with pytest.raises(ValueError, match="read-only"):
        buf.push_uint8(1)


def test_buffer_wraps_writable_bytearray_in_place():
    ba = bytearray(4)
    buf = Buffer(ba)
    buf.push_uint16(0xBEEF)
    assert ba[:2] == b"\xbe\xef"


def test_buffer_seek_and_views():
    data = b"0123456789"
    buf = Buffer(data)
    buf.seek(3)
    view = buf.pull_view(4)
    assert isinstance(view, memoryview) and view.obj is data and bytes(view) == b"3456"
    assert buf.pull_bytes(3) == b"789"
    with pytest.raises(ValueError):
        buf.seek(11)
    with pytest.raises(ValueError):
        buf.seek(-1)
    buf.seek(10)
    assert buf.eof()
    with pytest.raises(ProtocolError):
        buf.pull_view(1)
    with pytest.raises(ProtocolError):
        buf.pull_bytes(-1)


def test_buffer_pull_view_on_a_write_buffer_outlives_it():
    buf = Buffer(capacity=10)
    buf.push_bytes(b"abcdefghij")
    buf.seek(2)
    view = buf.pull_view(3)
    del buf
    assert bytes(view) == b"cde"


@pytest.mark.parametrize("call", [
    lambda b: b.push_varint(1.5),
    lambda b: b.push_uint8(2.0),
    lambda b: b.push_uint64(None),
    lambda b: b.push_varint_fixed(1, 2.0),
    lambda b: push_stream_frame_header(b, 1.5, 0, 1),
    lambda b: push_stream_frame_header(b, 1, "0", 1),
    lambda b: push_short_header(b, b"", 1.0, 1),
    lambda b: push_short_header(b, b"", 1, 1, key_phase=1.0),
    lambda b: push_long_header(b, 0.0, DQUIC_VERSION_1, b"", b"", b"", 0, 1),
    lambda b: push_long_header(b, 0, float(DQUIC_VERSION_1), b"", b"", b"", 0, 1),
    lambda b: pull_packet_number(b, 1.0),
    lambda b: patch_length(b, 0, 3.0),
    lambda b: push_ack_frame(b, [(0, 1.5)], 0),
    lambda b: push_ack_frame(b, [(0, 1)], 0.0),
    lambda b: packet_number_length(0.0),
])
def test_encoders_reject_non_int_arguments(call):
    """Floats are never silently truncated to ints."""
    with pytest.raises(TypeError):
        call(Buffer(capacity=64))


def test_encoders_reject_negative_arguments():
    for call in (lambda b: b.push_varint(-1), lambda b: b.push_uint8(-1),
                 lambda b: push_stream_frame_header(b, -1, 0, 1), lambda b: push_short_header(b, b"", -1, 1)):
        with pytest.raises(ValueError):
            call(Buffer(capacity=64))


def test_buffer_accepts_memoryview_and_non_byte_formats():
    import array

    arr = array.array("H", [0x0102, 0x0304])
    buf = Buffer(memoryview(arr))
    assert buf.capacity == 4
    assert len(buf.pull_view(3)) == 3
    with pytest.raises(TypeError):
        Buffer("text")
    with pytest.raises(ValueError):
        Buffer(capacity=-1)


# ---------------------------------------------------------------------------------------------
# Packet headers
# ---------------------------------------------------------------------------------------------
def build_long(ptype, dcid=b"\x11" * 8, scid=b"\x22" * 5, token=b"", pn=7, pn_len=2, payload=b"P" * 20):
    buf = Buffer(capacity=200 + len(payload) + len(token))
    off = push_long_header(buf, ptype, DQUIC_VERSION_1, dcid, scid, token, pn, pn_len)
    buf.push_bytes(payload)
    patch_length(buf, off, pn_len + len(payload))
    return buf.data


@pytest.mark.parametrize("ptype,token", [(PACKET_INITIAL, b""), (PACKET_INITIAL, b"tok" * 30),
                                         (PACKET_HANDSHAKE, b"")])
@pytest.mark.parametrize("pn_len", [1, 2, 3, 4])
def test_long_header_round_trip(ptype, token, pn_len):
    pn = (1 << (8 * pn_len - 1)) + 3
    data = build_long(ptype, token=token, pn=pn, pn_len=pn_len)
    assert data == ref_long_header(ptype, DQUIC_VERSION_1, b"\x11" * 8, b"\x22" * 5, token, pn, pn_len,
                                   pn_len + 20) + b"P" * 20
    buf = Buffer(data)
    hdr = pull_header(buf, 8)
    assert hdr.is_long and hdr.packet_type == ptype and hdr.version == DQUIC_VERSION_1
    assert hdr.dcid == b"\x11" * 8 and hdr.scid == b"\x22" * 5 and hdr.token == token
    assert buf.tell() == hdr.pn_offset and hdr.payload_end == len(data) and hdr.length == pn_len + 20
    assert hdr.first_byte == data[0]
    assert pull_packet_number(buf, packet_number_length(hdr.first_byte)) == pn
    assert hdr.integrity_tag is None and hdr.supported_versions is None


@pytest.mark.parametrize("key_phase,spin", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_short_header_round_trip(key_phase, spin):
    buf = Buffer(capacity=64)
    push_short_header(buf, b"\x33" * 8, 0x1234, 2, key_phase=key_phase, spin=spin)
    buf.push_bytes(b"payload")
    data = buf.data
    assert data == ref_short_header(b"\x33" * 8, 0x1234, 2, key_phase, spin) + b"payload"
    rbuf = Buffer(data)
    hdr = pull_header(rbuf, 8)
    assert not hdr.is_long and hdr.packet_type == PACKET_SHORT and hdr.version is None
    assert hdr.dcid == b"\x33" * 8 and hdr.pn_offset == 9 and hdr.payload_end == len(data)
    assert hdr.key_phase == key_phase and hdr.spin_bit == spin
    assert pull_packet_number(rbuf, 2) == 0x1234


def test_short_header_zero_length_cid():
    buf = Buffer(capacity=8)
    push_short_header(buf, b"", 5, 1)
    hdr = pull_header(Buffer(buf.data), 0)
    assert hdr.dcid == b"" and hdr.pn_offset == 1


def test_retry_round_trip():
    pseudo = encode_retry(DQUIC_VERSION_1, b"\x01" * 4, b"\x02" * 6, b"retry-token")
    data = encode_retry(DQUIC_VERSION_1, b"\x01" * 4, b"\x02" * 6, b"retry-token", b"T" * 16)
    assert data == pseudo + b"T" * 16
    buf = Buffer(data)
    hdr = pull_header(buf, 0)
    assert hdr.packet_type == PACKET_RETRY and hdr.token == b"retry-token"
    assert hdr.integrity_tag == b"T" * 16 and hdr.pn_offset == -1 and buf.eof()
    assert hdr.dcid == b"\x01" * 4 and hdr.scid == b"\x02" * 6


def test_retry_encode_errors():
    with pytest.raises(ValueError):
        encode_retry(DQUIC_VERSION_1, b"", b"", b"")
    with pytest.raises(ValueError):
        encode_retry(DQUIC_VERSION_1, b"", b"", b"t", b"short")
    with pytest.raises(ValueError):
        encode_retry(0, b"", b"", b"t")


def test_version_negotiation_round_trip():
    data = encode_version_negotiation(b"\x05" * 3, b"\x06" * 20, [DQUIC_VERSION_1, 0x0A0A0A0A])
    assert data[0] & 0x80 and data[1:5] == b"\x00\x00\x00\x00"
    buf = Buffer(data)
    hdr = pull_header(buf, 0)
    assert hdr.packet_type == PACKET_VERSION_NEGOTIATION and hdr.version == 0
    assert hdr.supported_versions == [DQUIC_VERSION_1, 0x0A0A0A0A]
    assert hdr.dcid == b"\x05" * 3 and hdr.scid == b"\x06" * 20 and buf.eof()
    with pytest.raises(ValueError):
        encode_version_negotiation(b"", b"", [])


def test_coalesced_packets():
    first = build_long(PACKET_INITIAL, payload=b"I" * 30)
    second = build_long(PACKET_HANDSHAKE, payload=b"H" * 10)
    short = ref_short_header(b"\x11" * 8, 9, 1) + b"S" * 5
    datagram = first + second + short
    buf = Buffer(datagram)
    types = []
    while not buf.eof():
        hdr = pull_header(buf, 8)
        types.append(hdr.packet_type)
        buf.seek(hdr.payload_end)
    assert types == [PACKET_INITIAL, PACKET_HANDSHAKE, PACKET_SHORT]


def test_parse_version_invariant():
    data = build_long(PACKET_INITIAL)
    assert parse_version_invariant(data) == (True, DQUIC_VERSION_1, b"\x11" * 8, b"\x22" * 5)
    other = bytes([0xC0]) + (0x0A1A2A3A).to_bytes(4, "big") + bytes([30]) + b"d" * 30 + b"\x01s"
    assert parse_version_invariant(other) == (True, 0x0A1A2A3A, b"d" * 30, b"s")
    assert parse_version_invariant(b"\x40abc") == (False, None, b"", None)
    with pytest.raises(ProtocolError):
        parse_version_invariant(b"\xc0\x00")


def test_push_header_argument_errors():
    buf = Buffer(capacity=100)
    with pytest.raises(ValueError):
        push_long_header(buf, PACKET_SHORT, DQUIC_VERSION_1, b"", b"", b"", 0, 1)
    with pytest.raises(ValueError):
        push_long_header(buf, PACKET_HANDSHAKE, DQUIC_VERSION_1, b"", b"", b"tok", 0, 1)
    with pytest.raises(ValueError):
        push_long_header(buf, PACKET_INITIAL, DQUIC_VERSION_1, b"x" * 21, b"", b"", 0, 1)
    with pytest.raises(ValueError):
        push_long_header(buf, PACKET_INITIAL, DQUIC_VERSION_1, b"", b"", b"", 256, 1)
    with pytest.raises(ValueError):
        push_short_header(buf, b"", 0, 5)
    with pytest.raises(ValueError):
        patch_length(buf, 0, 16384)
    with pytest.raises(TypeError):
        push_short_header(buf, "cid", 0, 1)


# -- malformed headers ----------------------------------------------------------------------
def all_truncations_fail(data, dcid_len):
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            pull_header(Buffer(data[:cut]), dcid_len)


def test_long_header_truncated_at_every_byte():
    data = build_long(PACKET_INITIAL, token=b"tk", payload=b"")
    # the packet number is not part of the header parse: cut inside header fields only
    header_len = len(data) - 2
    for cut in range(header_len):
        with pytest.raises(ProtocolError):
            pull_header(Buffer(data[:cut]), 8)


def test_short_header_truncated():
    with pytest.raises(ProtocolError, match="truncated"):
        pull_header(Buffer(b"\x40\x01\x02"), 8)
    with pytest.raises(ProtocolError, match="truncated"):
        pull_header(Buffer(b""), 0)


def test_retry_and_vn_truncated_at_every_byte():
    all_truncations_fail(encode_retry(DQUIC_VERSION_1, b"\x01" * 4, b"\x02" * 6, b"t", b"T" * 16), 0)
    vn = encode_version_negotiation(b"\x05" * 3, b"\x06" * 2, [DQUIC_VERSION_1])
    for cut in range(len(vn)):
        with pytest.raises(ProtocolError):
            pull_header(Buffer(vn[:cut]), 0)


def test_header_fixed_bit_zero():
    data = bytearray(build_long(PACKET_INITIAL))
    data[0] &= ~0x40
    with pytest.raises(ProtocolError, match="fixed bit"):
        pull_header(Buffer(bytes(data)), 8)
    with pytest.raises(ProtocolError, match="fixed bit"):
        pull_header(Buffer(b"\x00" + b"\x00" * 12), 8)


def test_header_cid_too_long():
    data = bytearray(build_long(PACKET_INITIAL))
    data[5] = 21
    with pytest.raises(ProtocolError, match="DCID length 21"):
        pull_header(Buffer(bytes(data)), 8)
    data = bytearray(build_long(PACKET_HANDSHAKE, dcid=b""))
    data[6] = 200
    with pytest.raises(ProtocolError, match="SCID length 200"):
        pull_header(Buffer(bytes(data)), 8)


def test_header_length_beyond_datagram():
    data = build_long(PACKET_HANDSHAKE, payload=b"x" * 10)
    with pytest.raises(ProtocolError, match="Length field"):
        pull_header(Buffer(data[:-1]), 8)


def test_header_token_beyond_datagram():
    data = bytes([0xC0]) + DQUIC_VERSION_1.to_bytes(4, "big") + b"\x00\x00" + ref_varint(500) + b"x" * 10
    with pytest.raises(ProtocolError, match="token length"):
        pull_header(Buffer(data), 0)


def test_header_unknown_version_and_zero_rtt():
    data = bytearray(build_long(PACKET_INITIAL))
    data[1:5] = (0x0A0A0A0A).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="unsupported version"):
        pull_header(Buffer(bytes(data)), 8)
    data = bytearray(build_long(PACKET_HANDSHAKE))
    data[0] = (data[0] & ~0x30) | 0x10
    with pytest.raises(ProtocolError, match="0-RTT"):
        pull_header(Buffer(bytes(data)), 8)


def test_version_negotiation_bad_list():
    base = bytes([0x80]) + b"\x00" * 4 + b"\x00\x00"
    with pytest.raises(ProtocolError, match="multiple of 4"):
        pull_header(Buffer(base), 0)
    with pytest.raises(ProtocolError, match="multiple of 4"):
        pull_header(Buffer(base + b"\x00\x00\x00\x01\x02"), 0)


def test_retry_too_short():
    base = bytes([0xF0]) + DQUIC_VERSION_1.to_bytes(4, "big") + b"\x00\x00"
    with pytest.raises(ProtocolError, match="retry packet too short"):
        pull_header(Buffer(base + b"T" * 16), 0)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=lambda f: type(f).__name__)
def test_frame_matches_reference_encoder(frame):
    data = enc(frame)
    assert data == ref_frame(frame)
    assert frame_size(frame) == len(data)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=lambda f: type(f).__name__)
def test_frame_round_trip(frame):
    data = enc(frame)
    buf = Buffer(data)
    decoded = pull_frame(buf)
    assert buf.eof()
    assert decoded == frame
    assert type(decoded) is type(frame)
    assert decoded.wire_type == data[0]
    assert repr(decoded).startswith(type(frame).__name__)


@pytest.mark.parametrize("frame", DELIMITED, ids=lambda f: type(f).__name__)
def test_frame_truncated_at_every_byte(frame):
    data = enc(frame)
    for cut in range(1, len(data)):
        with pytest.raises(ProtocolError) as info:
            decode_frames(data[:cut])
        assert info.value.frame_type == data[0]
        assert info.value.error_code == ErrorCode.FRAME_ENCODING_ERROR


# every sample frame; the one "to the end of the packet" frame goes last
ONE_PAYLOAD = [f for f in SAMPLE_FRAMES if getattr(f, "has_length", True)] + [
    StreamFrame(9, 77, b"no length", fin=True, has_length=False)]


def test_all_sample_frames_in_one_payload():
    frames = decode_frames(encode_frames(ONE_PAYLOAD))
    # consecutive PaddingFrame(1) + PaddingFrame(5) merge into one frame of 6 bytes
    assert frames[0] == PaddingFrame(6)
    assert frames[1:] == ONE_PAYLOAD[2:]


def test_stream_frame_data_is_zero_copy_view():
    data = enc(StreamFrame(1, 10, b"payload"))
    frame = pull_frame(Buffer(data))
    assert isinstance(frame.data, memoryview) and frame.data.obj is data
    assert frame.frame_type == 0x0E


def test_crypto_and_datagram_data_are_views():
    for f in (CryptoFrame(3, b"abc"), DatagramFrame(b"xyz")):
        data = enc(f)
        got = pull_frame(Buffer(data))
        assert isinstance(got.data, memoryview) and got.data.obj is data


def test_padding_collapses():
    frames = decode_frames(b"\x00" * 50 + b"\x01" + b"\x00\x00")
    assert frames == [PaddingFrame(50), PingFrame(), PaddingFrame(2)]


def test_frame_type_constants():
    assert FRAME_PADDING == 0 and FRAME_STREAM == 0x08 and FRAME_DATAGRAM_LEN == 0x31
    assert ConnectionCloseFrame(1, 2).wire_type == 0x1C
    assert ConnectionCloseFrame(1, None, b"", True).wire_type == 0x1D
    assert ConnectionCloseFrame(1, None, b"", True).frame_type is None
    assert StreamFrame(1, 1, b"", True).frame_type == 0x0F
    assert AckFrame([(0, 1)], 0, (0, 0, 0)).frame_type == 0x03


@pytest.mark.parametrize("ftype", [0x13, 0x17, 0x1F, 0x20, 0x2F, 0x32, 0x3F])
def test_unknown_frame_types(ftype):
    err = raises_protocol(bytes([ftype]) + b"\x00" * 8, match="unknown frame type",
                          code=ErrorCode.FRAME_ENCODING_ERROR)
    assert err.frame_type == ftype


def test_unknown_multibyte_frame_type():
    err = raises_protocol(ref_varint(0x4000) + b"\x00", match="unknown frame type")
    assert err.frame_type == 0x4000


def test_non_minimal_frame_type_is_protocol_violation():
    raises_protocol(b"\x40\x01", match="not minimally encoded", code=ErrorCode.PROTOCOL_VIOLATION)


def test_truncated_frame_type():
    raises_protocol(b"\x40", match="truncated frame type")


def test_stream_offset_plus_length_limit():
    # OFF|LEN: offset 2**62-1, length 1
    data = b"\x0e\x00" + ref_varint(2**62 - 1) + b"\x01x"
    raises_protocol(data, match="2\\*\\*62")
    # no LEN: offset 2**62-1 and one trailing byte
    raises_protocol(b"\x0c\x00" + ref_varint(2**62 - 1) + b"x", match="2\\*\\*62")
    # exactly at the limit with an empty frame is fine
    assert decode_frames(b"\x0e\x00" + ref_varint(2**62 - 1) + b"\x00")[0].offset == 2**62 - 1
    with pytest.raises(ValueError):
        StreamFrame(0, 2**62 - 1, b"x")


def test_stream_length_past_end():
    raises_protocol(b"\x0a\x01\x05abc", match="STREAM frame length 5 exceeds")


def test_crypto_offset_plus_length_limit():
    raises_protocol(b"\x06" + ref_varint(2**62 - 1) + b"\x01x", match="2\\*\\*62")


def test_length_fields_past_end():
    raises_protocol(b"\x06\x00\x05abc", match="data length 5 exceeds")
    raises_protocol(b"\x31\x09abc", match="data length 9 exceeds")
    raises_protocol(b"\x07\x09abc", match="token length 9 exceeds")
    raises_protocol(b"\x1c\x00\x00\x09abc", match="reason length 9 exceeds")
    raises_protocol(b"\x1d\x00\x09abc", match="reason length 9 exceeds")


def test_huge_length_fields_do_not_allocate():
    big = ref_varint(2**62 - 1)
    for data in (b"\x06\x00" + big, b"\x31" + big, b"\x07" + big, b"\x0a\x00" + big,
                 b"\x1c\x00\x00" + big):
        raises_protocol(data + b"abc", match="exceeds")


def test_new_token_empty():
    raises_protocol(b"\x07\x00", match="empty token")
    with pytest.raises(ValueError):
        NewTokenFrame(b"")


def test_new_connection_id_bad_fields():
    token = b"\x00" * 16
    raises_protocol(b"\x18\x01\x00\x00" + token, match="connection id length 0")
    raises_protocol(b"\x18\x01\x00\x15" + b"c" * 21 + token, match="connection id length 21")
    raises_protocol(b"\x18\x01\x02\x04abcd" + token, match="retire_prior_to exceeds sequence")
    raises_protocol(b"\x18\x01\x00\x04abcd" + token[:15], match="truncated")
    with pytest.raises(ValueError):
        NewConnectionIdFrame(1, 2, b"abcd", token)
    with pytest.raises(ValueError):
        NewConnectionIdFrame(1, 0, b"", token)
    with pytest.raises(ValueError):
        NewConnectionIdFrame(1, 0, b"abcd", token[:15])


def test_path_frames_wrong_size():
    raises_protocol(b"\x1a1234567", match="truncated")
    raises_protocol(b"\x1b", match="truncated")
    with pytest.raises(ValueError):
        PathChallengeFrame(b"123")
    with pytest.raises(ValueError):
        PathResponseFrame(b"123456789")


def test_max_streams_limits():
    raises_protocol(b"\x12" + ref_varint(2**60 + 1), match="2\\*\\*60")
    raises_protocol(b"\x16" + ref_varint(2**60 + 1), match="2\\*\\*60")
    with pytest.raises(ValueError):
        MaxStreamsFrame(2**60 + 1)
    with pytest.raises(ValueError):
        StreamsBlockedFrame(2**60 + 1)


# -- ACK ------------------------------------------------------------------------------------
def ack_bytes(largest, delay, count, first, pairs=(), ecn=None):
    out = (b"\x03" if ecn else b"\x02") + b"".join(ref_varint(x) for x in (largest, delay, count, first))
    for gap, length in pairs:
        out += ref_varint(gap) + ref_varint(length)
    if ecn:
        out += b"".join(ref_varint(x) for x in ecn)
    return out


def test_ack_decode_ranges_ascending():
    # largest 100, first range 4 -> [96, 101); gap 2 -> largest 92, length 10 -> [82, 93)
    frame = decode_frames(ack_bytes(100, 7, 1, 4, [(2, 10)]))[0]
    assert frame.ranges == [(82, 93), (96, 101)] and frame.ack_delay == 7 and frame.ecn is None


def test_ack_with_ecn_counts():
    frame = decode_frames(ack_bytes(5, 0, 0, 5, ecn=(1, 2, 3)))[0]
    assert frame.ranges == [(0, 6)] and frame.ecn == (1, 2, 3) and frame.frame_type == 0x03


def test_ack_first_range_underflow():
    raises_protocol(ack_bytes(3, 0, 0, 4), match="underflow")


def test_ack_gap_underflow():
    raises_protocol(ack_bytes(10, 0, 1, 5, [(4, 0)]), match="gap underflow")  # 5 - 4 - 2 < 0


def test_ack_range_length_underflow():
    raises_protocol(ack_bytes(10, 0, 1, 2, [(1, 6)]), match="length underflow")  # largest 5, length 6


def test_ack_range_count_checked_against_bytes_before_allocation():
    raises_protocol(ack_bytes(10, 0, 2**62 - 1, 0), match="range count")
    raises_protocol(ack_bytes(10, 0, 100, 0) + b"\x00" * 50, match="remaining bytes")


def test_ack_too_many_ranges():
    ranges = [(4 * i, 4 * i + 2) for i in range(300)]
    buf = Buffer(capacity=2000)
    push_ack_frame(buf, ranges, 0)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_frames(buf.data)
    assert decode_frames(buf.data, max_ack_ranges=300)[0].ranges == ranges
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_frames(buf.data, max_ack_ranges=299)


def test_ack_encoder_validates_ranges():
    buf = Buffer(capacity=100)
    for bad in ([], [(5, 5)], [(6, 5)], [(0, 5), (3, 8)], [(0, 5), (5, 8)], [(10, 12), (0, 5)],
                [(-1, 5)]):
        with pytest.raises((ValueError, TypeError)):
            push_ack_frame(buf, bad, 0)
    with pytest.raises(TypeError):
        push_ack_frame(buf, [[0, 1]], 0)
    with pytest.raises(TypeError):
        push_ack_frame(buf, [(0, 1)], 0, ecn=(1, 2))
    with pytest.raises(ValueError):
        AckFrame([(0, 5), (2, 9)], 0)


def test_push_ack_frame_matches_reference():
    ranges = [(0, 3), (10, 20), (1000, 100000)]
    buf = Buffer(capacity=100)
    push_ack_frame(buf, ranges, 33, ecn=(4, 5, 6))
    assert buf.data == ref_frame(AckFrame(ranges, 33, (4, 5, 6)))


# -- STREAM fast path -----------------------------------------------------------------------
@pytest.mark.parametrize("sid,off,length,fin", [(0, 0, 0, False), (4, 0, 16, True),
                                                (2**62 - 1, 2**40, 1200, False), (63, 64, 16383, True)])
def test_push_stream_frame_header(sid, off, length, fin):
    buf = Buffer(capacity=32)
    push_stream_frame_header(buf, sid, off, length, fin)
    assert buf.data == ref_stream_header(sid, off, length, fin)
    assert stream_frame_header_size(sid, off, length) == len(buf.data)
    data = buf.data + b"d" * length
    assert decode_stream_frame_header(data) == (sid, off, length, fin, len(buf.data))
    assert decode_stream_frame_header(b"pad" + data, 3) == (sid, off, length, fin, 3 + len(buf.data))


def test_push_stream_frame_header_limits():
    with pytest.raises(ValueError):
        push_stream_frame_header(Buffer(capacity=32), 0, 2**62 - 1, 1, False)
    with pytest.raises((ValueError, OverflowError)):
        push_stream_frame_header(Buffer(capacity=32), 2**62, 0, 1, False)
    with pytest.raises(ValueError):
        push_stream_frame_header(Buffer(capacity=2), 0, 0, 1, False)


def test_decode_stream_frame_header_errors():
    with pytest.raises(ProtocolError, match="not a STREAM frame"):
        decode_stream_frame_header(b"\x06\x00\x00")
    with pytest.raises(ProtocolError, match="offset 0 outside data of 0 bytes"):
        decode_stream_frame_header(b"")
    with pytest.raises(ProtocolError, match="truncated in stream id"):
        decode_stream_frame_header(b"\x08")
    with pytest.raises(ProtocolError, match="truncated in offset"):
        decode_stream_frame_header(b"\x0c\x01")
    with pytest.raises(ProtocolError, match="truncated in length"):
        decode_stream_frame_header(bytearray(b"\x0a\x01"))


# -- context rules --------------------------------------------------------------------------
@pytest.mark.parametrize("ptype", [PACKET_INITIAL, PACKET_HANDSHAKE])
def test_long_header_packets_allow_only_handshake_frames(ptype):
    allowed = [PaddingFrame(2), PingFrame(), AckFrame([(0, 1)], 0), AckFrame([(0, 1)], 0, (0, 0, 1)),
               CryptoFrame(0, b"x"), ConnectionCloseFrame(1, 0, b"")]
    assert decode_frames(encode_frames(allowed), packet_type=ptype)
    for frame in SAMPLE_FRAMES:
        if frame.wire_type in {0x00, 0x01, 0x02, 0x03, 0x06, 0x1C}:
            continue
        with pytest.raises(ProtocolError, match="not allowed") as info:
            decode_frames(enc(frame), packet_type=ptype)
        assert info.value.error_code == ErrorCode.PROTOCOL_VIOLATION


def test_short_header_packets_allow_everything():
    payload = encode_frames(ONE_PAYLOAD)
    assert len(decode_frames(payload, packet_type=PACKET_SHORT)) == len(ONE_PAYLOAD) - 1


def test_empty_payload_is_protocol_violation():
    assert decode_frames(b"") == []
    with pytest.raises(ProtocolError, match="no frames") as info:
        decode_frames(b"", packet_type=PACKET_SHORT)
    assert info.value.error_code == ErrorCode.PROTOCOL_VIOLATION


def test_check_frame_allowed_other_packet_types():
    with pytest.raises(ProtocolError):
        check_frame_allowed(0x01, PACKET_RETRY)
    check_frame_allowed(0x30, PACKET_SHORT)


# -- constructor validation -----------------------------------------------------------------
@pytest.mark.parametrize("factory", [
    lambda: ResetStreamFrame(-1, 0, 0),
    lambda: ResetStreamFrame(0, 2**62, 0),
    lambda: StopSendingFrame(0, -5),
    lambda: MaxDataFrame(2**62),
    lambda: MaxStreamDataFrame(2**62, 0),
    lambda: DataBlockedFrame(-1),
    lambda: StreamDataBlockedFrame(0, 2**64),
    lambda: RetireConnectionIdFrame(-1),
    lambda: CryptoFrame(2**62 - 1, b"xy"),
    lambda: PaddingFrame(0),
    lambda: AckFrame([(0, 1)], -1),
    lambda: ConnectionCloseFrame(0, 5, b"", application=True),
])
def test_frame_constructors_reject_out_of_range(factory):
    with pytest.raises(ValueError):
        factory()


@pytest.mark.parametrize("factory", [
    lambda: ResetStreamFrame("1", 0, 0),
    lambda: MaxDataFrame(1.5),
    lambda: StreamFrame(None, 0, b""),
    lambda: StreamFrame(0, 0, "text"),
    lambda: CryptoFrame(0, 123),
    lambda: DatagramFrame("text"),
    lambda: AckFrame([(0, 1)], 0, ecn=[1, 2, 3]),
])
def test_frame_constructors_reject_wrong_types(factory):
    with pytest.raises(TypeError):
        factory()


def test_push_frame_rejects_non_frames_and_overflow():
    with pytest.raises(TypeError):
        push_frame(Buffer(capacity=10), "PING")
    with pytest.raises(TypeError):
        frame_size(object())
    with pytest.raises(ValueError, match="capacity"):
        push_frame(Buffer(capacity=4), StreamFrame(0, 0, b"too long"))


def test_frame_equality_semantics():
    assert StreamFrame(1, 2, b"ab") == StreamFrame(1, 2, bytearray(b"ab"))
    assert StreamFrame(1, 2, b"ab") != StreamFrame(1, 2, b"ab", fin=True)
    assert PingFrame() != HandshakeDoneFrame()
    assert PingFrame() == PingFrame()
    assert (PingFrame() == 1) is False

