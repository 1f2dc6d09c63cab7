"""Type stub of dquic._events (the event base and MessageReceived; compiled)."""
from dataclasses import dataclass

from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

__all__ = ["Event", "MessageReceived"]

class Event:
    """Base class of connection events."""

@disjoint_base
@dataclass(frozen=True)
class MessageReceived(Event):
    """Stream ``stream_id`` has readable message data (``CoreConnection.read_message``). Reported once
    per transition from nothing-readable to readable."""

    stream_id: int
