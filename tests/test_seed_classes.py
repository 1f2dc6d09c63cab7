"""Tests of the seed classes DQUICHeader and DQUICFrame."""
from __future__ import annotations

import pytest

from dquic._codec import (
    DQUIC_VERSION_1,
    PACKET_HANDSHAKE,
    PACKET_INITIAL,
    PACKET_RETRY,
    PACKET_SHORT,
    PACKET_VERSION_NEGOTIATION,
    PACKET_ZERO_RTT,
    Buffer,
    decode_stream_frame_header,
    pull_header,
)
from dquic._seed import DQUICFrame, DQUICHeader
from dquic.errors import ProtocolError
from test_codec_reference import ref_long_header, ref_short_header, ref_stream_header, ref_varint


# -- DQUICHeader ----------------------------------------------------------------------------
@pytest.mark.parametrize("ptype", [PACKET_INITIAL, PACKET_HANDSHAKE, PACKET_SHORT])
@pytest.mark.parametrize("pn", [0, 1, 127, 128, 40000, 2**24, 2**31 - 2])
def test_header_round_trip(ptype, pn):
    hdr = DQUICHeader(ptype, pn, dcid=b"\x01\x02\x03\x04", scid=b"\x05" if ptype != PACKET_SHORT else b"")
    data = hdr.to_bytes()
    back = DQUICHeader.from_bytes(data)
    assert back == hdr
    assert back.packet_type == ptype and back.packet_number == pn


def test_header_attributes_and_defaults():
    hdr = DQUICHeader(PACKET_INITIAL, 5)
    assert hdr.packet_type == PACKET_INITIAL and hdr.packet_number == 5
    assert hdr.dcid == b"" and hdr.scid == b"" and hdr.version == DQUIC_VERSION_1
    assert hdr.largest_acked is None and hdr.token == b""
    assert "DQUICHeader" in repr(hdr)


def test_header_bytes_match_reference():
    hdr = DQUICHeader(PACKET_INITIAL, 0x1234, dcid=b"d" * 8, scid=b"s" * 3, token=b"tok")
    assert hdr.to_bytes() == ref_long_header(PACKET_INITIAL, DQUIC_VERSION_1, b"d" * 8, b"s" * 3, b"tok",
                                             0x1234, 2, 2)
    short = DQUICHeader(PACKET_SHORT, 7, dcid=b"c" * 5, key_phase=1, spin=1)
    assert short.to_bytes() == ref_short_header(b"c" * 5, 7, 1, 1, 1)


def test_header_truncation_uses_largest_acked():
    hdr = DQUICHeader(PACKET_SHORT, 0xAC5C02, largest_acked=0xABE8B3)
    data = hdr.to_bytes()
    assert len(data) == 1 + 2 and data[1:] == b"\x5c\x02"
    assert DQUICHeader.from_bytes(data, largest_pn=0xABE8B3).packet_number == 0xAC5C02
    # without the receiver's state the truncated value decodes as itself
    assert DQUICHeader.from_bytes(data).packet_number == 0x5C02


def test_header_from_bytes_short_with_payload_needs_dcid_len():
    hdr = DQUICHeader(PACKET_SHORT, 9, dcid=b"abcd")
    data = hdr.to_bytes() + b"payload"
    assert DQUICHeader.from_bytes(data, dcid_len=4) == hdr


def test_header_token_and_version_preserved():
    hdr = DQUICHeader(PACKET_INITIAL, 3, dcid=b"x", token=b"t" * 70)
    back = DQUICHeader.from_bytes(hdr.to_bytes())
    assert back.token == b"t" * 70 and back.version == DQUIC_VERSION_1


@pytest.mark.parametrize("ptype", [PACKET_ZERO_RTT, PACKET_RETRY, PACKET_VERSION_NEGOTIATION, 6, -1])
def test_header_rejects_packet_types_without_packet_number(ptype):
    with pytest.raises(ValueError):
        DQUICHeader(ptype, 0)


@pytest.mark.parametrize("kwargs", [dict(packet_number=-1), dict(packet_number=2**62),
                                    dict(dcid=b"x" * 21), dict(version=0), dict(version=2**32),
                                    dict(largest_acked=10, packet_number=10),
                                    dict(key_phase=2), dict(packet_type=PACKET_HANDSHAKE, token=b"t")])
def test_header_value_errors(kwargs):
    args = dict(packet_type=PACKET_INITIAL, packet_number=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        DQUICHeader(**args)


@pytest.mark.parametrize("kwargs", [dict(packet_number="1"), dict(packet_number=1.0),
                                    dict(packet_number=None), dict(packet_type="initial"),
                                    dict(packet_type=None), dict(dcid="abc"), dict(version=1.5),
                                    dict(largest_acked="3")])
def test_header_type_errors(kwargs):
    args = dict(packet_type=PACKET_INITIAL, packet_number=5)
    args.update(kwargs)
    with pytest.raises(TypeError):
        DQUICHeader(**args)


def test_header_to_bytes_too_many_unacked():
    with pytest.raises(ValueError):
        DQUICHeader(PACKET_SHORT, 2**40).to_bytes()
    assert DQUICHeader(PACKET_SHORT, 2**40, largest_acked=2**40 - 5).to_bytes()


def test_header_from_bytes_malformed():
    good = DQUICHeader(PACKET_HANDSHAKE, 77, dcid=b"abc", scid=b"de").to_bytes()
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
    data = DQUICHeader(PACKET_INITIAL, 300, dcid=b"q" * 20, scid=b"r" * 20).to_bytes()
    hdr = pull_header(Buffer(data), 0)
    assert hdr.dcid == b"q" * 20 and hdr.payload_end == len(data)


# -- DQUICFrame -----------------------------------------------------------------------------
def test_frame_attributes_and_bytes():
    frame = DQUICFrame(4, 0x08, 100, 50)
    assert (frame.stream_id, frame.frame_type, frame.offset, frame.length) == (4, 0x08, 100, 50)
    assert not frame.fin
    data = frame.to_bytes()
    # OFF and LEN are always written, even for offset 0
    assert data == b"\x0e" + ref_varint(4) + ref_varint(100) + ref_varint(50)
    assert DQUICFrame(1, 0x08, 0, 3).to_bytes() == b"\x0e\x01\x00\x03"


def test_frame_fin_bit_carried():
    frame = DQUICFrame(1, 0x09, 0, 10)
    assert frame.fin
    assert frame.to_bytes()[0] == 0x0F
    assert DQUICFrame.from_bytes(frame.to_bytes()).fin


@pytest.mark.parametrize("sid,off,length", [(0, 0, 0), (2**62 - 1, 0, 0), (5, 2**62 - 2, 1), (63, 64, 16384)])
def test_frame_round_trip(sid, off, length):
    frame = DQUICFrame(sid, 0x0A, off, length)
    back = DQUICFrame.from_bytes(frame.to_bytes())
    assert back == frame
    assert back.frame_type == 0x0E  # the wire type keeps OFF|LEN
    assert (back.stream_id, back.offset, back.length) == (sid, off, length)


def test_frame_from_bytes_other_wire_forms():
    # without OFF/LEN: offset 0, length = bytes after the header
    back = DQUICFrame.from_bytes(b"\x09\x05" + b"x" * 7)
    assert (back.stream_id, back.offset, back.length, back.fin) == (5, 0, 7, True)
    # the compiled decoder agrees with the seed class on a full frame
    data = ref_stream_header(5, 9, 3, False) + b"abc"
    assert decode_stream_frame_header(data)[:3] == (5, 9, 3)
    back = DQUICFrame.from_bytes(data)
    assert (back.stream_id, back.offset, back.length) == (5, 9, 3)


def test_frame_set_length_and_append_offset():
    frame = DQUICFrame(3, 0x08, 10, 0)
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


@pytest.mark.parametrize("args", [(0, 0x07, 0, 0), (0, 0x10, 0, 0), (-1, 0x08, 0, 0), (2**62, 0x08, 0, 0),
                                  (0, 0x08, -1, 0), (0, 0x08, 0, -1), (0, 0x08, 2**62 - 1, 1)])
def test_frame_value_errors(args):
    with pytest.raises(ValueError):
        DQUICFrame(*args)


@pytest.mark.parametrize("args", [("1", 0x08, 0, 0), (1, "8", 0, 0), (1, 0x08, None, 0), (1, 0x08, 0, 2.0),
                                  (None, 0x08, 0, 0)])
def test_frame_type_errors(args):
    with pytest.raises(TypeError):
        DQUICFrame(*args)


def test_frame_from_bytes_malformed():
    good = DQUICFrame(300, 0x08, 70000, 5).to_bytes()
    for cut in range(len(good)):
        with pytest.raises(ProtocolError):
            DQUICFrame.from_bytes(good[:cut])
    with pytest.raises(ProtocolError, match="not a STREAM frame"):
        DQUICFrame.from_bytes(b"\x06\x00\x00")
    with pytest.raises(ProtocolError, match="2\\*\\*62"):
        DQUICFrame.from_bytes(b"\x0e\x00" + ref_varint(2**62 - 1) + b"\x05")


def test_frame_repr_and_equality():
    a = DQUICFrame(1, 0x08, 2, 3)
    assert "DQUICFrame" in repr(a)
    assert a == DQUICFrame(1, 0x0E, 2, 3)
    assert a != DQUICFrame(1, 0x09, 2, 3)
    assert (a == "x") is False
