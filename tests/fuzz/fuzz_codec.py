"""Coverage-guided fuzz target for dquic._codec and dquic._frames (atheris / libFuzzer).

Run:
    python tests/fuzz/fuzz_codec.py -atheris_runs=100000
    python tests/fuzz/fuzz_codec.py --make-corpus corpus_dir/      # seed inputs, then:
    python tests/fuzz/fuzz_codec.py -max_total_time=600 corpus_dir/

Coverage feedback comes from the instrumented Python checks below; to also get edge coverage
inside the compiled codec, build it with clang and libFuzzer instrumentation first:
    CC=clang CFLAGS="-fsanitize=fuzzer-no-link" DQUIC_ONLY=dquic._codec,dquic._frames \
        python setup.py build_ext --inplace

Every decoder entry point is fed the input; the only exception allowed to escape a decoder is
dquic.errors.ProtocolError. Anything that decodes is re-encoded and decoded again, and the two
decodings must agree. Any other exception (or a crash) is a bug and stops the fuzzer.
"""
from __future__ import annotations

import os
import sys

import atheris

# make the source tree importable when run from a checkout (an installed dquic also works)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# The codec itself is compiled (nothing to instrument in Python); importing the package
# without instrument_imports keeps unrelated modules uninstrumented and the target fast.
from dquic import _codec as codec  # noqa: E402
from dquic import _frames as framing  # noqa: E402
from dquic import _seed  # noqa: E402
from dquic.errors import ProtocolError  # noqa: E402


# The codec is compiled, so libFuzzer sees no edges inside it. To still steer the search,
# every outcome (decoded frame type, error class) is mapped onto a distinct branch of an
# instrumented Python function: new kinds of result then count as new coverage.
_FAULTS = ("truncated", "exceeds", "underflow", "unknown frame type", "not minimally",
           "not allowed", "empty", "connection id length", "retire_prior_to", "2**60", "2**62",
           "fixed bit", "DCID length", "SCID length", "unsupported version", "0-RTT", "retry",
           "version negotiation", "Length field", "token length")


def _build_feedback():
    lines = ["def _feedback(kind, detail):", "    hits = 0"]
    for t in sorted(framing.FRAME_NAMES):
        lines.append(f"    if kind == 'frame' and detail == {t}:")
        lines.append("        hits += 1")
    for fault in _FAULTS:
        lines.append(f"    if kind == 'error' and {fault!r} in detail:")
        lines.append("        hits += 1")
    for t in range(6):
        lines.append(f"    if kind == 'header' and detail == {t}:")
        lines.append("        hits += 1")
    lines.append("    return hits")
    namespace = {}
    exec("\n".join(lines), namespace)  # noqa: S102 (generated from constants above)
    return atheris.instrument_func(namespace["_feedback"])


_feedback = _build_feedback()


@atheris.instrument_func
def _check_frames(data: bytes, packet_type) -> None:
    try:
        frames = framing.decode_frames(data, packet_type=packet_type, max_ack_ranges=64)
    except ProtocolError as exc:
        _feedback("error", str(exc))
        return
    for frame in frames:
        _feedback("frame", frame.wire_type)
    encoded = framing.encode_frames(frames)
    again = framing.decode_frames(encoded, max_ack_ranges=64)
    # PADDING runs may merge after re-encoding; everything else must match exactly
    strip = [f for f in frames if not isinstance(f, framing.PaddingFrame)]
    strip_again = [f for f in again if not isinstance(f, framing.PaddingFrame)]
    if strip != strip_again:
        raise AssertionError(f"re-encoding changed frames: {frames!r} -> {again!r}")


@atheris.instrument_func
def _check_headers(data: bytes, dcid_len: int) -> None:
    buf = codec.Buffer(data)
    for _ in range(len(data) + 1):
        if buf.eof():
            return
        try:
            hdr = codec.pull_header(buf, dcid_len)
        except ProtocolError as exc:
            _feedback("error", str(exc))
            return
        _feedback("header", hdr.packet_type)
        if not 0 <= hdr.payload_end <= len(data):
            raise AssertionError("payload_end outside the datagram")
        if len(hdr.dcid) > 20 or len(hdr.scid) > 20:
            raise AssertionError("CID longer than 20 bytes accepted")
        if hdr.pn_offset >= 0:
            try:
                codec.pull_packet_number(buf, 1)
            except ProtocolError:
                return
        buf.seek(hdr.payload_end)


@atheris.instrument_func
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    selector = data[0]
    body = data[1:]
    _check_frames(body, (None, codec.PACKET_INITIAL, codec.PACKET_SHORT)[selector % 3])
    _check_headers(body, selector % 21)
    try:
        codec.decode_varint(body)
    except ProtocolError:
        pass
    try:
        framing.decode_stream_frame_header(bytes([0x08 | (selector & 7)]) + body)
    except ProtocolError:
        pass
    try:
        _seed.DQUICFrame.from_bytes(body)
    except ProtocolError:
        pass
    try:
        _seed.DQUICHeader.from_bytes(body)
    except ProtocolError:
        pass
    try:
        codec.parse_version_invariant(body)
    except ProtocolError:
        pass


def seed_inputs():
    """Valid encodings to start from: one payload of every frame type and each header form."""
    frames = [
        framing.PaddingFrame(3), framing.PingFrame(), framing.AckFrame([(0, 3), (5, 9)], 10),
        framing.AckFrame([(1, 2)], 0, (1, 2, 3)), framing.ResetStreamFrame(1, 2, 3),
        framing.StopSendingFrame(4, 5), framing.CryptoFrame(6, b"crypto"), framing.NewTokenFrame(b"token"),
        framing.StreamFrame(8, 0, b"stream", True), framing.StreamFrame(9, 300, b"s"),
        framing.MaxDataFrame(10), framing.MaxStreamDataFrame(11, 12), framing.MaxStreamsFrame(13),
        framing.DataBlockedFrame(14), framing.StreamDataBlockedFrame(15, 16), framing.StreamsBlockedFrame(17),
        framing.NewConnectionIdFrame(18, 1, b"cid-1234", b"R" * 16), framing.RetireConnectionIdFrame(19),
        framing.PathChallengeFrame(b"chalenge"), framing.PathResponseFrame(b"response"),
        framing.ConnectionCloseFrame(7, 8, b"why"), framing.ConnectionCloseFrame(9, None, b"app", True),
        framing.HandshakeDoneFrame(), framing.DatagramFrame(b"dgram"),
    ]
    seeds = [b"\x00" + framing.encode_frames([f]) for f in frames]
    seeds.append(b"\x01" + framing.encode_frames(frames))
    for ptype in (codec.PACKET_INITIAL, codec.PACKET_HANDSHAKE, codec.PACKET_SHORT):
        seeds.append(b"\x08" + _seed.DQUICHeader(ptype, 77, dcid=b"D" * 8).to_bytes() + b"payload")
    seeds.append(b"\x00" + codec.encode_retry(codec.DQUIC_VERSION_1, b"d", b"s", b"tok", b"T" * 16))
    seeds.append(b"\x00" + codec.encode_version_negotiation(b"d", b"s", [codec.DQUIC_VERSION_1]))
    return seeds


def main(argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) >= 3 and argv[1] == "--make-corpus":
        os.makedirs(argv[2], exist_ok=True)
        for i, seed in enumerate(seed_inputs()):
            with open(os.path.join(argv[2], f"seed-{i:03d}"), "wb") as fh:
                fh.write(seed)
        return
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
