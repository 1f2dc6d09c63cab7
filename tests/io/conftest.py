"""Fixtures for tests over real UDP sockets on loopback.

Every endpoint made through ``make_dquic`` and every relay made through ``make_relay`` is closed
after the test; blocking calls get a default timeout so a lost message fails instead of hanging.
"""
from __future__ import annotations

from typing import Any, List

import pytest

from dquic.sync import DQUIC

from _fixtures import _no_leaked_threads, make_relay  # noqa: F401 (fixtures for tests/io)

#: Blocking-call timeout of test endpoints (seconds).
CALL_TIMEOUT = 20.0


@pytest.fixture
def make_dquic():
    """``make_dquic(bind=("127.0.0.1", 0), **options)`` -> a DQUIC closed after the test."""
    made: List[DQUIC] = []

    def make(bind: Any = ("127.0.0.1", 0), timeout: float = CALL_TIMEOUT, **options: Any) -> DQUIC:
        options.setdefault("linger", 2.0)
        d = DQUIC(**options)
        made.append(d)
        if bind is not None:
            d.bind(bind)
        d.settimeout(timeout)
        return d

    yield make
    for d in reversed(made):
        d.close(abandon=True)  # tests that care about undelivered data check close() themselves
