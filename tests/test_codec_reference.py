"""An independent, deliberately simple reference encoder for the dquic v1 wire format.

It is written straight from PROTOCOL.md (not from the compiled codec, and differently from
the struct-based baseline in bench/): integers are built with ``int.to_bytes`` and every
frame is assembled by concatenation. ``test_codec.py`` and ``test_codec_hypothesis.py``
compare the compiled encoder with it byte for byte. The tests in this file check the
reference itself against RFC 9000's published examples so that a cross-check failure points
at the codec.
"""
from __future__ import annotations

V1 = 0x44510001


def ref_varint(value: int) -> bytes:
    """Minimal RFC 9000 §16 encoding: pick the width, set the 2-bit prefix."""
    assert 0 <= value < 2**62
    for prefix, width in ((0, 1), (1, 2), (2, 4), (3, 8)):
        if value < 2 ** (8 * width - 2):
            raw = value.to_bytes(width, "big")
            return bytes([raw[0] | (prefix << 6)]) + raw[1:]
    raise AssertionError("unreachable")


def ref_varint_width(value: int, width: int) -> bytes:
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[width]
    raw = value.to_bytes(width, "big")
    assert raw[0] < 64
    return bytes([raw[0] | (prefix << 6)]) + raw[1:]


def ref_ack_body(ranges, delay, ecn):
    """ACK fields from ascending half-open ranges (RFC 9000 §19.3)."""
    desc = sorted(ranges, reverse=True)
    top_start, top_stop = desc[0]
    out = [ref_varint(top_stop - 1), ref_varint(delay), ref_varint(len(desc) - 1),
           ref_varint(top_stop - 1 - top_start)]
    below = top_start
    for start, stop in desc[1:]:
        largest = stop - 1
        out.append(ref_varint(below - largest - 2))
        out.append(ref_varint(largest - start))
        below = start
    if ecn is not None:
        out.extend(ref_varint(x) for x in ecn)
    return b"".join(out)


# frames that are a type byte and then varints, one per attribute (RFC 9000 §19)
_VARINT_FIELDS = {
    "PingFrame": (0x01, ()),
    "ResetStreamFrame": (0x04, ("stream_id", "error_code", "final_size")),
    "StopSendingFrame": (0x05, ("stream_id", "error_code")),
    "MaxDataFrame": (0x10, ("maximum",)),
    "MaxStreamDataFrame": (0x11, ("stream_id", "maximum")),
    "MaxStreamsFrame": (0x12, ("maximum",)),
    "DataBlockedFrame": (0x14, ("limit",)),
    "StreamDataBlockedFrame": (0x15, ("stream_id", "limit")),
    "StreamsBlockedFrame": (0x16, ("limit",)),
    "RetireConnectionIdFrame": (0x19, ("sequence",)),
    "HandshakeDoneFrame": (0x1E, ()),
}


def ref_frame(frame) -> bytes:
    """Encode a frame object by reading its attributes."""
    name = type(frame).__name__
    v = ref_varint
    if name == "PaddingFrame":
        return b"\x00" * frame.length
    if name in _VARINT_FIELDS:
        type_byte, fields = _VARINT_FIELDS[name]
        return bytes([type_byte]) + b"".join(v(getattr(frame, field)) for field in fields)
    if name == "AckFrame":
        return (b"\x03" if frame.ecn is not None else b"\x02") + ref_ack_body(frame.ranges, frame.ack_delay, frame.ecn)
    if name == "CryptoFrame":
        data = bytes(frame.data)
        return b"\x06" + v(frame.offset) + v(len(data)) + data
    if name == "NewTokenFrame":
        tok = bytes(frame.token)
        return b"\x07" + v(len(tok)) + tok
    if name == "StreamFrame":
        data = bytes(frame.data)
        t = 0x08 | (0x04 if frame.offset else 0) | (0x02 if frame.has_length else 0) | (1 if frame.fin else 0)
        out = bytes([t]) + v(frame.stream_id)
        if frame.offset:
            out += v(frame.offset)
        if frame.has_length:
            out += v(len(data))
        return out + data
    if name == "NewConnectionIdFrame":
        cid = bytes(frame.connection_id)
        return (b"\x18" + v(frame.sequence) + v(frame.retire_prior_to) + bytes([len(cid)]) + cid
                + bytes(frame.stateless_reset_token))
    if name == "PathChallengeFrame":
        return b"\x1a" + bytes(frame.data)
    if name == "PathResponseFrame":
        return b"\x1b" + bytes(frame.data)
    if name == "ConnectionCloseFrame":
        reason = bytes(frame.reason)
        if frame.application:
            return b"\x1d" + v(frame.error_code) + v(len(reason)) + reason
        return b"\x1c" + v(frame.error_code) + v(frame.frame_type or 0) + v(len(reason)) + reason
    if name == "DatagramFrame":
        data = bytes(frame.data)
        if frame.has_length:
            return b"\x31" + v(len(data)) + data
        return b"\x30" + data
    raise AssertionError(f"reference encoder does not know {name}")


def ref_long_header(ptype, version, dcid, scid, token, pn, pn_len, length):
    first = 0x80 | 0x40 | (ptype << 4) | (pn_len - 1)
    out = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if ptype == 0:
        out += ref_varint(len(token)) + token
    return out + ref_varint_width(length, 2) + pn.to_bytes(pn_len, "big")


def ref_short_header(dcid, pn, pn_len, key_phase=0, spin=0):
    first = 0x40 | (spin << 5) | (key_phase << 2) | (pn_len - 1)
    return bytes([first]) + dcid + pn.to_bytes(pn_len, "big")


def ref_stream_header(stream_id, offset, length, fin):
    t = 0x08 | 0x02 | (0x04 if offset else 0) | (1 if fin else 0)
    return bytes([t]) + ref_varint(stream_id) + (ref_varint(offset) if offset else b"") + ref_varint(length)


# -- the reference checks itself against RFC 9000's examples --------------------------------

def test_reference_varint_rfc_examples():
    assert ref_varint(151288809941952652) == bytes.fromhex("c2197c5eff14e88c")
    assert ref_varint(494878333) == bytes.fromhex("9d7f3e7d")
    assert ref_varint(15293) == bytes.fromhex("7bbd")
    assert ref_varint(37) == bytes.fromhex("25")
    assert ref_varint_width(37, 2) == bytes.fromhex("4025")


def test_reference_ack_body_two_ranges():
    # ranges [0,5) and [7,10): largest 9, first range 2 (7..9), gap 1 (5 and 6 missing:
    # 7 - 4 - 2), range length 4 (0..4)
    assert ref_ack_body([(0, 5), (7, 10)], 3, None) == bytes([9, 3, 1, 2, 1, 4])
