"""Fixtures shared by the real-socket tests in tests/ and tests/io/ (imported by tests/io/conftest.py
and by the test modules of tests/ that use them; tests/conftest.py puts this directory on the
import path)."""
from __future__ import annotations

import threading
import time
from typing import Any, List, Tuple

import pytest

from dquic.testing.relay import LossyRelay


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
    leaked: List[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("dquic-")
                  and t.is_alive()]
        if not leaked:
            return
        leaked[0].join(0.1)
    pytest.fail(f"threads left running: {leaked}")
