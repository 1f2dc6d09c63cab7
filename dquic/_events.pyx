# cython: language_level=3
"""The base of connection events and the one a connection reports most (compiled).

``MessageReceived`` is made once per stream that becomes readable: with one message on each of
many stream ids that is once per message, so it is a compiled frozen dataclass (about 25 ns to
make from compiled code against about 210 ns for a Python one) with everything a Python
dataclass offers (``dataclasses.fields``, ``replace``, ``repr``, equality, hashing, pattern
matching). ``dquic.events`` re-exports both; the other events subclass ``Event`` there.
"""
cimport cython

__all__ = ["Event", "MessageReceived"]


cdef class Event:
    """Base class of connection events."""

    __slots__ = ()


@cython.no_gc  # holds an int: no cycle can pass through it (and made once per message on new ids)
@cython.dataclasses.dataclass(frozen=True)
cdef class MessageReceived(Event):
    """Stream ``stream_id`` has readable message data (``CoreConnection.read_message``). Reported once
    per transition from nothing-readable to readable."""

    stream_id: object


cdef MessageReceived message_received(object stream_id):
    cdef MessageReceived ev = MessageReceived.__new__(MessageReceived)
    ev.stream_id = stream_id
    return ev
