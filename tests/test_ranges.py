"""Tests of dquic._ranges.RangeSet: unit cases plus a hypothesis model check."""
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic._ranges import RangeSet


def model_ranges(values):
    """Sorted merged half-open ranges of a Python set of ints."""
    out = []
    for v in sorted(values):
        if out and out[-1][1] == v:
            out[-1][1] = v + 1
        else:
            out.append([v, v + 1])
    return [tuple(r) for r in out]


def test_empty():
    r = RangeSet()
    assert len(r) == 0 and r.is_empty and not r
    assert list(r) == []
    assert 0 not in r
    assert r.total() == 0
    assert r.missing(0, 5) == [(0, 5)]
    with pytest.raises(IndexError):
        r.bounds()
    with pytest.raises(IndexError):
        r.shift()
    with pytest.raises(IndexError):
        r[0]


def test_add_single_and_merge_adjacent():
    r = RangeSet()
    r.add(3)
    r.add(5)
    assert list(r) == [(3, 4), (5, 6)]
    r.add(4)
    assert list(r) == [(3, 6)]
    r.add(6, 8)
    assert list(r) == [(3, 8)]
    r.add(0, 3)
    assert list(r) == [(0, 8)]


def test_add_in_middle_and_overlap_many():
    r = RangeSet([(0, 2), (4, 6), (8, 10), (12, 14), (20, 22)])
    r.add(15, 16)
    assert list(r) == [(0, 2), (4, 6), (8, 10), (12, 14), (15, 16), (20, 22)]
    r.add(5, 13)
    assert list(r) == [(0, 2), (4, 14), (15, 16), (20, 22)]
    r.add(1, 30)
    assert list(r) == [(0, 30)]


def test_add_empty_range_is_noop_and_reversed_raises():
    r = RangeSet()
    r.add(5, 5)
    assert r.is_empty
    with pytest.raises(ValueError):
        r.add(5, 4)
    with pytest.raises(ValueError):
        r.subtract(5, 4)
    with pytest.raises(OverflowError):
        r.add(-1)


def test_add_inside_existing_is_noop():
    r = RangeSet([(0, 10), (20, 30)])
    r.add(2, 5)
    r.add(20, 30)
    r.add(25)
    assert list(r) == [(0, 10), (20, 30)]


def test_subtract_cases():
    r = RangeSet([(0, 10), (20, 30), (40, 50)])
    r.subtract(5, 6)  # split
    assert list(r) == [(0, 5), (6, 10), (20, 30), (40, 50)]
    r.subtract(8, 25)  # trims two
    assert list(r) == [(0, 5), (6, 8), (25, 30), (40, 50)]
    r.subtract(0, 5)  # exact removal
    assert list(r) == [(6, 8), (25, 30), (40, 50)]
    r.subtract(30, 40)  # touches nothing
    assert list(r) == [(6, 8), (25, 30), (40, 50)]
    r.subtract(0, 100)
    assert r.is_empty


def test_contains_getitem_bounds():
    r = RangeSet([(1, 3), (7, 9)])
    assert [x for x in range(11) if x in r] == [1, 2, 7, 8]
    assert "a" not in r and -1 not in r and 2**70 not in r
    assert r[0] == (1, 3) and r[-1] == (7, 9) and r[1] == (7, 9)
    with pytest.raises(IndexError):
        r[2]
    with pytest.raises(IndexError):
        r[-3]
    assert r.bounds() == (1, 9)


def test_shift_copy_clear_eq_repr():
    r = RangeSet([(1, 3), (7, 9)])
    c = r.copy()
    assert c == r and not (c != r)
    assert r.shift() == (1, 3)
    assert list(r) == [(7, 9)]
    assert list(c) == [(1, 3), (7, 9)]
    assert c != r
    assert repr(c) == "RangeSet([(1, 3), (7, 9)])"
    c.clear()
    assert c.is_empty and c == RangeSet()
    assert r != [(7, 9)]
    with pytest.raises(TypeError):
        hash(r)


def test_total_covers_missing_count_in():
    r = RangeSet([(0, 4), (10, 20)])
    assert r.total() == 14
    assert r.covers(0, 4) and r.covers(12, 20) and r.covers(5, 5)
    assert not r.covers(3, 5) and not r.covers(0, 20) and not r.covers(20, 21)
    assert r.missing(0, 25) == [(4, 10), (20, 25)]
    assert r.missing(2, 12) == [(4, 10)]
    assert r.missing(10, 20) == []
    assert r.missing(5, 8) == [(5, 8)]
    assert r.count_in(2, 12) == 4
    assert r.count_in(4, 10) == 0


def test_max_ranges_drops_lowest():
    r = RangeSet(max_ranges=3)
    for x in range(0, 20, 2):
        r.add(x)
    assert list(r) == [(14, 15), (16, 17), (18, 19)]
    r.add(0)  # a new lowest range is immediately dropped again
    assert list(r) == [(14, 15), (16, 17), (18, 19)]
    r.add(15)
    assert list(r) == [(14, 17), (18, 19)]
    r.subtract(18, 19)
    r.add(30)
    r.subtract(15, 16)  # a split up to the limit keeps everything
    assert list(r) == [(14, 15), (16, 17), (30, 31)]
    r.add(50, 60)
    assert list(r) == [(16, 17), (30, 31), (50, 60)]
    r.subtract(55, 56)  # a split beyond the limit drops the lowest
    assert list(r) == [(30, 31), (50, 55), (56, 60)]
    assert r.max_ranges == 3
    with pytest.raises(ValueError):
        RangeSet(max_ranges=-1)


def test_large_values():
    top = 2**64 - 1
    r = RangeSet()
    r.add(top - 1)
    assert (top - 1) in r and top not in r
    r.add(2**62 - 1, top)
    assert r.bounds() == (2**62 - 1, top)
    with pytest.raises(OverflowError):
        r.add(top)  # stop would be 2**64


def test_ascending_insertions_grow_and_merge():
    r = RangeSet()
    for x in range(10000):
        r.add(x)
    assert list(r) == [(0, 10000)]
    r2 = RangeSet()
    for x in range(0, 2000, 2):
        r2.add(x)
    assert len(r2) == 1000 and r2.total() == 1000


def test_pickle_roundtrip():
    r = RangeSet([(1, 3), (7, 9)], max_ranges=5)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2 == r and r2.max_ranges == 5


def test_iteration_while_mutating_is_safe():
    r = RangeSet([(0, 1), (2, 3), (4, 5)])
    seen = []
    for a, b in r:
        seen.append((a, b))
        r.clear()
    assert seen == [(0, 1)]


ops = st.lists(
    st.tuples(st.sampled_from(["add", "sub", "add1"]), st.integers(0, 200), st.integers(0, 40)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_model_add_subtract(operations):
    r = RangeSet()
    model = set()
    for op, start, length in operations:
        if op == "add":
            r.add(start, start + length)
            model.update(range(start, start + length))
        elif op == "add1":
            r.add(start)
            model.add(start)
        else:
            r.subtract(start, start + length)
            model.difference_update(range(start, start + length))
        assert list(r) == model_ranges(model)
    assert r.total() == len(model)
    for x in range(0, 245, 7):
        assert (x in r) == (x in model)
    for a in range(0, 240, 17):
        b = a + 13
        assert r.covers(a, b) == all(x in model for x in range(a, b))
        assert r.count_in(a, b) == sum(1 for x in range(a, b) if x in model)
        miss = set()
        for s, e in r.missing(a, b):
            assert a <= s < e <= b
            miss.update(range(s, e))
        assert miss == set(range(a, b)) - model


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 5)), max_size=80), st.integers(1, 6))
def test_model_max_ranges_drops_lowest(items, limit):
    r = RangeSet(max_ranges=limit)
    model = set()
    for start, length in items:
        model.update(range(start, start + length))
        ranges = model_ranges(model)
        for a, b in ranges[: max(0, len(ranges) - limit)]:
            model.difference_update(range(a, b))
        r.add(start, start + length)
        assert list(r) == model_ranges(model)
        assert len(r) <= limit
