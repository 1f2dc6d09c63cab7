"""``Configuration.copy`` makes what ``dataclasses.replace`` makes (a shallow copy with the
changed fields), and refuses fields that do not exist."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, strategies as st

from dquic.config import Configuration

NAMES = sorted(f.name for f in dataclasses.fields(Configuration))


@given(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 10) | st.booleans() | st.none(),
                       max_size=5))
def test_copy_is_replace(changes):
    base = Configuration(extra={"k": [1]})
    got = base.copy(**changes)
    want = dataclasses.replace(base, **changes)
    assert type(got) is Configuration and got is not base
    assert vars(got) == vars(want) and got == want
    assert got.extra is want.extra  # shallow, as replace
    for name in NAMES:
        if name not in changes:
            assert getattr(got, name) is getattr(base, name)
    assert vars(base) == vars(Configuration(extra={"k": [1]}))  # the original is unchanged


def test_copy_refuses_unknown_fields():
    with pytest.raises(TypeError, match="no_such_field"):
        Configuration().copy(no_such_field=1)
