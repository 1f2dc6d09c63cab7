"""The drivers' check of a ``{stream_id: bytes-like}`` dict before anything is sent
(``dquic._app.validate_messages``, compiled): what it returns for every kind of value, and the
first bad id or value it names."""
from __future__ import annotations

import enum

import pytest
from hypothesis import given, strategies as st

from dquic._app import MAX_STREAM_ID, validate_messages

ids = st.integers(0, MAX_STREAM_ID)
values = st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(bytearray),
                   st.binary(max_size=64).map(memoryview))


@given(st.dictionaries(ids, values, max_size=40))
def test_items_in_order_with_their_sizes(messages):
    items, total = validate_messages(messages)
    assert [sid for sid, _, _ in items] == list(messages)
    for (sid, buf, n), value in zip(items, messages.values()):
        assert n == len(bytes(value)) and bytes(buf) == bytes(value)
        if type(value) is bytes:
            assert buf is value  # (no copy, no view)
    assert total == sum(n for _, _, n in items)


class Sid(enum.IntEnum):
    A = 7


@pytest.mark.parametrize("messages, exc, text", [
    ([(1, b"x")], TypeError, "needs a dict"),
    ({-1: b"x"}, ValueError, "stream id -1"),
    ({MAX_STREAM_ID + 1: b"x"}, ValueError, "outside"),
    ({1 << 64: b"x"}, ValueError, "outside"),
    ({True: b"x"}, TypeError, "not an int"),
    ({1.0: b"x"}, TypeError, "not an int"),
    ({1: b"ok", 2: "text"}, TypeError, "stream 2: str"),
    ({1: None}, TypeError, "stream 1: NoneType"),
])
def test_the_first_bad_item_is_named(messages, exc, text):
    with pytest.raises(exc, match=text):
        validate_messages(messages)


def test_int_subclasses_and_the_largest_id_pass():
    items, total = validate_messages({Sid.A: b"ab", MAX_STREAM_ID: b"c", 0: b""})
    assert [(sid, n) for sid, _, n in items] == [(7, 2), (MAX_STREAM_ID, 1), (0, 0)]
    assert total == 3
