"""Tests of dquic._streams: SendStream, RecvStream, FlowWindow and message framing."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic._streams import FlowWindow, RecvStream, SendStream, message_prefix
from dquic.errors import ErrorCode, ProtocolError


def frame(*messages):
    return b"".join(message_prefix(len(m)) + m for m in messages)


def drain(send, max_len=1000, flow_limit=2**62):
    chunks = []
    for _ in range(100000):
        c = send.next_chunk(max_len, flow_limit)
        if c is None:
            return chunks
        chunks.append(c)
    raise AssertionError("next_chunk never returned None")


def read_all(recv, max_bytes=1 << 20):
    """Reassemble complete messages from read_message() pieces."""
    messages, current = [], b""
    for _ in range(100000):
        item = recv.read_message(max_bytes)
        if item is None:
            return messages, current
        data, end = item
        current += data
        if end:
            messages.append(current)
            current = b""
    raise AssertionError("read_message never returned None")


# ---------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    "length, encoded",
    [(0, b"\x00"), (37, b"\x25"), (63, b"\x3f"), (64, b"\x40\x40"), (15293, b"\x7b\xbd"),
     (16384, b"\x80\x00\x40\x00"), (494878333, b"\x9d\x7f\x3e\x7d"),
     (151288809941952652, bytes.fromhex("c2197c5eff14e88c"))],
)
def test_message_prefix_rfc9000_vectors(length, encoded):
    assert message_prefix(length) == encoded


def test_message_prefix_range():
    with pytest.raises(ValueError):
        message_prefix(2**62)
    with pytest.raises(ValueError):
        message_prefix(-1)


# ---------------------------------------------------------------------- SendStream


def test_write_message_framing_and_return_value():
    s = SendStream(0)
    assert s.write_message(b"abc") == 4
    assert s.write_message(b"") == 1
    assert s.write_message(bytearray(100)) == 102
    assert s.write_offset == 107
    (offset, data, fin), = drain(s)
    assert offset == 0 and not fin
    assert data == frame(b"abc", b"", bytes(100))


def test_write_accepts_buffers():
    s = SendStream(1)
    arr = np.arange(10, dtype=np.float64)
    s.write_message(arr)
    s.write_message(memoryview(b"xyz")[1:])
    data = b"".join(d for _, d, _ in drain(s))
    assert data == frame(arr.tobytes(), b"yz")
    with pytest.raises((BufferError, ValueError, TypeError)):
        s.write_message(np.arange(20)[::2])  # not contiguous
    with pytest.raises(TypeError):
        s.write_message("text")


def test_next_chunk_limits_and_flow_control():
    s = SendStream(0)
    s.write_message(bytes(range(200)))  # 202 bytes on the wire
    assert s.next_chunk(50, 1000)[0:1] == (0,)
    off, data, fin = s.next_chunk(1000, 120)
    assert (off, len(data), fin) == (50, 70, False)
    assert s.offset_sent == 120
    assert s.blocked_at(120) and not s.blocked_at(200)
    assert s.next_chunk(1000, 120) is None
    assert s.has_pending() and s.pending_new_bytes == 82
    off, data, fin = s.next_chunk(1000, 500)
    assert (off, len(data)) == (120, 82)
    assert not s.has_pending() and not s.blocked_at(120)
    assert s.next_chunk(0, 500) is None


def test_fin_only_chunk_and_fin_with_data():
    s = SendStream(0)
    s.write_message(b"ab")
    assert s.next_chunk(100, 100) == (0, b"\x02ab", False)
    s.finish()
    assert s.final_size == 3 and s.has_pending()
    assert s.next_chunk(100, 100) == (3, b"", True)
    assert s.fin_sent and not s.has_pending()
    s2 = SendStream(0)
    s2.write_message(b"ab")
    s2.finish()
    assert s2.next_chunk(100, 100) == (0, b"\x02ab", True)
    s3 = SendStream(0)
    s3.write_message(b"ab")
    s3.finish()
    assert s3.next_chunk(100, 2) == (0, b"\x02a", False)  # flow-limited: no FIN yet
    assert s3.next_chunk(100, 2) is None
    assert s3.next_chunk(100, 3) == (2, b"b", True)


def test_write_after_finish_or_reset_raises():
    s = SendStream(0)
    s.finish()
    s.finish()  # idempotent
    with pytest.raises(ValueError):
        s.write_message(b"x")
    s2 = SendStream(0)
    s2.reset(7)
    with pytest.raises(ValueError):
        s2.write_message(b"x")
    with pytest.raises(ValueError):
        s2.finish()


def test_ack_frees_prefix_and_is_finished():
    s = SendStream(0)
    s.write_message(bytes(1000))
    s.finish()
    chunks = drain(s, 300)
    assert [(o, len(d), f) for o, d, f in chunks] == [(0, 300, False), (300, 300, False),
                                                      (600, 300, False), (900, 102, True)]
    assert s.bytes_in_flight == 1002 and s.buffered == 1002
    s.on_acked(300, 300)
    assert s.acked_offset == 0 and s.buffered == 1002 and s.bytes_in_flight == 702
    s.on_acked(0, 300)
    assert s.acked_offset == 600 and s.buffered == 402
    s.on_acked(900, 102, True)
    assert not s.is_finished and s.fin_acked
    s.on_acked(600, 300)
    assert s.is_finished and s.buffered == 0 and s.bytes_in_flight == 0


def test_lost_data_is_retransmitted_first_lowest_first():
    s = SendStream(0)
    s.write_message(bytes(range(256)) * 4)
    c1 = s.next_chunk(100, 10**6)
    c2 = s.next_chunk(100, 10**6)
    c3 = s.next_chunk(100, 10**6)
    s.on_lost(c3[0], len(c3[1]), c3[2])
    s.on_lost(c1[0], len(c1[1]), c1[2])
    assert s.bytes_in_flight == 100
    r1 = s.next_chunk(60, 10**6)
    assert r1 == (0, c1[1][:60], False)
    r2 = s.next_chunk(1000, 10**6)
    assert r2 == (60, c1[1][60:], False)
    r3 = s.next_chunk(1000, 10**6)
    assert r3 == c3
    assert s.bytes_retransmitted == 200
    new = s.next_chunk(1000, 10**6)
    assert new[0] == 300
    # retransmissions ignore the flow limit (they were within credit already)
    s.on_lost(0, 100)
    assert s.next_chunk(1000, 0)[0] == 0
    del c2


def test_lost_after_partial_ack_skips_acked_bytes():
    s = SendStream(0)
    s.write_message(bytes(998))  # 1000 bytes on the wire
    s.next_chunk(1000, 10**6)
    s.on_acked(200, 100)
    s.on_acked(500, 50)
    s.on_lost(0, 1000)
    pieces = [(o, len(d)) for o, d, _ in drain(s)]
    assert pieces == [(0, 200), (300, 200), (550, 450)]
    assert s.bytes_retransmitted == 850
    # ack of the original after a spurious loss: nothing is resent
    s2 = SendStream(0)
    s2.write_message(bytes(98))
    s2.next_chunk(1000, 10**6)
    s2.on_lost(0, 100)
    s2.on_acked(0, 100)
    assert not s2.has_pending() and s2.next_chunk(1000, 10**6) is None
    assert s2.buffered == 0 and s2.bytes_in_flight == 0


def test_lost_fin_only_is_resent():
    s = SendStream(0)
    s.write_message(b"x")
    drain(s)
    s.finish()
    assert s.next_chunk(10, 10) == (2, b"", True)
    s.on_lost(2, 0, True)
    assert s.next_chunk(10, 10) == (2, b"", True)
    s.on_acked(2, 0, True)
    s.on_lost(2, 0, True)  # stale loss report after the ack: nothing to do
    assert s.next_chunk(10, 10) is None


def test_ack_of_unsent_range_raises():
    s = SendStream(0)
    s.write_message(b"abc")
    s.next_chunk(2, 100)
    with pytest.raises(ValueError):
        s.on_acked(0, 3)
    with pytest.raises(ValueError):
        s.on_lost(1, 5)


def test_reset_returns_final_size_and_drops_data():
    s = SendStream(5)
    s.write_message(bytes(100))
    s.next_chunk(50, 1000)
    assert s.reset(0x11) == 50
    assert s.reset(0x22) == 50
    assert s.reset_code == 0x11 and s.final_size == 50 and s.is_reset
    assert s.buffered == 0 and s.bytes_in_flight == 0 and not s.has_pending()
    assert s.next_chunk(100, 1000) is None
    s.on_acked(0, 50)  # ignored after reset
    s.on_lost(0, 50)
    assert not s.has_pending() and not s.is_finished


def test_max_buffer_and_writable():
    s = SendStream(0, max_buffer=100)
    assert s.writable == 100
    s.write_message(bytes(90))
    assert s.write_offset == 92  # 2-byte prefix
    assert s.writable == 8
    with pytest.raises(BufferError):
        s.write_message(bytes(8))  # 9 bytes with the prefix
    assert s.write_offset == 92
    s.write_message(bytes(7))
    assert s.writable == 0
    s.next_chunk(1000, 1000)
    s.on_acked(0, 100)
    assert s.buffered == 0 and s.writable == 100
    s.write_message(bytes(98))
    assert SendStream(0, max_buffer=0).writable == -1


def test_begin_message_write_partial():
    s = SendStream(0, max_buffer=64)
    s.begin_message(100)
    with pytest.raises(ValueError):
        s.write_message(b"x")
    with pytest.raises(ValueError):
        s.finish()
    s.write_partial(bytes(range(50)))
    with pytest.raises(BufferError):
        s.write_partial(bytes(50))
    c = s.next_chunk(1000, 1000)
    s.on_acked(c[0], len(c[1]))
    s.write_partial(bytes(range(50, 100)))
    with pytest.raises(ValueError):
        s.write_partial(b"x")
    s.write_message(b"next")
    s.finish()
    r = RecvStream(0, 1000)
    r.insert(*c)
    for o, d, f in drain(s):
        r.insert(o, d, f)
    assert read_all(r)[0] == [bytes(range(100)), b"next"]
    assert r.is_finished


def test_large_buffer_reuse_after_full_ack():
    s = SendStream(0, max_buffer=0)
    for _ in range(3):
        s.write_message(bytes(200000))
        chunks = drain(s, 65536)
        for o, d, f in chunks:
            s.on_acked(o, len(d), f)
        assert s.buffered == 0
    assert s.acked_offset == s.write_offset


# ---------------------------------------------------------------------- RecvStream


def test_recv_in_order_messages_and_partial_reads():
    r = RecvStream(0, 1000)
    wire = frame(b"hello", b"", b"x" * 10)
    assert r.insert(0, wire) == len(wire)
    assert r.next_message_info() == (5, 5)
    assert r.message_ready(3)
    assert r.read_message(3) == (b"hel", False)
    assert r.next_message_info() == (5, 2)
    assert r.read_message(3) == (b"lo", True)
    assert r.read_message(3) == (b"", True)
    assert r.read_message(4) == (b"xxxx", False)
    assert r.read_message(100) == (b"xxxxxx", True)
    assert r.read_message(100) is None
    assert r.next_message_info() == (-1, 0)
    assert r.read_offset == len(wire)
    with pytest.raises(ValueError):
        r.read_message(0)


def test_recv_prefix_split_across_frames():
    r = RecvStream(0, 100000)
    wire = frame(bytes(300))  # 2-byte prefix
    assert r.insert(0, wire[:1]) == 1
    assert r.next_message_info() == (-1, 0)
    assert r.read_message(10) is None and not r.message_ready(10)
    r.insert(1, wire[1:2])
    assert r.next_message_info() == (300, 0)
    assert r.read_message(10) is None
    assert r.read_offset == 0
    r.insert(2, wire[2:50])
    assert not r.message_ready(100)
    assert r.message_ready(48)
    r.insert(50, wire[50:])
    assert r.message_ready(1000)
    assert r.read_message(1000) == (bytes(300), True)


def test_recv_out_of_order_and_duplicates():
    r = RecvStream(0, 1000)
    wire = frame(b"abcdef", b"ghij")
    assert r.insert(6, wire[6:]) == len(wire)
    assert r.read_message(100) is None
    assert r.insert(6, wire[6:]) == 0  # duplicate
    assert r.insert(3, wire[3:8]) == 0  # overlap
    assert r.buffered == len(wire) - 3
    assert r.insert(0, wire[:3]) == 0
    assert read_all(r)[0] == [b"abcdef", b"ghij"]
    assert r.insert(0, wire) == 0  # already read: ignored
    assert r.read_message(10) is None


def test_overlap_with_different_bytes_raises():
    r = RecvStream(0, 1000)
    r.insert(10, b"abcdef")
    with pytest.raises(ProtocolError) as e:
        r.insert(8, b"xxabcXef")
    assert e.value.error_code == ErrorCode.PROTOCOL_VIOLATION
    # nothing was stored by the failed insert
    assert r.buffered == 6 and r.highest_offset == 16
    r.insert(8, b"xxabcdef")
    assert r.buffered == 8


def test_final_size_errors():
    r = RecvStream(0, 1000)
    r.insert(0, b"abcdef")
    with pytest.raises(ProtocolError) as e:
        r.insert(0, b"abc", fin=True)  # final size below highest offset
    assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR
    r.insert(6, b"gh", fin=True)
    assert r.final_size == 8
    r.insert(6, b"gh", fin=True)  # repeat is fine
    r.insert(2, b"cd")  # within final size is fine
    with pytest.raises(ProtocolError) as e:
        r.insert(8, b"i")
    assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR
    with pytest.raises(ProtocolError) as e:
        r.insert(4, b"ef", fin=True)  # final size change
    assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR
    with pytest.raises(ProtocolError) as e:
        r.reset(1, 9)
    assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR


def test_fin_only_and_is_finished():
    r = RecvStream(0, 100)
    r.insert(0, frame(b"ab"))
    assert r.insert(3, b"", fin=True) == 0
    assert r.data_complete and not r.is_finished
    assert read_all(r)[0] == [b"ab"]
    assert r.is_finished and not r.is_truncated


def test_truncated_message_detected():
    r = RecvStream(0, 100)
    r.insert(0, frame(b"abcd")[:3], fin=True)
    assert r.is_truncated
    r2 = RecvStream(0, 100)
    r2.insert(0, b"\x40", fin=True)  # incomplete prefix
    assert r2.is_truncated
    r3 = RecvStream(0, 100)
    r3.insert(0, frame(b"abcd")[:3])
    assert not r3.is_truncated  # final size unknown


def test_flow_control_error_and_memory_bound():
    r = RecvStream(0, 1000, initial_window=100)
    assert r.max_offset == 100
    r.insert(0, bytes(100))
    assert r.allocated <= 100
    with pytest.raises(ProtocolError) as e:
        r.insert(50, bytes(51))
    assert e.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(ProtocolError) as e:
        r.insert(10**9, bytes(10))
    assert e.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    assert r.allocated <= 100 and r.highest_offset == 100
    with pytest.raises(ProtocolError) as e:
        r.reset(0, 101)
    assert e.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(ValueError):
        r.max_offset = 50
    r.max_offset = 300
    r.insert(100, bytes(200))
    assert r.allocated <= 300


def test_memory_never_exceeds_window_minus_read():
    window = 4096
    r = RecvStream(0, window)
    rng = random.Random(1)
    payload = bytes(rng.randrange(256) for _ in range(50000))
    offset = 0
    for _ in range(1000):
        if offset >= len(payload):
            break
        room = r.max_offset - offset
        n = min(rng.randrange(1, 800), room, len(payload) - offset)
        if n > 0:
            # deliver out of order: the later half first
            half = n // 2
            r.insert(offset + half, payload[offset + half:offset + n])
            r.insert(offset, payload[offset:offset + half])
            offset += n
        assert r.buffered <= r.max_offset - r.read_offset
        assert r.allocated <= window
        r.read(rng.randrange(1, 1200))
        if r.should_update_window():
            r.next_window(0.0, 0.1)
    assert r.read_offset > 0


def test_reset_discards_and_accounts():
    r = RecvStream(0, 1000)
    r.insert(0, bytes(10))
    assert r.reset(0x42, 50) == 40
    assert r.reset_code == 0x42 and r.is_reset and r.final_size == 50
    assert r.read_message(10) is None and r.buffered == 0 and r.allocated == 0
    assert r.reset(0x42, 50) == 0
    assert r.insert(20, bytes(5)) == 0  # late frame within final size: accepted, discarded
    with pytest.raises(ProtocolError):
        r.insert(48, bytes(5))
    assert not r.is_finished


def test_stop_discards_but_checks():
    r = RecvStream(0, 100)
    r.insert(0, bytes(10))
    r.stop()
    assert r.allocated == 0
    assert r.insert(10, bytes(10)) == 10
    assert r.allocated == 0
    with pytest.raises(ProtocolError):
        r.insert(95, bytes(10))


def test_insert_accepts_buffers():
    r = RecvStream(0, 1000)
    wire = frame(b"numpy!")
    r.insert(0, np.frombuffer(wire[:3], dtype=np.uint8))
    r.insert(3, memoryview(bytearray(wire))[3:])
    assert r.read_message(100) == (b"numpy!", True)


def test_stream_id_range():
    SendStream(2**62 - 1)
    RecvStream(2**62 - 1, 10)
    with pytest.raises(ValueError):
        SendStream(2**62)
    with pytest.raises(ValueError):
        RecvStream(2**62, 10)


# ---------------------------------------------------------------------- FlowWindow


def test_flow_window_update_and_autotune():
    w = FlowWindow(1000, 8000)
    assert w.limit == 1000 and not w.should_update()
    w.on_consumed(499)
    assert not w.should_update()
    w.on_consumed(1)
    assert w.should_update()
    assert w.update(now=0.0, rtt=0.1) == 1500  # first update: no growth
    assert w.window == 1000 and not w.should_update()
    w.on_consumed(500)
    assert w.update(now=0.1, rtt=0.1) == 3000  # within 2 RTT: doubled to 2000
    assert w.window == 2000
    w.on_consumed(1000)
    assert w.update(now=10.0, rtt=0.1) == 4000  # slow reader: same window
    assert w.window == 2000
    for i in range(10):
        w.on_consumed(w.window)
        w.update(now=10.0 + 0.01 * (i + 1), rtt=0.1)
    assert w.window == 8000
    assert w.limit == w.consumed + 8000


def test_flow_window_limit_only_grows():
    w = FlowWindow(100)
    w.limit = 200
    with pytest.raises(ValueError):
        w.limit = 150
    assert w.maximum == 100
    w.on_consumed(10)
    assert w.update(0.0, 0.1) == 200  # never lowered


def test_recv_window_helpers():
    r = RecvStream(0, 4000, initial_window=1000)
    r.insert(0, frame(bytes(600)))
    assert not r.should_update_window()
    r.read_message(10000)
    assert r.should_update_window()
    assert r.next_window(0.0, 0.05) == 602 + 1000
    r.insert(602, b"\x00", fin=True)
    assert not r.should_update_window()


# ---------------------------------------------------------------------- properties

messages_st = st.lists(st.binary(max_size=300), max_size=12)


@settings(max_examples=150, deadline=None)
@given(messages_st, st.randoms(use_true_random=False), st.integers(1, 64), st.integers(1, 500))
def test_property_reassembly_reconstructs_messages(messages, rnd, max_piece, read_size):
    wire = frame(*messages)
    pieces = []
    pos = 0
    while pos < len(wire):
        n = rnd.randint(1, max_piece)
        pieces.append((pos, wire[pos:pos + n]))
        pos += n
    # duplicates and overlapping re-cuts
    for _ in range(rnd.randint(0, 5)):
        if wire:
            a = rnd.randrange(len(wire))
            b = rnd.randint(a, len(wire))
            pieces.append((a, wire[a:b]))
    rnd.shuffle(pieces)
    r = RecvStream(3, max(len(wire), 1))
    total_new = 0
    got, partial = [], b""
    for off, data in pieces:
        total_new += r.insert(off, data)
        ms, partial2 = read_all(r, read_size)
        if ms:
            ms[0] = partial + ms[0]
            got.extend(ms)
            partial = partial2
        else:
            partial += partial2
    total_new += r.insert(len(wire), b"", fin=True)
    assert total_new == len(wire)
    assert got == messages
    assert r.is_finished and not r.is_truncated


@settings(max_examples=150, deadline=None)
@given(messages_st, st.randoms(use_true_random=False), st.integers(1, 200), st.floats(0, 0.6))
def test_property_send_with_loss_everything_acked_once(messages, rnd, max_len, loss):
    s = SendStream(0)
    for m in messages:
        s.write_message(m)
    s.finish()
    wire = frame(*messages)
    r = RecvStream(0, len(wire) + 1)
    in_flight = []
    acked_ranges = []
    lost_bytes = 0
    for _ in range(20000):
        if s.is_finished:
            break
        if s.has_pending() and (not in_flight or rnd.random() < 0.6):
            c = s.next_chunk(max_len, 2**62)
            assert c is not None
            off, data, fin = c
            # nothing already acknowledged is ever sent again
            for a, b in acked_ranges:
                assert off + len(data) <= a or off >= b or not data
            in_flight.append(c)
        elif in_flight:
            c = in_flight.pop(rnd.randrange(len(in_flight)))
            off, data, fin = c
            if rnd.random() < loss:
                s.on_lost(off, len(data), fin)
                lost_bytes += len(data)
            else:
                r.insert(off, data, fin)
                s.on_acked(off, len(data), fin)
                if data:
                    acked_ranges.append((off, off + len(data)))
        else:
            raise AssertionError("stalled: nothing pending and nothing in flight")
    assert s.is_finished
    assert s.bytes_retransmitted <= lost_bytes
    assert s.buffered == 0
    assert read_all(r)[0] == messages
    assert r.is_finished


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=2, max_size=200), st.data())
def test_property_conflicting_overlap_raises(wire, data):
    r = RecvStream(0, len(wire))
    a = data.draw(st.integers(0, len(wire) - 1))
    b = data.draw(st.integers(a + 1, len(wire)))
    r.insert(a, wire[a:b])
    i = data.draw(st.integers(a, b - 1))
    bad = bytearray(wire)
    bad[i] ^= data.draw(st.integers(1, 255))
    c = data.draw(st.integers(0, i))
    d = data.draw(st.integers(i + 1, len(wire)))
    with pytest.raises(ProtocolError) as e:
        r.insert(c, bytes(bad[c:d]))
    assert e.value.error_code == ErrorCode.PROTOCOL_VIOLATION


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), st.integers(0, 100), st.integers(0, 100))
def test_property_final_size(final, off, length):
    r = RecvStream(0, 1000)
    r.insert(final, b"", fin=True)
    end = off + length
    if end > final:
        with pytest.raises(ProtocolError) as e:
            r.insert(off, bytes(length))
        assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR
    else:
        r.insert(off, bytes(length))
    if end != final:
        with pytest.raises(ProtocolError) as e:
            r.insert(off, bytes(length), fin=True)
        assert e.value.error_code == ErrorCode.FINAL_SIZE_ERROR


def test_send_buffer_ring_wraps_without_moving_data():
    s = SendStream(0)
    first = b"A" * 198  # 200 bytes framed: the first buffer holds 256
    s.write_message(first)
    off, data, _ = s.next_chunk(1000, 2**62)
    assert (off, data) == (0, frame(first))
    s.on_acked(0, 150, False)  # the acknowledged prefix is released in place
    second = bytes(range(100))  # 102 bytes framed: 50 + 102 fit in 256 only by wrapping
    s.write_message(second)
    assert s.buffered == 50 + 102
    chunks = []
    while True:
        c = s.next_chunk(1000, 2**62)
        if c is None:
            break
        chunks.append(c)
    # the new message is cut where the ring wraps: 56 bytes up to the end, then the rest
    assert [(o, len(d)) for o, d, _ in chunks] == [(200, 56), (256, 46)]
    assert b"".join(d for _, d, _ in chunks) == frame(second)
    # a loss across the wrap is resent in the same two pieces, bytes intact
    s.on_lost(200, 56, False)
    s.on_lost(256, 46, False)
    again = [s.next_chunk(1000, 2**62) for _ in range(2)]
    assert b"".join(d for _, d, _ in again) == frame(second)
    for o, d, f in again:
        s.on_acked(o, len(d), f)
    s.on_acked(150, 50, False)
    assert s.buffered == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.randoms(use_true_random=False),
       st.integers(1, 200), st.floats(0, 0.5))
def test_property_writes_interleaved_with_acks_and_losses(messages, rnd, max_len, loss):
    """Writing while earlier data is acknowledged makes the send buffer's ring wrap; what the
    receiver reassembles is still exactly the messages."""
    s = SendStream(0)
    wire = frame(*messages)
    r = RecvStream(0, len(wire) + 1)
    todo = list(messages)
    in_flight = []
    for _ in range(50000):
        if s.is_finished:
            break
        x = rnd.random()
        if todo and x < 0.3:
            s.write_message(todo.pop(0))
            if not todo:
                s.finish()
        elif s.has_pending() and (not in_flight or x < 0.65):
            in_flight.append(s.next_chunk(max_len, 2**62))
        elif in_flight:
            off, data, fin = in_flight.pop(rnd.randrange(len(in_flight)))
            if rnd.random() < loss:
                s.on_lost(off, len(data), fin)
            else:
                r.insert(off, data, fin)
                s.on_acked(off, len(data), fin)
        elif todo:
            s.write_message(todo.pop(0))
            if not todo:
                s.finish()
        elif not messages and not s.is_finished:
            s.finish()
        else:
            raise AssertionError("stalled")
        # what is in flight is what was sent and neither acknowledged nor lost
        assert s.bytes_in_flight == sum(len(c[1]) for c in in_flight)
    assert s.is_finished
    assert s.buffered == 0
    assert read_all(r)[0] == messages


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=5, max_size=60), st.integers(1, 90),
       st.randoms(use_true_random=False))
def test_property_steady_streaming_wraps_the_ring(sizes, max_len, rnd):
    """A sender that keeps one message unacknowledged while writing the next: the buffer stays
    small and its ring wraps again and again; the bytes sent are exactly the framed stream
    (random contents, so bytes read from the wrong place cannot match by chance)."""
    messages = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in sizes]
    s = SendStream(0)
    sent = bytearray()
    pending = []
    for m in messages:
        s.write_message(m)
        while True:
            c = s.next_chunk(max_len, 2**62)
            if c is None:
                break
            off, data, _ = c
            assert off == len(sent)
            sent += data
            pending.append((off, len(data)))
        # acknowledge all but the newest message's frames: the acknowledged prefix advances
        keep = len(frame(m))
        while pending and pending[0][0] + pending[0][1] <= len(sent) - keep:
            off, n = pending.pop(0)
            s.on_acked(off, n, False)
    assert bytes(sent) == frame(*messages)
    for off, n in pending:
        s.on_acked(off, n, False)
    assert s.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=30),
       st.randoms(use_true_random=False), st.integers(1, 300), st.integers(1, 900),
       st.integers(600, 2000))
def test_property_ring_buffer_under_a_small_window(sizes, rnd, max_piece, read_size, window):
    """The receive buffer is a ring from the read head: with a window of a few hundred bytes
    to 2 KB, a sender that stays within it, pieces arriving out of order (with duplicates)
    and a reader that takes a few pieces at a time (so unread bytes stay behind when the
    window opens), the read head goes round the buffer many times, pieces and length prefixes
    cross its end, and every message still comes out whole and in order, the buffer never
    larger than the window."""
    # (every byte tells where it belongs: a piece read or written at the wrong place shows)
    messages = [bytes((7 * i + j) % 251 for j in range(n)) for i, n in enumerate(sizes)]
    wire = frame(*messages)
    r = RecvStream(3, window)
    pieces_read = []
    sent = 0  # every byte below this was delivered (some twice)
    laps = 0
    for _ in range(100_000):
        if r.read_offset >= len(wire):
            break
        limit = min(len(wire), r.max_offset)
        pieces = []
        pos = sent
        while pos < limit:
            n = min(rnd.randint(1, max_piece), limit - pos)
            pieces.append((pos, wire[pos:pos + n]))
            pos += n
        sent = pos
        pieces += rnd.sample(pieces, min(len(pieces), rnd.randint(0, 2)))
        rnd.shuffle(pieces)
        for off, data in pieces:
            r.insert(off, data, fin=off + len(data) == len(wire))
            assert r.allocated <= window
        # a few pieces, or everything when nothing more can arrive
        for _ in range(rnd.randint(1, 3) if sent < len(wire) else 1 << 30):
            before = r.read_offset
            piece = r.read_message(read_size)
            if piece is None:
                break
            pieces_read.append(piece)
            if r.allocated and before // r.allocated != r.read_offset // r.allocated:
                laps += 1
        if r.should_update_window():
            r.next_window(0.0, 0.01)
    got, cur = [], b""
    for data, end in pieces_read:
        cur += data
        if end:
            got.append(cur)
            cur = b""
    assert got == messages
    assert r.is_finished
    if len(wire) > 4 * window:
        assert laps  # (the read head did go round)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=30), st.integers(0, 2**32),
       st.integers(1, 90))
def test_property_send_half_fates_match_a_model(messages, seed, max_len):
    """Every fate a sent chunk can have, in any order: acknowledged, lost, lost and then
    acknowledged after all (a spurious loss), acknowledged twice. A model of which bytes were
    acknowledged says what may be sent again, and what is in flight; the half passes in and
    out of its plain state (in-order acknowledgements without range sets) along the way."""
    rnd = random.Random(seed)  # (the schedule: many draws, a seed keeps hypothesis's input small)
    s = SendStream(0)
    for m in messages:
        s.write_message(m)
    s.finish()
    total = s.write_offset
    acked = bytearray(total)           # the model: 1 where a byte was acknowledged
    lost = []                          # chunks declared lost, maybe acknowledged later
    flight = []                        # chunks sent and neither acknowledged nor lost
    done = []                          # chunks acknowledged (may be acknowledged again)
    for _ in range(20000):
        if s.is_finished:
            break
        x = rnd.random()
        if s.has_pending() and (not flight or x < 0.45):
            off, data, fin = s.next_chunk(max_len, 2**62)
            # what is sent again was lost and not acknowledged since
            assert not any(acked[off:off + len(data)])
            flight.append((off, data, fin))
        elif flight and x < 0.8:
            c = flight.pop(rnd.randrange(len(flight)))
            if rnd.random() < 0.25:
                s.on_lost(c[0], len(c[1]), c[2])
                lost.append(c)
            else:
                s.on_acked(c[0], len(c[1]), c[2])
                acked[c[0]:c[0] + len(c[1])] = b"\x01" * len(c[1])
                done.append(c)
        elif lost and x < 0.9:
            c = lost.pop(rnd.randrange(len(lost)))      # a late acknowledgement of a lost one
            s.on_acked(c[0], len(c[1]), c[2])
            acked[c[0]:c[0] + len(c[1])] = b"\x01" * len(c[1])
        elif done:
            c = done[rnd.randrange(len(done))]          # a duplicate acknowledgement
            s.on_acked(c[0], len(c[1]), c[2])
        elif not flight and not s.has_pending():
            raise AssertionError("stalled")
        # in flight: the bytes of the chunks sent and neither acknowledged nor lost since
        # (a byte acknowledged through another chunk no longer counts)
        held = set()
        for off, data, _ in flight:
            held.update(i for i in range(off, off + len(data)) if not acked[i])
        assert s.bytes_in_flight == len(held)
        prefix = acked.find(0)
        assert s.acked_offset == (total if prefix < 0 else prefix)
    assert s.is_finished
    assert all(acked)
    assert s.buffered == 0
