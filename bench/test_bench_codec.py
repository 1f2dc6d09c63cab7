"""Benchmarks of the compiled codec against the pure-Python struct baseline.

Run:  python -m pytest bench/test_bench_codec.py --benchmark-only
      (add --benchmark-json=out.json to keep the figures; groups pair "compiled" with "baseline")

Each group measures one operation both ways; every case first checks that the two
implementations produce the same bytes / values, so a fast wrong answer cannot win.
"""
from __future__ import annotations

import pytest

import baseline_codec as py
from dquic._codec import (
    DQUIC_VERSION_1,
    PACKET_INITIAL,
    AckFrame,
    Buffer,
    StreamFrame,
    _bench_decode_stream_headers,
    decode_stream_frame_header,
    patch_length,
    pull_frame,
    pull_header,
    pull_packet_number,
    push_ack_frame,
    push_long_header,
    push_short_header,
    push_stream_frame_header,
)

DCID = b"\x8a" * 8
SCID = b"\x5c" * 8
TOKEN = b"t" * 32
PAYLOADS = {"16B": b"s" * 16, "1200B": b"L" * 1200}
STREAM_ID = 4
STREAM_OFFSET = 100_000


def ack_ranges(n):
    # n disjoint ranges of 3 packets separated by 2 missing packets, the top one near 10_000
    return [(10_000 - 5 * (n - i), 10_000 - 5 * (n - i) + 3) for i in range(n)]


# -- headers ---------------------------------------------------------------------------------
def compiled_short_header():
    buf = Buffer(capacity=32)
    push_short_header(buf, DCID, 0x1234, 2)
    rbuf = Buffer(buf.data)
    hdr = pull_header(rbuf, 8)
    return hdr.dcid, pull_packet_number(rbuf, 2)


def baseline_short_header():
    buf = py.PyBuffer()
    py.push_short_header(buf, DCID, 0x1234, 2)
    rbuf = py.PyBuffer(bytes(buf.data))
    hdr = py.pull_header(rbuf, 8)
    return hdr[2], rbuf.pull_uint(2)


def compiled_long_header():
    buf = Buffer(capacity=128)
    off = push_long_header(buf, PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID, TOKEN, 0x1234, 2)
    patch_length(buf, off, 2)
    rbuf = Buffer(buf.data)
    hdr = pull_header(rbuf, 8)
    return hdr.dcid, hdr.scid, hdr.token, pull_packet_number(rbuf, 2)


def baseline_long_header():
    buf = py.PyBuffer()
    off = py.push_long_header(buf, PACKET_INITIAL, DQUIC_VERSION_1, DCID, SCID, TOKEN, 0x1234, 2)
    py.patch_length(buf, off, 2)
    rbuf = py.PyBuffer(bytes(buf.data))
    hdr = py.pull_header(rbuf, 8)
    return hdr[2], hdr[3], hdr[4], rbuf.pull_uint(2)


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
@pytest.mark.parametrize("form", ["short", "long"])
def test_header_encode_decode(benchmark, impl, form):
    benchmark.group = f"header {form}: encode+decode"
    fns = {("short", "compiled"): compiled_short_header, ("short", "baseline"): baseline_short_header,
           ("long", "compiled"): compiled_long_header, ("long", "baseline"): baseline_long_header}
    assert compiled_short_header() == baseline_short_header()
    assert compiled_long_header() == baseline_long_header()
    benchmark(fns[(form, impl)])


# -- STREAM frames ---------------------------------------------------------------------------
def compiled_stream_encode(payload):
    buf = Buffer(capacity=1300)
    push_stream_frame_header(buf, STREAM_ID, STREAM_OFFSET, len(payload), False)
    buf.push_bytes(payload)
    return buf.data


def baseline_stream_encode(payload):
    buf = py.PyBuffer()
    py.push_stream_frame(buf, STREAM_ID, STREAM_OFFSET, payload, False)
    return bytes(buf.data)


def compiled_stream_decode(data):
    return pull_frame(Buffer(data))


def baseline_stream_decode(data):
    return py.pull_stream_frame(py.PyBuffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_stream_frame_encode(benchmark, impl, size):
    payload = PAYLOADS[size]
    benchmark.group = f"STREAM {size}: encode"
    assert compiled_stream_encode(payload) == baseline_stream_encode(payload)
    benchmark(compiled_stream_encode if impl == "compiled" else baseline_stream_encode, payload)


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
@pytest.mark.parametrize("size", list(PAYLOADS))
def test_stream_frame_decode(benchmark, impl, size):
    payload = PAYLOADS[size]
    data = compiled_stream_encode(payload)
    benchmark.group = f"STREAM {size}: decode"
    a, b = compiled_stream_decode(data), baseline_stream_decode(data)
    assert (a.stream_id, a.offset, bytes(a.data), a.fin) == (b.stream_id, b.offset, bytes(b.data), b.fin)
    benchmark(compiled_stream_decode if impl == "compiled" else baseline_stream_decode, data)


def baseline_stream_header_decode(data):
    return py.pull_stream_frame_header(py.PyBuffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
def test_stream_frame_header_decode(benchmark, impl):
    """Raw STREAM frame header decode through the fastest Python-visible entry point."""
    data = compiled_stream_encode(PAYLOADS["16B"])
    benchmark.group = "STREAM header: decode only"
    assert decode_stream_frame_header(data)[:4] == baseline_stream_header_decode(data)
    benchmark(decode_stream_frame_header if impl == "compiled" else baseline_stream_header_decode, data)


def test_stream_frame_header_decode_c_loop(benchmark):
    """The same decode in a tight C loop (no Python call per decode); extra_info has ns/decode."""
    data = compiled_stream_encode(PAYLOADS["16B"])
    n = 1_000_000
    benchmark.group = "STREAM header: decode in a C loop (1e6 per round)"
    elapsed = benchmark(_bench_decode_stream_headers, data, n)
    benchmark.extra_info["ns_per_decode"] = elapsed / n


# -- ACK frames ------------------------------------------------------------------------------
def compiled_ack_encode(ranges):
    buf = Buffer(capacity=600)
    push_ack_frame(buf, ranges, 25)
    return buf.data


def baseline_ack_encode(ranges):
    buf = py.PyBuffer()
    py.push_ack_frame(buf, ranges, 25)
    return bytes(buf.data)


def compiled_ack_decode(data):
    return pull_frame(Buffer(data))


def baseline_ack_decode(data):
    return py.pull_ack_frame(py.PyBuffer(data))


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
@pytest.mark.parametrize("n", [1, 8, 32])
def test_ack_frame_encode(benchmark, impl, n):
    ranges = ack_ranges(n)
    benchmark.group = f"ACK {n} ranges: encode"
    assert compiled_ack_encode(ranges) == baseline_ack_encode(ranges)
    benchmark(compiled_ack_encode if impl == "compiled" else baseline_ack_encode, ranges)


@pytest.mark.parametrize("impl", ["compiled", "baseline"])
@pytest.mark.parametrize("n", [1, 8, 32])
def test_ack_frame_decode(benchmark, impl, n):
    ranges = ack_ranges(n)
    data = compiled_ack_encode(ranges)
    benchmark.group = f"ACK {n} ranges: decode"
    frame = compiled_ack_decode(data)
    assert isinstance(frame, AckFrame)
    assert (frame.ranges, frame.ack_delay, frame.ecn) == baseline_ack_decode(data)
    benchmark(compiled_ack_decode if impl == "compiled" else baseline_ack_decode, data)


def test_stream_frame_object_round_trip_matches_baseline():
    """Not a benchmark: the frame-object path agrees with the baseline bytes too."""
    for payload in PAYLOADS.values():
        frame = StreamFrame(STREAM_ID, STREAM_OFFSET, payload)
        buf = Buffer(capacity=1300)
        from dquic._codec import push_frame

        push_frame(buf, frame)
        assert buf.data == baseline_stream_encode(payload)
