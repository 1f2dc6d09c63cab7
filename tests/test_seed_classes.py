"""Tests of the seed classes DQUICHeader and DQUICFrame."""
from __future__ import annotations

import pytest

from dquic import _codec as codec
from dquic._frames import decode_stream_frame_header
from dquic._seed import DQUICFrame, DQUICHeader
from dquic.errors import ProtocolError
from test_codec_reference import ref_long_header, ref_short_header, ref_stream_header, ref_varint


# -- DQUICHeader ----------------------------------------------------------------------------
@pytest.mark.parametrize("ptype", [codec.PACKET_INITIAL, codec.PACKET_HANDSHAKE, codec.PACKET_SHORT])
@pytest.mark.parametrize("pn", [0, 1, 127, 128, 40000, 2**24, 2**31 - 2])
def test_header_round_trip(ptype, pn):
    hdr = DQUICHeader(ptype, pn, dcid=b"\x01\x02\x03\x04", scid=b"\x05" if ptype != codec.PACKET_SHORT else b"")
    data = hdr.to_bytes()
    back = DQUICHeader.from_bytes(data)
    assert back == hdr
    assert back.packet_type == ptype and back.packet_number == pn


def test_header_attributes_and_defaults():
    hdr = DQUICHeader(codec.PACKET_INITIAL, 5)
    assert hdr.packet_type == codec.PACKET_INITIAL and hdr.packet_number == 5
    assert hdr.dcid == b"" and hdr.scid == b"" and hdr.version == codec.DQUIC_VERSION_1
    assert hdr.largest_acked is None and hdr.token == b""
    assert "DQUICHeader" in repr(hdr)


def test_header_bytes_match_reference():
    hdr = DQUICHeader(codec.PACKET_INITIAL, 0x1234, dcid=b"d" * 8, scid=b"s" * 3, token=b"tok")
    assert hdr.to_bytes() == ref_long_header(codec.PACKET_INITIAL, codec.DQUIC_VERSION_1, b"d" * 8, b"s" * 3, b"tok",
                                             0x1234, 2, 2)
    short = DQUICHeader(codec.PACKET_SHORT, 7, dcid=b"c" * 5, key_phase=1, spin=1)
    assert short.to_bytes() == ref_short_header(b"c" * 5, 7, 1, 1, 1)


def test_header_truncation_uses_largest_acked():
    hdr = DQUICHeader(codec.PACKET_SHORT, 0xAC5C02, largest_acked=0xABE8B3)
    data = hdr.to_bytes()
    assert len(data) == 1 + 2 and data[1:] == b"\x5c\x02"
    assert DQUICHeader.from_bytes(data, largest_pn=0xABE8B3).packet_number == 0xAC5C02
    # without the receiver's state the truncated value decodes as itself
    assert DQUICHeader.from_bytes(data).packet_number == 0x5C02


def test_header_from_bytes_short_with_payload_needs_dcid_len():
    hdr = DQUICHeader(codec.PACKET_SHORT, 9, dcid=b"abcd")
    data = hdr.to_bytes() + b"payload"
    assert DQUICHeader.from_bytes(data, dcid_len=4) == hdr


def test_header_token_and_version_preserved():
    hdr = DQUICHeader(codec.PACKET_INITIAL, 3, dcid=b"x", token=b"t" * 70)
    back = DQUICHeader.from_bytes(hdr.to_bytes())
    assert back.token == b"t" * 70 and back.version == codec.DQUIC_VERSION_1


@pytest.mark.parametrize("ptype", [codec.PACKET_ZERO_RTT, codec.PACKET_RETRY, codec.PACKET_VERSION_NEGOTIATION, 6, -1])
def test_header_rejects_packet_types_without_packet_number(ptype):
    with pytest.raises(ValueError):
        DQUICHeader(ptype, 0)


@pytest.mark.parametrize("kwargs", [dict(packet_number=-1), dict(packet_number=2**62),
                                    dict(dcid=b"x" * 21), dict(version=0), dict(version=2**32),
                                    dict(largest_acked=10, packet_number=10),
                                    dict(key_phase=2), dict(packet_type=codec.PACKET_HANDSHAKE, token=b"t")])
def test_header_value_errors(kwargs):
    args = dict(packet_type=codec.PACKET_INITIAL, packet_number=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        DQUICHeader(**args)


@pytest.mark.parametrize("kwargs", [dict(packet_number="1"), dict(packet_number=1.0),
                                    dict(packet_number=None), dict(packet_type="initial"),
                                    dict(packet_type=None), dict(dcid="abc"), dict(version=1.5),
                                    dict(largest_acked="3")])
def test_header_type_errors(kwargs):
    args = dict(packet_type=codec.PACKET_INITIAL, packet_number=5)
    args.update(kwargs)
    with pytest.raises(TypeError):
        DQUICHeader(**args)


def test_header_refuses_packet_numbers_beyond_four_bytes():
    # RFC 9000 §17.1: the 4-byte truncated number spans more than twice the distance to the
    # largest acknowledged packet number (-1 without one), so that distance stays below 2**31;
    # the constructor refuses what to_bytes could not write
    for pn, acked in [(2**40, None), (2**31 - 1, None), (2**31 + 5, 5), (2**40, 2**40 - 2**31)]:
        with pytest.raises(ValueError, match="2\\*\\*31"):
            DQUICHeader(codec.PACKET_SHORT, pn, largest_acked=acked)
    assert len(DQUICHeader(codec.PACKET_SHORT, 2**31 - 2).to_bytes()) == 1 + 4
    assert len(DQUICHeader(codec.PACKET_SHORT, 2**40, largest_acked=2**40 - 2**31 + 1).to_bytes()) == 1 + 4
    assert DQUICHeader(codec.PACKET_SHORT, 2**40, largest_acked=2**40 - 5).to_bytes()


@pytest.mark.parametrize("kwargs", [dict(key_phase=1), dict(spin=1)])
@pytest.mark.parametrize("ptype", [codec.PACKET_INITIAL, codec.PACKET_HANDSHAKE])
def test_header_long_forms_have_no_short_header_bits(ptype, kwargs):
    with pytest.raises(ValueError, match="short headers only"):
        DQUICHeader(ptype, 1, **kwargs)


def test_header_short_form_has_no_scid_or_version():
    with pytest.raises(ValueError, match="scid"):
        DQUICHeader(codec.PACKET_SHORT, 1, scid=b"s")
    with pytest.raises(ValueError, match="version"):
        DQUICHeader(codec.PACKET_SHORT, 1, version=1)


def test_header_other_versions_read_back():
    hdr = DQUICHeader(codec.PACKET_HANDSHAKE, 9, dcid=b"d", scid=b"s", version=0x00000001)
    back = DQUICHeader.from_bytes(hdr.to_bytes())
    assert back == hdr and back.version == 1


def test_header_from_bytes_largest_acked():
    hdr = DQUICHeader(codec.PACKET_SHORT, 0xAC5C02, largest_acked=0xABE8B3)
    # newer than largest_pn: the reference it was decoded against
    assert DQUICHeader.from_bytes(hdr.to_bytes(), largest_pn=0xABE8B3).largest_acked == 0xABE8B3
    assert DQUICHeader.from_bytes(DQUICHeader(codec.PACKET_SHORT, 7).to_bytes()).largest_acked is None
    # an older, reordered packet: the farthest reference that still encodes it
    old = DQUICHeader.from_bytes(DQUICHeader(codec.PACKET_SHORT, 2**40, largest_acked=2**40 - 1).to_bytes(),
                                 largest_pn=2**40 + 3)
    assert old.packet_number == 2**40 and old.largest_acked == 2**40 - 2**31 + 1 and old.to_bytes()
    assert DQUICHeader.from_bytes(b"\x40\x05", largest_pn=9).largest_acked is None
    # nothing received yet: a sender with nothing acknowledged cannot send 2**31 - 1
    with pytest.raises(ProtocolError, match="2\\*\\*31"):
        DQUICHeader.from_bytes(b"\x43\x7f\xff\xff\xff")


def test_header_from_bytes_malformed():
    good = DQUICHeader(codec.PACKET_HANDSHAKE, 77, dcid=b"abc", scid=b"de").to_bytes()
    for cut in range(len(good)):
        with pytest.raises(ProtocolError):
            DQUICHeader.from_bytes(good[:cut])
    with pytest.raises(ProtocolError, match="fixed bit"):
        DQUICHeader.from_bytes(bytes([good[0] & ~0x40]) + good[1:])
    with pytest.raises(ProtocolError):
        DQUICHeader.from_bytes(b"\x40" + b"c" * 30)  # inferred DCID longer than 20
    # Length field smaller than the packet number
    bad = bytearray(good)
    bad[-3:-1] = b"\x40\x00"
    with pytest.raises(ProtocolError, match="Length"):
        DQUICHeader.from_bytes(bytes(bad))


def test_header_seed_bytes_parse_with_pull_header():
    data = DQUICHeader(codec.PACKET_INITIAL, 300, dcid=b"q" * 20, scid=b"r" * 20).to_bytes()
    hdr = codec.pull_header(codec.Buffer(data), 0)
    assert hdr.dcid == b"q" * 20 and hdr.payload_end == len(data)


# -- DQUICFrame -----------------------------------------------------------------------------
def test_frame_attributes_and_bytes():
    frame = DQUICFrame(4, 0x0E, 100, 50)
    assert (frame.stream_id, frame.frame_type, frame.offset, frame.length) == (4, 0x0E, 100, 50)
    assert not frame.fin
    data = frame.to_bytes()
    # OFF and LEN are always written, even for offset 0
    assert data == b"\x0e" + ref_varint(4) + ref_varint(100) + ref_varint(50)
    assert DQUICFrame(1, 0x0E, 0, 3).to_bytes() == b"\x0e\x01\x00\x03"


def test_frame_fin_bit_carried():
    frame = DQUICFrame(1, 0x0F, 0, 10)
    assert frame.fin
    assert frame.to_bytes()[0] == 0x0F
    assert DQUICFrame.from_bytes(frame.to_bytes()).fin


@pytest.mark.parametrize("sid,off,length", [(0, 0, 0), (2**62 - 1, 0, 0), (5, 2**62 - 2, 1), (63, 64, 16384)])
def test_frame_round_trip(sid, off, length):
    frame = DQUICFrame(sid, 0x0E, off, length)
    back = DQUICFrame.from_bytes(frame.to_bytes())
    assert back == frame
    assert back.frame_type == 0x0E
    assert (back.stream_id, back.offset, back.length) == (sid, off, length)


def test_frame_from_bytes_other_wire_forms():
    # without OFF/LEN: offset 0, length = bytes after the header
    back = DQUICFrame.from_bytes(b"\x09\x05" + b"x" * 7)
    assert (back.stream_id, back.offset, back.length, back.fin) == (5, 0, 7, True)
    # ... returned in the explicit form to_bytes writes
    assert back.frame_type == 0x0F and back.to_bytes() == b"\x0f\x05\x00\x07"
    # the compiled decoder agrees with the seed class on a full frame
    data = ref_stream_header(5, 9, 3, False) + b"abc"
    assert decode_stream_frame_header(data)[:3] == (5, 9, 3)
    back = DQUICFrame.from_bytes(data)
    assert (back.stream_id, back.offset, back.length) == (5, 9, 3)


def test_frame_set_length_and_append_offset():
    frame = DQUICFrame(3, 0x0E, 10, 0)
    frame.set_length(20)
    frame.append_offset(20)
    assert (frame.offset, frame.length) == (30, 20)
    assert DQUICFrame.from_bytes(frame.to_bytes()) == frame
    with pytest.raises(ValueError):
        frame.set_length(2**62)
    with pytest.raises(ValueError):
        frame.append_offset(2**62 - 40)
    with pytest.raises(ValueError):
        frame.set_length(-1)
    with pytest.raises(TypeError):
        frame.set_length("5")
    with pytest.raises(TypeError):
        frame.append_offset(1.0)
    assert (frame.offset, frame.length) == (30, 20)


@pytest.mark.parametrize("args", [(0, 0x07, 0, 0), (0, 0x10, 0, 0), (-1, 0x0E, 0, 0), (2**62, 0x0E, 0, 0),
                                  (0, 0x0E, -1, 0), (0, 0x0E, 0, -1), (0, 0x0E, 2**62 - 1, 1)]
                         # STREAM types without OFF or LEN: the frame always writes both fields
                         + [(1, t, 0, 5) for t in range(0x08, 0x0E)])
def test_frame_value_errors(args):
    with pytest.raises(ValueError):
        DQUICFrame(*args)


@pytest.mark.parametrize("args", [("1", 0x0E, 0, 0), (1, "14", 0, 0), (1, 0x0E, None, 0), (1, 0x0E, 0, 2.0),
                                  (None, 0x0E, 0, 0)])
def test_frame_type_errors(args):
    with pytest.raises(TypeError):
        DQUICFrame(*args)


def test_frame_from_bytes_malformed():
    good = DQUICFrame(300, 0x0E, 70000, 5).to_bytes()
    for cut in range(len(good)):
        with pytest.raises(ProtocolError):
            DQUICFrame.from_bytes(good[:cut])
    with pytest.raises(ProtocolError, match="not a STREAM frame"):
        DQUICFrame.from_bytes(b"\x06\x00\x00")
    with pytest.raises(ProtocolError, match="2\\*\\*62"):
        DQUICFrame.from_bytes(b"\x0e\x00" + ref_varint(2**62 - 1) + b"\x05")


def test_frame_repr_and_equality():
    a = DQUICFrame(1, 0x0E, 2, 3)
    assert "DQUICFrame" in repr(a)
    assert a == DQUICFrame(1, 0x0E, 2, 3)
    assert a != DQUICFrame(1, 0x0F, 2, 3)
    assert (a == "x") is False


# -- every value the constructors accept round-trips ------------------------------------------
# Values are drawn from a wider domain than the constructors accept (boundaries included); a
# constructor that refuses a draw is fine, one that accepts it must get it back from the wire
# with every attribute equal (by value and type), not merely ``==``.
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _near(*points):
    return st.one_of([st.integers(p - 2, p + 2) for p in points])


# mostly values the constructors take, around every boundary, and some just outside them
_u62 = st.one_of(st.integers(0, 300), _near(2**6, 2**7, 2**8, 2**14, 2**15, 2**16, 2**22, 2**23,
                                             2**30, 2**31, 2**32, 2**40, 2**61, 2**62 - 2),
                 st.integers(0, 2**62 - 1))
_out_of_range = st.sampled_from([-1, 2**62, 2**64, True])
_bits = st.sampled_from([0, 1, 0, 1, 0, 1, 2, -1, False, True])
_cids = st.binary(max_size=21)
_bytes = st.one_of(st.just(b""), st.binary(max_size=200))


def _public_attributes(obj):
    names = [n for n in dir(obj) if not n.startswith("_") and not callable(getattr(obj, n))]
    return {n: (type(getattr(obj, n)), getattr(obj, n)) for n in names}


def _accepted(cls, *args, **kwargs):
    try:
        obj = cls(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        event(f"refused: {exc}"[:50])
        return None
    event("accepted")
    return obj


@st.composite
def _header_arguments(draw):
    """Arguments the constructor should take (every field over its range and boundaries),
    now and then with one of them pushed off its domain."""
    ptype = draw(st.sampled_from([codec.PACKET_INITIAL, codec.PACKET_HANDSHAKE, codec.PACKET_SHORT]))
    short = ptype == codec.PACKET_SHORT
    pn = draw(_u62)
    distance = draw(st.one_of(st.none(), st.integers(1, 300), _near(2**7, 2**15, 2**23, 2**31 - 2)))
    largest_acked = None if distance is None or distance > pn else pn - distance
    if largest_acked is None and pn >= 2**31 - 1:
        largest_acked = pn - draw(st.integers(1, 2**31 - 1))
    kwargs = dict(
        packet_type=ptype, packet_number=pn, largest_acked=largest_acked, dcid=draw(st.binary(max_size=20)),
        scid=b"" if short else draw(st.binary(max_size=20)),
        version=codec.DQUIC_VERSION_1 if short else draw(st.one_of(st.just(codec.DQUIC_VERSION_1), st.just(1),
                                                             st.integers(1, 2**32 - 1))),
        token=draw(_bytes) if ptype == codec.PACKET_INITIAL else b"",
        key_phase=draw(st.sampled_from([0, 1])) if short else 0, spin=draw(st.sampled_from([0, 1])) if short else 0)
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(sorted(kwargs)))
        kwargs[name] = draw({
            "packet_type": st.sampled_from([1, 3, 5, 6, -1, True, False]),
            "packet_number": st.one_of(_out_of_range, _near(2**31)),
            "largest_acked": st.one_of(_out_of_range, st.just(pn), st.just(pn - 2**31), st.just(pn + 1)),
            "dcid": st.binary(min_size=21, max_size=22), "scid": st.binary(min_size=1, max_size=22),
            "version": st.sampled_from([0, 2**32, 1, 0x12345678]),
            "token": st.binary(min_size=1, max_size=3), "key_phase": _bits, "spin": _bits}[name])
    kwargs["wrap"] = draw(st.sampled_from([bytes, bytearray, memoryview]))
    return kwargs


_short_2_31 = dict(packet_type=codec.PACKET_SHORT, packet_number=2**31 - 1, largest_acked=None, dcid=b"", scid=b"",
                   version=codec.DQUIC_VERSION_1, token=b"", key_phase=0, spin=0, wrap=bytes)


@PROPERTY
@given(_header_arguments())
@example(_short_2_31)
@example(dict(_short_2_31, packet_type=codec.PACKET_INITIAL, packet_number=5, key_phase=1))
@example(dict(_short_2_31, packet_number=5, scid=b"s"))
@example(dict(_short_2_31, packet_type=codec.PACKET_HANDSHAKE, packet_number=5, version=0x12345678))
def test_header_everything_accepted_round_trips(args):
    args = dict(args)
    wrap = args.pop("wrap")
    for name in ("dcid", "scid", "token"):
        if isinstance(args[name], bytes):
            args[name] = wrap(args[name])
    hdr = _accepted(DQUICHeader, **args)
    if hdr is None:
        return
    data = hdr.to_bytes()
    largest_pn = -1 if hdr.largest_acked is None else hdr.largest_acked
    back = DQUICHeader.from_bytes(data, largest_pn=largest_pn)
    assert _public_attributes(back) == _public_attributes(hdr)
    assert back.to_bytes() == data
    # a short header followed by its payload, with the DCID length given as a receiver knows it
    if hdr.packet_type == codec.PACKET_SHORT:
        back = DQUICHeader.from_bytes(data + b"payload", largest_pn=largest_pn, dcid_len=len(hdr.dcid))
        assert _public_attributes(back) == _public_attributes(hdr)


@PROPERTY
@given(sid=st.one_of(_u62, _u62, _out_of_range), ftype=st.one_of(st.sampled_from([0x0E, 0x0F]),
                                                                 st.integers(0x06, 0x11)),
       offset=st.one_of(_u62, _out_of_range), length=st.one_of(_u62, _out_of_range),
       steps=st.lists(st.tuples(st.booleans(), st.one_of(_u62, _out_of_range)), max_size=3))
@example(sid=1, ftype=0x08, offset=0, length=5, steps=[])
@example(sid=1, ftype=0x0B, offset=0, length=5, steps=[])
def test_frame_everything_accepted_round_trips(sid, ftype, offset, length, steps):
    frame = _accepted(DQUICFrame, sid, ftype, offset, length)
    if frame is None:
        return
    for is_length, n in steps:  # the mutators keep the frame encodable too
        try:
            frame.set_length(n) if is_length else frame.append_offset(n)
        except (ValueError, TypeError):
            pass
    back = DQUICFrame.from_bytes(frame.to_bytes())
    assert _public_attributes(back) == _public_attributes(frame)
    assert back.to_bytes() == frame.to_bytes()


@PROPERTY
@given(data=st.binary(max_size=40), largest_pn=st.one_of(st.just(-1), st.integers(0, 2**62 - 1)))
def test_header_from_bytes_gives_an_encodable_header_or_protocol_error(data, largest_pn):
    try:
        hdr = DQUICHeader.from_bytes(data, largest_pn=largest_pn)
    except ProtocolError:
        return
    assert hdr.to_bytes()  # whatever decodes is a header the constructor accepts and can write


@PROPERTY
@given(data=st.binary(max_size=40))
def test_frame_from_bytes_gives_the_explicit_form(data):
    try:
        frame = DQUICFrame.from_bytes(data)
    except ProtocolError:
        return
    assert frame.frame_type == 0x0E | (data[0] & 0x01)
    assert _public_attributes(DQUICFrame.from_bytes(frame.to_bytes())) == _public_attributes(frame)
