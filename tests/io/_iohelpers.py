"""Helpers shared by the real-socket tests (importable as a plain module from this directory)."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

from dquic.sync import DQUIC  # noqa: F401 - the type Receiver drives




class Receiver:
    """Reassembles what ``receive_from`` returns into whole messages per (peer, stream).

    ``expect(peer, stream_id, sizes)`` announces the message sizes that will arrive; ``run``
    calls ``receive_from(max_bytes)`` until all arrived (or the deadline), checking the API's
    promises on every call: a non-empty dict, at most ``max_bytes`` in total, pieces shorter
    than the budget only at a message's end.
    """

    def __init__(self, dq: DQUIC, max_bytes: int) -> None:
        self.dq = dq
        self.max_bytes = max_bytes
        self.sizes: Dict[Tuple, List[int]] = {}
        self.partial: Dict[Tuple, bytearray] = {}
        self.messages: Dict[Tuple, List[bytes]] = {}
        self.calls = 0
        self.peers_seen: Dict[Tuple, int] = {}

    def expect(self, peer: Any, stream_id: int, sizes: List[int]) -> None:
        self.sizes.setdefault((peer, stream_id), []).extend(sizes)

    def pending(self) -> int:
        return sum(len(v) for v in self.sizes.values())

    def run(self, deadline_s: float = 60.0, peer_key=lambda addr: addr) -> None:
        deadline = time.monotonic() + deadline_s
        while self.pending():
            assert time.monotonic() < deadline, f"still waiting for {self.pending()} messages"
            addr, data = self.dq.receive_from(self.max_bytes)
            self.calls += 1
            assert isinstance(data, dict) and data, "receive_from returned an empty dict"
            total = sum(len(v) for v in data.values())
            assert total <= self.max_bytes
            peer = peer_key(addr)
            self.peers_seen[peer] = self.peers_seen.get(peer, 0) + 1
            for sid, piece in data.items():
                assert isinstance(piece, bytes)
                key = (peer, sid)
                assert self.sizes.get(key), f"unexpected data on {key}: {len(piece)} bytes"
                buf = self.partial.setdefault(key, bytearray())
                buf += piece
                want = self.sizes[key][0]
                assert len(buf) <= want, f"{key}: message longer than sent ({len(buf)} > {want})"
                if len(buf) < want:
                    # an unfinished piece is a full budget: alone max_bytes, or the dict is full
                    assert len(piece) == self.max_bytes or total == self.max_bytes, (
                        f"{key}: short piece of {len(piece)} bytes mid-message")
                if len(buf) == want:
                    self.messages.setdefault(key, []).append(bytes(buf))
                    del self.partial[key]
                    self.sizes[key].pop(0)


class EchoThread:
    """Answer every ``receive_from`` of ``server`` from a thread: each message goes back to its
    sender on stream id + ``shift``. ``stop()`` ends the thread and says whether it ended;
    exceptions are kept in ``errors``."""

    def __init__(self, server: DQUIC, shift: int = 0, max_bytes: int = 1 << 16) -> None:
        import threading

        self.server = server
        self.shift = shift
        self.max_bytes = max_bytes
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        server.settimeout(0.2)  # so the loop sees stop() promptly
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    peer, d = self.server.receive_from(self.max_bytes)
                except TimeoutError:
                    continue
                self.server.send_to(peer, {sid + self.shift: v for sid, v in d.items()})
        except BaseException as exc:  # noqa: BLE001 - recorded for the test's assertion
            self.errors.append(exc)

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
