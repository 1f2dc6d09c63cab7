"""Benchmarks of the compiled codec against the pure-Python struct baseline.

Run:  python -m pytest bench/test_bench_codec.py --benchmark-only
      (add --benchmark-json=out.json to keep the figures; groups pair "compiled" with "baseline")

Each group measures one operation both ways, one call against one call: the compiled
single-call entry points of ``codec_fast.pyx`` (``encode_stream_frame``, ``decode_stream_frame``,
``encode_short_header``/``decode_short_header``, ``encode_long_header``/``decode_long_header``,
``encode_ack``/``decode_ack``) against the same signatures in ``baseline_codec``, which builds
them from a straightforward cursor-and-``struct`` implementation. Rows named ``objects`` measure
the Buffer/frame-object API of the compiled codec for the same operation. Every case first
checks that all implementations produce the same bytes / values, so a fast wrong answer cannot
win.

``decode_stream_frame`` returns the payload's bounds (start, end) rather than a view or a copy;
the baseline's single-call form returns the same bounds. ``decode_ack`` returns the ranges as
flat bounds (start0, stop0, start1, ...) rather than one (start, stop) tuple per range; the
baseline's single-call form parses into the same flat bounds (in a list).
"""
from __future__ import annotations

import pytest

import baseline_codec as py
from cython_build import import_pyx
from dquic._codec import (
    DQUIC_VERSION_1,
    PACKET_INITIAL,
    Buffer,
    patch_length,
    pull_header,
    pull_packet_number,
    push_long_header,
    push_short_header,
)
from dquic._frames import (
    AckFrame,
    StreamFrame,
    decode_stream_frame_header,
    pull_frame,
    push_ack_frame,
    push_frame,
    push_stream_frame_header,
)

import_pyx("codec_fast")  # bench/codec_fast.pyx, compiled on first use
from codec_fast import (  # noqa: E402
    bench_decode_stream_headers,
    decode_ack,
    decode_long_header,
    decode_short_header,
    decode_stream_frame,
    encode_ack,
    encode_long_header,
    encode_short_header,
    encode_stream_frame,
)

# Every round runs enough iterations to last at least 50 µs, so the timer's own cost and the
# noise of a single preempted call do not count towards a ~100 ns operation (by default a busy
# machine can calibrate fast cases to one call per round). Same setting for every row.
pytestmark = pytest.mark.benchmark(min_time=0.00005)

DCID = b"\x8a" * 8
SCID = b"\x5c" * 8
TOKEN = b"t" * 32
PAYLOADS = {"16B": b"s" * 16, "1200B": b"L" * 1200}
STREAM_ID = 4
STREAM_OFFSET = 100_000
ACK_DELAY = 25


def ack_ranges(n):
    # n disjoint ranges of 3 packets separated by 2 missing packets, the top one near 10_000
    return [(10_000 - 5 * (n - i), 10_000 - 5 * (n - i) + 3) for i in range(n)]


# -- headers ---------------------------------------------------------------------------------
def compiled_short_header():
    return decode_short_header(encode_short_header(DCID, 0x1234, 2), 8)


def baseline_short_header():
    return py.decode_short_header(py.encode_short_header(DCID, 0x1234, 2), 8)


def objects_short_header():
    buf = Buffer(capacity=32)
    push_short_header(buf, DCID, 0x1234, 2)
    rbuf = Buffer(buf.data)
    hdr = pull_header(rbuf, 8)
    return hdr.dcid, pull_packet_number(rbuf, 2), hdr.pn_offset


def compiled_long_header():
    return decode_long_header(encode_long_header(PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID, TOKEN,
                                                 0x1234, 2))


def baseline_long_header():
    return py.decode_long_header(py.encode_long_header(PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID,
                                                       TOKEN, 0x1234, 2))


def objects_long_header():
    buf = Buffer(capacity=128)
    off = push_long_header(buf, PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID, TOKEN, 0x1234, 2)
    patch_length(buf, off, 2)
    rbuf = Buffer(buf.data)
    hdr = pull_header(rbuf, 8)
    return hdr.dcid, hdr.scid, hdr.token, pull_packet_number(rbuf, 2), hdr.payload_end


HEADER_CASES = {
    ("short", "compiled"): compiled_short_header, ("short", "baseline"): baseline_short_header,
    ("short", "objects"): objects_short_header,
    ("long", "compiled"): compiled_long_header, ("long", "baseline"): baseline_long_header,
    ("long", "objects"): objects_long_header,
}


def test_header_results_agree():
    """Not a benchmark: the three implementations agree, down to the bytes."""
    for form in ("short", "long"):
        assert HEADER_CASES[(form, "compiled")]() == HEADER_CASES[(form, "baseline")]()
    dcid, pn, pn_len, _, _, payload_offset = compiled_short_header()
    assert objects_short_header() == (dcid, pn, payload_offset - pn_len)
    _, _, dcid, scid, token, pn, _, _, end = compiled_long_header()
    assert objects_long_header() == (dcid, scid, token, pn, end)
    assert encode_short_header(DCID, 0x1234, 2) == py.encode_short_header(DCID, 0x1234, 2)
    args = (PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID, TOKEN, 0x1234, 2)
    assert encode_long_header(*args) == py.encode_long_header(*args)
    data = encode_long_header(*args)
    assert decode_long_header(data) == py.decode_long_header(data)
    data = encode_short_header(DCID, 0x1234, 2)
    assert decode_short_header(data, 8) == py.decode_short_header(data, 8)


@pytest.mark.parametrize("impl", ["compiled", "baseline", "objects"])
@pytest.mark.parametrize("form", ["short", "long"])
def test_header_encode_decode(benchmark, impl, form):
    benchmark.group = f"header {form}: encode+decode"
    test_header_results_agree()
    benchmark(HEADER_CASES[(form, impl)])


# -- STREAM frames ---------------------------------------------------------------------------
def objects_stream_encode(payload):
    buf = Buffer(capacity=1300)
    push_stream_frame_header(buf, STREAM_ID, STREAM_OFFSET, len(payload), False)
    buf.push_bytes(payload)
    return buf.data


def objects_stream_decode(data):
    return pull_frame(Buffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline", "objects"])
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_stream_frame_encode(benchmark, impl, size):
    payload = PAYLOADS[size]
    benchmark.group = f"STREAM {size}: encode"
    expected = py.encode_stream_frame(STREAM_ID, STREAM_OFFSET, payload, False)
    assert encode_stream_frame(STREAM_ID, STREAM_OFFSET, payload, False) == expected
    assert objects_stream_encode(payload) == expected
    if impl == "objects":
        benchmark(objects_stream_encode, payload)
    else:
        fn = encode_stream_frame if impl == "compiled" else py.encode_stream_frame
        benchmark(fn, STREAM_ID, STREAM_OFFSET, payload, False)


@pytest.mark.parametrize("impl", ["compiled", "baseline", "objects"])
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_stream_frame_decode(benchmark, impl, size):
    payload = PAYLOADS[size]
    data = py.encode_stream_frame(STREAM_ID, STREAM_OFFSET, payload, False)
    benchmark.group = f"STREAM {size}: decode"
    got = decode_stream_frame(data)
    assert got == py.decode_stream_frame(data)
    assert data[got[3]:got[4]] == payload
    frame = objects_stream_decode(data)
    assert (frame.stream_id, frame.offset, frame.fin, bytes(frame.data)) == got[:3] + (payload,)
    if impl == "objects":
        benchmark(objects_stream_decode, data)
    else:
        benchmark(decode_stream_frame if impl == "compiled" else py.decode_stream_frame, data)


def baseline_stream_header_decode(data):
    return py.pull_stream_frame_header(py.PyBuffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
def test_stream_frame_header_decode(benchmark, impl):
    """Raw STREAM frame header decode (stream id, offset, length, fin) in one call."""
    data = py.encode_stream_frame(STREAM_ID, STREAM_OFFSET, PAYLOADS["16B"], False)
    benchmark.group = "STREAM header: decode only"
    assert decode_stream_frame_header(data)[:4] == baseline_stream_header_decode(data)
    benchmark(decode_stream_frame_header if impl == "compiled" else baseline_stream_header_decode, data)


def test_stream_frame_header_decode_c_loop(benchmark):
    """The same decode in a tight C loop (no Python call per decode); extra_info has ns/decode."""
    data = py.encode_stream_frame(STREAM_ID, STREAM_OFFSET, PAYLOADS["16B"], False)
    n = 1_000_000
    benchmark.group = "STREAM header: decode in a C loop (1e6 per round)"
    elapsed = benchmark(bench_decode_stream_headers, data, n)
    benchmark.extra_info["ns_per_decode"] = elapsed / n


# -- ACK frames ------------------------------------------------------------------------------
def objects_ack_encode(ranges):
    buf = Buffer(capacity=600)
    push_ack_frame(buf, ranges, ACK_DELAY)
    return buf.data


def objects_ack_decode(data):
    return pull_frame(Buffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline", "objects"])
@pytest.mark.parametrize("n", [1, 8, 32])
def test_ack_frame_encode(benchmark, impl, n):
    ranges = ack_ranges(n)
    benchmark.group = f"ACK {n} ranges: encode"
    expected = py.encode_ack(ranges, ACK_DELAY)
    assert encode_ack(ranges, ACK_DELAY) == expected
    assert objects_ack_encode(ranges) == expected
    if impl == "objects":
        benchmark(objects_ack_encode, ranges)
    else:
        benchmark(encode_ack if impl == "compiled" else py.encode_ack, ranges, ACK_DELAY)


@pytest.mark.parametrize("impl", ["compiled", "baseline", "objects"])
@pytest.mark.parametrize("n", [1, 8, 32])
def test_ack_frame_decode(benchmark, impl, n):
    ranges = ack_ranges(n)
    data = py.encode_ack(ranges, ACK_DELAY)
    benchmark.group = f"ACK {n} ranges: decode"
    bounds = [x for r in ranges for x in r]
    got = decode_ack(data)
    assert py.decode_ack(data) == (bounds, ACK_DELAY, None, len(data))
    assert got == (tuple(bounds), ACK_DELAY, None, len(data))  # a tuple: same values
    assert encode_ack(got[0], ACK_DELAY) == data
    frame = objects_ack_decode(data)
    assert isinstance(frame, AckFrame)
    assert (frame.ranges, frame.ack_delay, frame.ecn) == (ranges, ACK_DELAY, None)
    if impl == "objects":
        benchmark(objects_ack_decode, data)
    else:
        benchmark(decode_ack if impl == "compiled" else py.decode_ack, data)


def test_stream_frame_object_round_trip_matches_baseline():
    """Not a benchmark: the frame-object path agrees with the baseline bytes too."""
    for payload in PAYLOADS.values():
        frame = StreamFrame(STREAM_ID, STREAM_OFFSET, payload)
        buf = Buffer(capacity=1300)
        push_frame(buf, frame)
        assert buf.data == py.encode_stream_frame(STREAM_ID, STREAM_OFFSET, payload, False)
