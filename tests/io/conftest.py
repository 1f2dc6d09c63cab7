"""Fixtures for tests over real UDP sockets on loopback.

Every endpoint made through ``make_dquic`` and every relay made through ``make_relay`` is closed
after the test; blocking calls get a default timeout so a lost message fails instead of hanging.
"""
from __future__ import annotations

import threading
import time
from typing import Any, List, Tuple

import pytest

from dquic.sync import DQUIC
from dquic.testing.relay import LossyRelay

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


@pytest.fixture
def make_relay():  # request it before make_dquic so endpoints close while it still forwards
    """``make_relay(server_address, **impairments)`` -> a started LossyRelay stopped after the test."""
    made: List[LossyRelay] = []

    def make(server_address: Tuple, **kwargs: Any) -> LossyRelay:
        kwargs.setdefault("seed", 7 + len(made))
        relay = LossyRelay(server_address, **kwargs)
        made.append(relay)
        return relay.start()

    yield make
    for relay in reversed(made):
        relay.stop()


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    """Every I/O and relay thread a test starts must be gone when its fixtures are torn down."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("dquic-")
                  and t.is_alive()]
        if not leaked:
            return
        leaked[0].join(0.1)
    pytest.fail(f"threads left running: {leaked}")
