"""Property tests of dquic._codec: round trips, agreement with the reference encoder, and
"random or mutated bytes only ever raise ProtocolError"."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dquic import _codec as codec
from dquic import _frames as fr
from dquic._seed import DQUICFrame, DQUICHeader
from dquic.errors import ProtocolError
from test_codec_reference import ref_frame, ref_varint

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u62 = st.integers(0, 2**62 - 1)
small = st.integers(0, 2**14)
blob = st.binary(max_size=64)
cid = st.binary(max_size=20)


@st.composite
def ack_ranges(draw):
    n = draw(st.integers(1, 12))
    start = draw(st.integers(0, 2**40))
    out = []
    for _ in range(n):
        length = draw(st.integers(1, 1000))
        out.append((start, start + length))
        start = start + length + draw(st.integers(1, 1000))
    return out


@st.composite
def stream_frames(draw):
    offset = draw(st.integers(0, 2**62 - 100))
    data = draw(st.binary(max_size=100))
    return fr.StreamFrame(draw(u62), offset, data, draw(st.booleans()))


@st.composite
def crypto_frames(draw):
    return fr.CryptoFrame(draw(st.integers(0, 2**62 - 100)), draw(st.binary(max_size=100)))


@st.composite
def new_cid_frames(draw):
    seq = draw(u62)
    return fr.NewConnectionIdFrame(seq, draw(st.integers(0, seq)), draw(st.binary(min_size=1, max_size=20)),
                                draw(st.binary(min_size=16, max_size=16)))


frames = st.one_of(
    st.integers(1, 40).map(fr.PaddingFrame),
    st.just(fr.PingFrame()),
    st.builds(fr.AckFrame, ack_ranges(), u62),
    st.builds(fr.AckFrame, ack_ranges(), u62, st.tuples(u62, u62, u62)),
    st.builds(fr.ResetStreamFrame, u62, u62, u62),
    st.builds(fr.StopSendingFrame, u62, u62),
    crypto_frames(),
    st.builds(fr.NewTokenFrame, st.binary(min_size=1, max_size=64)),
    stream_frames(),
    st.builds(fr.MaxDataFrame, u62),
    st.builds(fr.MaxStreamDataFrame, u62, u62),
    st.builds(fr.MaxStreamsFrame, st.integers(0, 2**60)),
    st.builds(fr.DataBlockedFrame, u62),
    st.builds(fr.StreamDataBlockedFrame, u62, u62),
    st.builds(fr.StreamsBlockedFrame, st.integers(0, 2**60)),
    new_cid_frames(),
    st.builds(fr.RetireConnectionIdFrame, u62),
    st.builds(fr.PathChallengeFrame, st.binary(min_size=8, max_size=8)),
    st.builds(fr.PathResponseFrame, st.binary(min_size=8, max_size=8)),
    st.builds(fr.ConnectionCloseFrame, u62, u62, blob),
    st.builds(lambda code, reason: fr.ConnectionCloseFrame(code, None, reason, True), u62, blob),
    st.just(fr.HandshakeDoneFrame()),
    st.builds(fr.DatagramFrame, blob),
)


def only_protocol_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ProtocolError:
        return None


# -- varints and packet numbers ------------------------------------------------------------
@SETTINGS
@given(u62)
def test_varint_round_trip_and_reference(value):
    data = codec.encode_varint(value)
    assert data == ref_varint(value)
    assert codec.decode_varint(data + b"junk") == (value, len(data))


@SETTINGS
@given(st.binary(max_size=9))
def test_varint_random_bytes(data):
    result = only_protocol_errors(codec.decode_varint, data)
    if result is not None:
        value, end = result
        assert end == 1 << (data[0] >> 6)
        assert 0 <= value < 2**62


@SETTINGS
@given(st.integers(0, 2**62 - 1), st.integers(1, 2**31 - 1))
def test_packet_number_round_trip(pn, distance):
    largest_acked = pn - distance
    if largest_acked < 0:
        largest_acked = None
    truncated, n = codec.encode_packet_number(pn, largest_acked)
    # the receiver has seen anything from largest_acked up to pn - 1
    receiver_largest = -1 if largest_acked is None else largest_acked
    assert codec.decode_packet_number(truncated, n, receiver_largest) == pn
    assert codec.decode_packet_number(truncated, n, max(pn - 1, -1)) == pn


# -- frames ------------------------------------------------------------------------------------
@SETTINGS
@given(frames)
def test_frame_round_trip_and_reference(frame):
    data = fr.encode_frames([frame])
    assert data == ref_frame(frame)
    assert fr.frame_size(frame) == len(data)
    decoded = fr.decode_frames(data)
    if isinstance(frame, fr.PaddingFrame):
        assert decoded == [frame]
    else:
        assert decoded == [frame]


@SETTINGS
@given(st.lists(frames, max_size=8))
def test_frame_sequences_round_trip(frame_list):
    data = fr.encode_frames(frame_list)
    decoded = fr.decode_frames(data)
    # adjacent padding frames merge; compare after merging them in the expectation too
    expected = []
    for f in frame_list:
        if isinstance(f, fr.PaddingFrame) and expected and isinstance(expected[-1], fr.PaddingFrame):
            expected[-1] = fr.PaddingFrame(expected[-1].length + f.length)
        else:
            expected.append(f)
    assert decoded == expected


@SETTINGS
@given(st.binary(max_size=200))
def test_random_payloads_raise_only_protocol_error(data):
    result = only_protocol_errors(fr.decode_frames, data)
    if result is not None:
        # whatever decoded must re-encode to something that decodes the same
        again = fr.decode_frames(fr.encode_frames([f for f in result]))
        assert len(again) <= len(result) + 1


@SETTINGS
@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_mutated_encodings_raise_only_protocol_error(frame_list, data):
    encoded = bytearray(fr.encode_frames(frame_list))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    only_protocol_errors(fr.decode_frames, bytes(encoded[:cut]))
    only_protocol_errors(fr.decode_frames, bytes(encoded), packet_type=codec.PACKET_INITIAL)
    buf = codec.Buffer(bytes(encoded))
    for _ in range(len(encoded) + 1):
        if buf.eof() or only_protocol_errors(fr.pull_frame, buf, 4) is None:
            break


@SETTINGS
@given(u62, st.integers(0, 2**40), st.integers(0, 2**20), st.booleans())
def test_stream_frame_header_fast_path(stream_id, offset, length, fin):
    data = fr.encode_frames([fr.StreamFrame(stream_id, offset, b"\x00" * min(length, 50), fin)])
    sid, off, ln, f, start = fr.decode_stream_frame_header(data)
    assert (sid, off, ln, f) == (stream_id, offset, min(length, 50), fin)
    assert start + ln == len(data)


# -- headers -----------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from([codec.PACKET_INITIAL, codec.PACKET_HANDSHAKE]), cid, cid, blob, st.integers(1, 4), st.data(),
       st.binary(max_size=100))
def test_long_header_round_trip(ptype, dcid, scid, token, pn_len, data, payload):
    if ptype != codec.PACKET_INITIAL:
        token = b""
    pn = data.draw(st.integers(0, (1 << (8 * pn_len)) - 1))
    buf = codec.Buffer(capacity=300)
    off = codec.push_long_header(buf, ptype, codec.DQUIC_VERSION_1, dcid, scid, token, pn, pn_len)
    buf.push_bytes(payload)
    codec.patch_length(buf, off, pn_len + len(payload))
    raw = buf.data
    rbuf = codec.Buffer(raw)
    hdr = codec.pull_header(rbuf, 0)
    assert (hdr.packet_type, hdr.dcid, hdr.scid, hdr.token) == (ptype, dcid, scid, token)
    assert hdr.payload_end == len(raw)
    assert codec.pull_packet_number(rbuf, pn_len) == pn


@SETTINGS
@given(cid, st.integers(1, 4), st.data(), st.integers(0, 1), st.integers(0, 1))
def test_short_header_round_trip(dcid, pn_len, data, key_phase, spin):
    pn = data.draw(st.integers(0, (1 << (8 * pn_len)) - 1))
    buf = codec.Buffer(capacity=40)
    codec.push_short_header(buf, dcid, pn, pn_len, key_phase, spin)
    rbuf = codec.Buffer(buf.data)
    hdr = codec.pull_header(rbuf, len(dcid))
    assert hdr.dcid == dcid and hdr.key_phase == key_phase and hdr.spin_bit == spin
    assert codec.pull_packet_number(rbuf, pn_len) == pn


@SETTINGS
@given(cid, cid, st.binary(min_size=1, max_size=60), st.binary(min_size=16, max_size=16))
def test_retry_round_trip(dcid, scid, token, tag):
    hdr = codec.pull_header(codec.Buffer(codec.encode_retry(codec.DQUIC_VERSION_1, dcid, scid, token, tag)), 0)
    assert (hdr.dcid, hdr.scid, hdr.token, hdr.integrity_tag) == (dcid, scid, token, tag)


@SETTINGS
@given(cid, cid, st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=10))
def test_version_negotiation_round_trip(dcid, scid, versions):
    hdr = codec.pull_header(codec.Buffer(codec.encode_version_negotiation(dcid, scid, versions)), 0)
    assert hdr.supported_versions == versions and (hdr.dcid, hdr.scid) == (dcid, scid)


@SETTINGS
@given(st.binary(max_size=120), st.integers(0, 20))
def test_random_headers_raise_only_protocol_error(data, dcid_len):
    buf = codec.Buffer(data)
    hdr = only_protocol_errors(codec.pull_header, buf, dcid_len)
    if hdr is not None:
        assert 0 <= buf.tell() <= len(data)
        assert hdr.payload_end <= len(data)
        assert len(hdr.dcid) <= 20 and len(hdr.scid) <= 20


@SETTINGS
@given(st.binary(min_size=1, max_size=120), st.data())
def test_mutated_headers_raise_only_protocol_error(payload, data):
    buf = codec.Buffer(capacity=300)
    off = codec.push_long_header(buf, codec.PACKET_INITIAL, codec.DQUIC_VERSION_1, b"d" * 8, b"s" * 4, b"tok", 1, 1)
    buf.push_bytes(payload)
    codec.patch_length(buf, off, 1 + len(payload))
    raw = bytearray(buf.data)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    only_protocol_errors(codec.pull_header, codec.Buffer(bytes(raw)), 8)


# -- seed classes (their round trips: tests/test_seed_classes.py) -----------------------------
@SETTINGS
@given(st.binary(max_size=30))
def test_seed_classes_random_bytes(data):
    only_protocol_errors(DQUICFrame.from_bytes, data)
    only_protocol_errors(DQUICHeader.from_bytes, data)
