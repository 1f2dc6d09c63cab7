"""Tests of the single-call entry points of bench/codec_fast.pyx (encode_/decode_stream_frame,
encode_/decode_short_header, encode_/decode_long_header, encode_/decode_ack), the compiled side
of test_bench_codec.py: same bytes and values as the Buffer/frame-object API of dquic._codec, the
same argument checks, and malformed input raises only ProtocolError.

Run:  python -m pytest bench/test_codec_fast.py   (not benchmarks: --benchmark-only skips them)
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dquic._codec import (
    DQUIC_VERSION_1,
    PACKET_HANDSHAKE,
    PACKET_INITIAL,
    Buffer,
    encode_retry,
    encode_version_negotiation,
    patch_length,
    pull_header,
    pull_packet_number,
    push_long_header,
    push_short_header,
)
from dquic._frames import AckFrame, StreamFrame, encode_frames, pull_frame, push_ack_frame
from dquic.errors import ErrorCode, ProtocolError
from cython_build import import_pyx

import_pyx("codec_fast")  # compiled on first use
import codec_fast as fast  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
u62 = st.integers(0, 2**62 - 1)
cid = st.binary(max_size=20)
BYTES_TYPES = [bytes, bytearray, memoryview]


def flatten(ranges):
    """(start, stop) pairs -> the flat bounds tuple decode_ack returns."""
    return tuple(x for r in ranges for x in r)


def object_ack(ranges, delay, ecn=None):
    return encode_frames([AckFrame(ranges, delay, ecn)])


def only_protocol_errors(fn, *args):
    """Call fn; a ProtocolError is an accepted outcome (returns None), anything else fails."""
    try:
        return fn(*args)
    except ProtocolError:
        return None


# -- STREAM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stream_id, offset, data, fin", [
    (0, 0, b"", False),
    (4, 0, b"x", True),
    (63, 63, b"a" * 63, False),
    (64, 16383, b"b" * 64, True),
    (2**30, 2**30 - 1, b"c" * 300, False),
    (2**62 - 1, 2**62 - 2, b"d", True),
    (1, 100_000, b"L" * 1200, False),
])
def test_encode_stream_frame_matches_object_api(stream_id, offset, data, fin):
    expected = encode_frames([StreamFrame(stream_id, offset, data, fin)])
    for wrap in BYTES_TYPES:
        assert fast.encode_stream_frame(stream_id, offset, wrap(data), fin) == expected
    got = fast.decode_stream_frame(expected)
    frame = pull_frame(Buffer(expected))
    assert got[:3] == (frame.stream_id, frame.offset, frame.fin) == (stream_id, offset, fin)
    assert expected[got[3]:got[4]] == data
    assert got[4] == len(expected)


def test_decode_stream_frame_at_offset_and_without_len_bit():
    first = fast.encode_stream_frame(8, 0, b"head", False)
    last = encode_frames([StreamFrame(12, 7, b"tail-bytes", True, has_length=False)])
    payload = bytearray(first + last)
    sid, off, fin, start, end = fast.decode_stream_frame(payload)
    assert (sid, off, fin, bytes(payload[start:end])) == (8, 0, False, b"head")
    sid, off, fin, start, end = fast.decode_stream_frame(memoryview(payload), end)
    assert (sid, off, fin, bytes(payload[start:end])) == (12, 7, True, b"tail-bytes")
    assert end == len(payload)


def test_encode_stream_frame_argument_errors():
    with pytest.raises(ValueError):
        fast.encode_stream_frame(-1, 0, b"")
    with pytest.raises(ValueError):
        fast.encode_stream_frame(2**62, 0, b"")
    with pytest.raises(ValueError):
        fast.encode_stream_frame(0, 2**62 - 1, b"xy")  # offset + length beyond 2**62-1
    with pytest.raises(TypeError):
        fast.encode_stream_frame(1.0, 0, b"")
    with pytest.raises(TypeError):
        fast.encode_stream_frame(0, 0, "text")
    with pytest.raises(TypeError):
        fast.encode_stream_frame(0, 0, 5)


@pytest.mark.parametrize("data, offset, match", [
    (b"", 0, "outside"),
    (b"\x0e\x04", 5, "outside"),
    (b"\x0e\x04", -1, "outside"),
    (b"\x06\x00\x00", 0, "not a STREAM"),
    (b"\x10", 0, "not a STREAM"),
    (b"\x0e", 0, "truncated in stream id"),
    (b"\x0e\x04", 0, "truncated in offset"),
    (b"\x0e\x04\x40", 0, "truncated in offset"),
    (b"\x0a\x04", 0, "truncated in length"),
    (b"\x0a\x04\x05abcd", 0, "exceeds the remaining"),
    (b"\x0c\x04\xff\xff\xff\xff\xff\xff\xff\xffx", 0, "2\\*\\*62"),
])
def test_decode_stream_frame_malformed(data, offset, match):
    with pytest.raises(ProtocolError, match=match) as info:
        fast.decode_stream_frame(data, offset)
    assert info.value.error_code == ErrorCode.FRAME_ENCODING_ERROR


@SETTINGS
@given(u62, st.integers(0, 2**62 - 1), st.binary(max_size=300), st.booleans(), st.binary(max_size=8))
def test_stream_frame_round_trip(stream_id, offset, data, fin, prefix):
    if offset + len(data) > 2**62 - 1:
        offset = 2**62 - 1 - len(data)
    encoded = fast.encode_stream_frame(stream_id, offset, data, fin)
    assert encoded == encode_frames([StreamFrame(stream_id, offset, data, fin)])
    sid, off, f, start, end = fast.decode_stream_frame(prefix + encoded, len(prefix))
    assert (sid, off, f, (prefix + encoded)[start:end]) == (stream_id, offset, fin, data)
    assert end == len(prefix) + len(encoded)


# -- short header ----------------------------------------------------------------------------
@pytest.mark.parametrize("dcid, pn, pn_len, key_phase, spin", [
    (b"", 0, 1, 0, 0),
    (b"\x8a" * 8, 0x1234, 2, 1, 0),
    (b"\x01" * 20, 0xABCDEF, 3, 0, 1),
    (b"\x02" * 4, 0xFFFFFFFF, 4, 1, 1),
])
def test_short_header_matches_object_api(dcid, pn, pn_len, key_phase, spin):
    buf = Buffer(capacity=64)
    push_short_header(buf, dcid, pn, pn_len, key_phase, spin)
    expected = buf.data
    for wrap in BYTES_TYPES:
        assert fast.encode_short_header(wrap(dcid), pn, pn_len, key_phase, spin) == expected
    packet = expected + b"payload"
    got = fast.decode_short_header(packet, len(dcid))
    rbuf = Buffer(packet)
    hdr = pull_header(rbuf, len(dcid))
    assert got == (hdr.dcid, pull_packet_number(rbuf, pn_len), pn_len, hdr.key_phase, hdr.spin_bit,
                   hdr.pn_offset + pn_len)
    assert got == (dcid, pn, pn_len, key_phase, spin, len(expected))


def test_encode_short_header_argument_errors():
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x" * 21, 0, 1)
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x", 256, 1)
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x", 0, 5)
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x", 0, 0)
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x", 0, 1, key_phase=2)
    with pytest.raises(ValueError):
        fast.encode_short_header(b"x", 0, 1, spin=-1)
    with pytest.raises(TypeError):
        fast.encode_short_header("cid", 0, 1)
    with pytest.raises(TypeError):
        fast.encode_short_header(b"x", 0, 1.0)
    with pytest.raises(ValueError):
        fast.decode_short_header(b"\x40\x00", 21)


@pytest.mark.parametrize("data, dcid_len, offset, match", [
    (b"", 0, 0, "outside"),
    (b"\x40\x00", 0, 2, "outside"),
    (b"\xc0\x00\x00\x00\x00", 0, 0, "long-header bit"),
    (b"\x00\x00", 0, 0, "fixed bit"),
    (b"\x41\x01\x02", 2, 0, "truncated"),
    (b"\x43" + b"\x00" * 8, 8, 0, "truncated"),
])
def test_decode_short_header_malformed(data, dcid_len, offset, match):
    with pytest.raises(ProtocolError, match=match):
        fast.decode_short_header(data, dcid_len, offset)


@SETTINGS
@given(cid, st.integers(1, 4), st.data(), st.integers(0, 1), st.integers(0, 1), st.binary(max_size=4))
def test_short_header_round_trip(dcid, pn_len, data, key_phase, spin, prefix):
    pn = data.draw(st.integers(0, 2 ** (8 * pn_len) - 1))
    encoded = fast.encode_short_header(dcid, pn, pn_len, key_phase, spin)
    got = fast.decode_short_header(prefix + encoded, len(dcid), len(prefix))
    assert got == (dcid, pn, pn_len, key_phase, spin, len(prefix) + len(encoded))


# -- long header -----------------------------------------------------------------------------
def object_long_header(ptype, dcid, scid, token, pn, pn_len, payload_length=0):
    buf = Buffer(capacity=256)
    off = push_long_header(buf, ptype, DQUIC_VERSION_1, dcid, scid, token, pn, pn_len)
    patch_length(buf, off, pn_len + payload_length)
    return buf.data


@pytest.mark.parametrize("ptype, dcid, scid, token, pn, pn_len, payload_length", [
    (PACKET_INITIAL, b"\x8a" * 8, b"\x5c" * 8, b"t" * 32, 0x1234, 2, 0),
    (PACKET_INITIAL, b"", b"", b"", 0, 1, 1200),
    (PACKET_INITIAL, b"d" * 20, b"s" * 20, b"k" * 100, 0xFFFFFFFF, 4, 16379),
    (PACKET_HANDSHAKE, b"d" * 4, b"s" * 5, b"", 7, 1, 50),
    (PACKET_HANDSHAKE, b"d" * 4, b"s" * 5, None, 0xABCDEF, 3, 50),
])
def test_long_header_matches_object_api(ptype, dcid, scid, token, pn, pn_len, payload_length):
    expected = object_long_header(ptype, dcid, scid, token, pn, pn_len, payload_length)
    for wrap in BYTES_TYPES:
        assert fast.encode_long_header(ptype, DQUIC_VERSION_1, wrap(dcid), wrap(scid),
                                  None if token is None else wrap(token), pn, pn_len,
                                  payload_length) == expected
    packet = expected + b"p" * payload_length + b"next-packet"
    got = fast.decode_long_header(packet)
    rbuf = Buffer(packet)
    hdr = pull_header(rbuf, 0)
    assert got == (hdr.packet_type, hdr.version, hdr.dcid, hdr.scid, hdr.token,
                   pull_packet_number(rbuf, pn_len), pn_len, hdr.pn_offset + pn_len, hdr.payload_end)
    assert got == (ptype, DQUIC_VERSION_1, dcid, scid, token or b"", pn, pn_len, len(expected),
                   len(expected) + payload_length)


def test_encode_long_header_argument_errors():
    args = dict(packet_type=PACKET_INITIAL, version=DQUIC_VERSION_1, dcid=b"d", scid=b"s", token=b"",
                pn_truncated=0, pn_len=1)
    fast.encode_long_header(**args)
    for key, value, exc in [
        ("packet_type", 3, ValueError), ("packet_type", 1, ValueError), ("version", 2**32, ValueError),
        ("dcid", b"x" * 21, ValueError), ("scid", b"x" * 21, ValueError), ("pn_truncated", 256, ValueError),
        ("pn_len", 5, ValueError), ("dcid", "str", TypeError), ("token", 5, TypeError),
        ("pn_truncated", -1, ValueError), ("version", 1.5, TypeError),
    ]:
        with pytest.raises(exc):
            fast.encode_long_header(**{**args, key: value})
    with pytest.raises(ValueError, match="only Initial"):
        fast.encode_long_header(**{**args, "packet_type": PACKET_HANDSHAKE, "token": b"t"})
    with pytest.raises(ValueError, match="16384"):
        fast.encode_long_header(**args, payload_length=16383)


def test_decode_long_header_malformed():
    good = fast.encode_long_header(PACKET_INITIAL, DQUIC_VERSION_1, b"d" * 8, b"s" * 8, b"tok", 0x12, 1, 4) + b"pppp"
    only_protocol_errors(fast.decode_long_header, good)  # sanity: decodes
    assert fast.decode_long_header(good)[8] == len(good)
    cases = [
        (b"", "outside"),
        (b"\x40" + good[1:], "long-header bit"),
        (good[:6], "truncated"),
        (good[:1] + b"\x00\x00\x00\x00" + good[5:], "version negotiation"),
        (good[:1] + b"\x00\x00\x00\x02" + good[5:], "unsupported version"),
        (bytes([good[0] & ~0x40]) + good[1:], "fixed bit"),
        (bytes([0xD0]) + good[1:], "0-RTT"),
        (bytes([0xF0]) + good[1:], "retry"),
        (good[:5] + b"\x15" + good[6:], "DCID length"),
        (good[:14] + b"\x15" + good[15:], "SCID length"),
        (good[:5] + b"\x14" + good[6:14], "truncated"),
        (good[:23] + b"\x3f" + good[24:], "token length"),
        (good[:-1], "Length field"),
        (good[:27] + b"\x40\x00" + good[29:], "smaller than the packet number"),
    ]
    for data, match in cases:
        with pytest.raises(ProtocolError, match=match):
            fast.decode_long_header(data)
    # Retry and Version Negotiation packets are for pull_header
    with pytest.raises(ProtocolError):
        fast.decode_long_header(encode_retry(DQUIC_VERSION_1, b"d", b"s", b"token", b"\x00" * 16))
    with pytest.raises(ProtocolError):
        fast.decode_long_header(encode_version_negotiation(b"d", b"s", [DQUIC_VERSION_1]))


@SETTINGS
@given(st.sampled_from([PACKET_INITIAL, PACKET_HANDSHAKE]), cid, cid, st.binary(max_size=80),
       st.integers(1, 4), st.data(), st.integers(0, 2000), st.binary(max_size=4))
def test_long_header_round_trip(ptype, dcid, scid, token, pn_len, data, payload_length, prefix):
    if ptype == PACKET_HANDSHAKE:
        token = b""
    pn = data.draw(st.integers(0, 2 ** (8 * pn_len) - 1))
    encoded = fast.encode_long_header(ptype, DQUIC_VERSION_1, dcid, scid, token, pn, pn_len, payload_length)
    assert encoded == object_long_header(ptype, dcid, scid, token, pn, pn_len, payload_length)
    packet = prefix + encoded + b"\x00" * payload_length
    got = fast.decode_long_header(packet, len(prefix))
    end = len(prefix) + len(encoded)
    assert got == (ptype, DQUIC_VERSION_1, dcid, scid, token, pn, pn_len, end, end + payload_length)


# -- ACK -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ranges, delay, ecn", [
    ([(0, 1)], 0, None),
    ([(9995, 9998)], 25, None),
    ([(0, 1), (2, 3)], 1, None),
    ([(10, 20), (30, 40), (100, 2**30)], 2**40, (1, 2, 3)),
    ([(2**62 - 10, 2**62)], 2**62 - 1, (0, 0, 2**62 - 1)),
    ([(5 * i, 5 * i + 3) for i in range(100)], 7, None),  # beyond the on-stack scratch space
])
def test_ack_matches_object_api(ranges, delay, ecn):
    expected = object_ack(ranges, delay, ecn)
    buf = Buffer(capacity=4096)
    push_ack_frame(buf, ranges, delay, ecn)
    assert buf.data == expected
    assert fast.encode_ack(ranges, delay, ecn) == expected
    assert fast.encode_ack(tuple(ranges), delay, ecn) == expected
    assert fast.encode_ack(flatten(ranges), delay, ecn) == expected
    assert fast.encode_ack(list(flatten(ranges)), delay, ecn) == expected
    bounds, got_delay, got_ecn, end = fast.decode_ack(expected)
    frame = pull_frame(Buffer(expected))
    assert bounds == flatten(frame.ranges) == flatten(ranges)
    assert (got_delay, got_ecn, end) == (frame.ack_delay, frame.ecn, len(expected))


def test_decode_ack_at_offset_and_limit():
    ack = fast.encode_ack([(1, 2), (4, 6), (8, 9)], 3)
    payload = b"\x01" + ack + b"\x01"
    assert fast.decode_ack(payload, 1) == ((1, 2, 4, 6, 8, 9), 3, None, 1 + len(ack))
    assert fast.decode_ack(payload, 1, 3)[0] == (1, 2, 4, 6, 8, 9)
    with pytest.raises(ProtocolError, match="limit") as info:
        fast.decode_ack(payload, 1, 2)
    assert info.value.frame_type == 0x02


@pytest.mark.parametrize("ranges, exc", [
    ([], ValueError),
    ([(3, 3)], ValueError),
    ([(5, 3)], ValueError),
    ([(-1, 3)], ValueError),
    ([(0, 2**62 + 1)], ValueError),
    ([(0, 2**64)], ValueError),
    ([(0, 3), (3, 5)], ValueError),  # adjacent
    ([(0, 4), (3, 5)], ValueError),  # overlapping
    ([(10, 12), (0, 3)], ValueError),  # descending
    ([0, 3, 5], ValueError),  # odd flat length
    ([0, 3, 3, 5], ValueError),  # adjacent, flat
    ([[0, 3]], TypeError),
    ([(0, 3, 4)], TypeError),
    ([(0.0, 3)], TypeError),
    ([0, "3"], TypeError),
    ([(0, 3), 5], TypeError),
    (5, TypeError),
])
def test_encode_ack_bad_ranges(ranges, exc):
    with pytest.raises(exc):
        fast.encode_ack(ranges, 0)
    if exc is ValueError and ranges and not isinstance(ranges[0], int):
        with pytest.raises(ValueError):
            AckFrame(ranges, 0)


def test_encode_ack_bad_delay_and_ecn():
    with pytest.raises(ValueError):
        fast.encode_ack([(0, 1)], -1)
    with pytest.raises(ValueError):
        fast.encode_ack([(0, 1)], 2**62)
    with pytest.raises(TypeError):
        fast.encode_ack([(0, 1)], 0, [1, 2, 3])
    with pytest.raises(TypeError):
        fast.encode_ack([(0, 1)], 0, (1, 2))
    with pytest.raises(ValueError):
        fast.encode_ack([(0, 1)], 0, (1, 2, -3))


@pytest.mark.parametrize("data, match", [
    (b"", "outside"),
    (b"\x01", "not an ACK"),
    (b"\x02", "truncated"),
    (b"\x02\x05\x00\x00", "truncated"),
    (b"\x02\x05\x00\x00\x06", "underflow"),
    (b"\x02\x05\x00\x01\x00\x04\x00", "gap underflow"),
    (b"\x02\x05\x00\x01\x00\x00\x04", "length underflow"),
    (b"\x02\x05\x00\x05\x00\x00\x00", "remaining bytes"),
    (b"\x02\x05\x00\x01\x00\x00\x40", "truncated"),
    (b"\x03\x05\x00\x00\x00\x01\x02", "truncated"),
])
def test_decode_ack_malformed(data, match):
    with pytest.raises(ProtocolError, match=match) as info:
        fast.decode_ack(data)
    assert info.value.error_code == ErrorCode.FRAME_ENCODING_ERROR


@st.composite
def ack_ranges(draw):
    n = draw(st.integers(1, 80))
    start = draw(st.integers(0, 2**40))
    out = []
    for _ in range(n):
        length = draw(st.integers(1, 2**20))
        out.append((start, start + length))
        start += length + draw(st.integers(1, 2**20))
    return out


@SETTINGS
@given(ack_ranges(), u62, st.none() | st.tuples(u62, u62, u62), st.binary(max_size=4))
def test_ack_round_trip(ranges, delay, ecn, prefix):
    encoded = fast.encode_ack(ranges, delay, ecn)
    assert encoded == object_ack(ranges, delay, ecn)
    assert fast.encode_ack(flatten(ranges), delay, ecn) == encoded
    got = fast.decode_ack(prefix + encoded, len(prefix))
    assert got == (flatten(ranges), delay, ecn, len(prefix) + len(encoded))


# -- random and mutated input: ProtocolError only, and the same verdict as pull_frame --------
@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 3))
def test_random_bytes_raise_only_protocol_error(data, offset):
    for fn in (fast.decode_stream_frame, fast.decode_ack, fast.decode_long_header):
        only_protocol_errors(fn, data, offset)
    for dcid_len in (0, 8, 20):
        only_protocol_errors(fast.decode_short_header, data, dcid_len, offset)


@SETTINGS
@given(st.sampled_from([0x02, 0x03] + list(range(0x08, 0x10))), st.binary(max_size=48))
def test_decoders_agree_with_pull_frame(frame_type, rest):
    data = bytes([frame_type]) + rest
    try:
        frame = pull_frame(Buffer(data))
    except ProtocolError:
        frame = None
    if frame_type in (0x02, 0x03):
        got = only_protocol_errors(fast.decode_ack, data)
        assert (got is None) == (frame is None)
        if frame is not None:
            assert got[:3] == (flatten(frame.ranges), frame.ack_delay, frame.ecn)
    else:
        got = only_protocol_errors(fast.decode_stream_frame, data)
        assert (got is None) == (frame is None)
        if frame is not None:
            assert got[:3] == (frame.stream_id, frame.offset, frame.fin)
            assert data[got[3]:got[4]] == bytes(frame.data)


@SETTINGS
@given(ack_ranges(), st.data())
def test_mutated_ack_raises_only_protocol_error(ranges, data):
    encoded = bytearray(fast.encode_ack(ranges, 3, (1, 2, 3)))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    only_protocol_errors(fast.decode_ack, bytes(encoded[:cut]))


# -- the C-loop benchmark helper ---------------------------------------------------------------
def test_bench_decode_stream_headers_runs():
    data = fast.encode_stream_frame(4, 100, b"x" * 16)
    assert fast.bench_decode_stream_headers(data, 1000) >= 0
    with pytest.raises(ProtocolError):
        fast.bench_decode_stream_headers(b"\x0a\x01", 10)
