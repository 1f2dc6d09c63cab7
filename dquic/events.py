"""Events a connection reports to its driver through ``CoreConnection.next_event()``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

# the base and the most frequent event are compiled (made once per newly readable stream)
from ._events import Event, MessageReceived

__all__ = [
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "MessageReceived",
    "StreamReset",
    "StopSendingReceived",
    "DatagramReceived",
    "DatagramAcknowledged",
    "DatagramLost",
    "PathChanged",
    "ConnectionTerminated",
]


@dataclass(frozen=True)
class HandshakeCompleted(Event):
    """The handshake finished: application data flows. ``peer_key`` is the peer's static key, if
    the pattern revealed one."""

    peer_key: Optional[bytes] = None


@dataclass(frozen=True)
class HandshakeFailed(Event):
    """The connection ended before its handshake completed; its ``ConnectionTerminated``
    follows. ``address`` is the peer's; ``error_code``, ``reason``, ``by_peer``,
    ``application`` and ``timeout`` are those of the ``ConnectionTerminated``: this side refused
    the peer (``by_peer`` false, ``error_code`` ``ErrorCode.AUTHENTICATION_FAILED``: its key is
    not trusted, it presented none where one is required, a pre-shared key is missing), the
    peer refused this side (``by_peer`` true), the handshake was malformed
    (``ErrorCode.HANDSHAKE_FAILED``), or the peer stopped answering (``timeout``). ``peer_key`` is the static key the peer presented, if
    the handshake got that far, trusted or not: for a refused client, the refused key."""

    address: Tuple
    error_code: int
    reason: str
    by_peer: bool
    application: bool = False
    timeout: bool = False
    peer_key: Optional[bytes] = None


@dataclass(frozen=True)
class StreamReset(Event):
    """The peer abandoned its half of ``stream_id`` (RESET_STREAM)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True)
class StopSendingReceived(Event):
    """The peer asked us to stop sending on ``stream_id``; our half was reset in answer."""

    stream_id: int
    error_code: int


@dataclass(frozen=True)
class DatagramReceived(Event):
    data: bytes


@dataclass(frozen=True)
class DatagramAcknowledged(Event):
    """The unreliable datagram with this id (from ``send_datagram``) was acknowledged."""

    datagram_id: int


@dataclass(frozen=True)
class DatagramLost(Event):
    """The unreliable datagram with this id was declared lost (or dropped from the queue)."""

    datagram_id: int


@dataclass(frozen=True)
class PathChanged(Event):
    """The peer's address changed (migration or NAT rebinding) and the new path was validated."""

    old_addr: Tuple
    new_addr: Tuple


@dataclass(frozen=True)
class ConnectionTerminated(Event):
    """The connection ended. ``by_peer`` tells who closed; ``error_code`` 0 is a clean close; a
    ``reason`` of "idle timeout" / "handshake timeout" marks timeouts."""

    error_code: int
    reason: str
    by_peer: bool
    application: bool = False
    timeout: bool = False
