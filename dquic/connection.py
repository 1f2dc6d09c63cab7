"""The sans-IO connection: one dquic connection's whole protocol state machine.

The implementation is compiled (``dquic/_connection.pyx``); this module is its public home.
A ``CoreConnection`` never touches a socket, a thread or a clock: how a driver feeds it
datagrams, timer expiries and the application's commands, and what it asks back, is the theory
of operation that opens ``dquic._connection`` (``help(dquic._connection)``).
"""
from ._connection import (
    MAX_CRYPTO_BUFFER,
    MAX_PENDING_PATH_RESPONSES,
    MAX_STREAM_ID,
    MOVED_CID_CHANGES,
    MOVED_CONFIRMED,
    MOVED_EVENTS,
    MOVED_READABLE,
    MOVED_TERMINATED,
    SPACE_APPLICATION,
    SPACE_HANDSHAKE,
    CoreConnection,
    ConnectionStats,
    _PlainHandshake,
)

__all__ = ["CoreConnection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION"]
