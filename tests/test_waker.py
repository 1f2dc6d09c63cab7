"""The wake-up descriptor of the I/O threads, with eventfd and with the socket-pair fallback."""
import os
import select

import pytest

from dquic._socket import Waker


@pytest.mark.parametrize("use_eventfd", [True, False])
def test_waker_wakes_and_drains(monkeypatch, use_eventfd):
    if use_eventfd and not hasattr(os, "eventfd"):
        pytest.skip("no eventfd on this platform")
    if not use_eventfd and hasattr(os, "eventfd"):
        monkeypatch.delattr(os, "eventfd")
    w = Waker()
    try:
        assert select.select([w.fileno()], [], [], 0)[0] == []
        for _ in range(3):
            w.wake()
        assert select.select([w.fileno()], [], [], 1.0)[0] == [w.fileno()]
        w.drain()
        assert select.select([w.fileno()], [], [], 0)[0] == []
    finally:
        w.close()
    w.wake()  # harmless after close
