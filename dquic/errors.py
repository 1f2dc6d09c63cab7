"""Exceptions and wire error codes.

``DQUICError`` (an ``OSError``) is the base of everything the endpoint raises about a
connection. ``ProtocolError`` (a ``ValueError``) is the one exception every decoder raises on
malformed input; it carries the wire error code a connection closes with (PROTOCOL.md §11).
"""
from __future__ import annotations

import enum
import errno
from typing import Any, Dict, Optional

__all__ = [
    "ErrorCode",
    "DQUICError",
    "ProtocolError",
    "ConnectionTimeout",
    "ConnectionClosed",
    "AuthenticationError",
    "ConnectionRefused",
    "EndpointClosed",
    "UndeliveredData",
]


class ErrorCode(enum.IntEnum):
    """Transport error codes carried in CONNECTION_CLOSE (type 0x1c); RFC 9000 §20.1 values."""

    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    CONNECTION_REFUSED = 0x02
    FLOW_CONTROL_ERROR = 0x03
    STREAM_LIMIT_ERROR = 0x04
    STREAM_STATE_ERROR = 0x05
    FINAL_SIZE_ERROR = 0x06
    FRAME_ENCODING_ERROR = 0x07
    TRANSPORT_PARAMETER_ERROR = 0x08
    CONNECTION_ID_LIMIT_ERROR = 0x09
    PROTOCOL_VIOLATION = 0x0A
    INVALID_TOKEN = 0x0B
    APPLICATION_ERROR = 0x0C
    CRYPTO_BUFFER_EXCEEDED = 0x0D
    KEY_UPDATE_ERROR = 0x0E
    AEAD_LIMIT_REACHED = 0x0F
    NO_VIABLE_PATH = 0x10
    # dquic-specific (outside RFC 9000's range, inside the 62-bit varint space)
    HANDSHAKE_FAILED = 0x100
    AUTHENTICATION_FAILED = 0x101


class DQUICError(OSError):
    """Base class of the errors dquic raises about connections and endpoints."""


class ProtocolError(ValueError):
    """Malformed or forbidden input from the network.

    Every decoder raises only this on bad bytes. ``error_code`` is the transport error code
    (``ErrorCode``) a connection closes with when the input came from an authenticated peer;
    ``frame_type`` names the frame being processed, when known.
    """

    def __init__(
        self,
        message: str,
        error_code: int = ErrorCode.FRAME_ENCODING_ERROR,
        frame_type: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.error_code = int(error_code)
        self.frame_type = frame_type


class ConnectionTimeout(DQUICError, TimeoutError):
    """The peer did not answer in time (handshake or idle timeout)."""


class ConnectionClosed(DQUICError, ConnectionResetError):
    """The connection was closed or reset by the peer or locally. Like a reset socket it is
    a ``ConnectionResetError`` with errno ``ECONNRESET``; ``error_code`` and ``reason`` are
    what the CONNECTION_CLOSE carried."""

    def __init__(self, message: str = "connection closed", error_code: int = 0, reason: str = "") -> None:
        super().__init__(errno.ECONNRESET, message)
        self.error_code = error_code
        self.reason = reason


class AuthenticationError(DQUICError):
    """The peer's static key is not trusted, or the handshake failed to authenticate."""


class ConnectionRefused(DQUICError, ConnectionRefusedError):
    """The peer's host reported that nothing listens on that port (ICMP port unreachable)
    while the handshake was under way."""


class UndeliveredData(DQUICError):
    """Data the application queued was not acknowledged by its peer when ``close()`` gave up
    on it (``linger`` ran out, or was 0) or when ``flush()`` timed out.

    ``undelivered`` maps each peer address to the number of stream bytes it had not
    acknowledged (messages with their few bytes of length prefix; they may or may not have
    arrived, and none will be sent again). ``errno`` is ``ETIMEDOUT``.
    """

    def __init__(self, undelivered: Dict[Any, int], message: str = "") -> None:
        total = sum(undelivered.values())
        super().__init__(errno.ETIMEDOUT, message or (
            f"{total} bytes queued for {len(undelivered)} peer(s) were not acknowledged"))
        self.undelivered = dict(undelivered)


class EndpointClosed(DQUICError):
    """The endpoint was closed; ``errno`` is ``EBADF`` like a closed socket's."""

    def __init__(self, message: str = "endpoint is closed") -> None:
        super().__init__(errno.EBADF, message)
