"""dquic: a fast, secure, reliable transport over UDP."""
from ._version import __version__
from .errors import (
    AuthenticationError,
    ConnectionClosed,
    ConnectionTimeout,
    DQUICError,
    ErrorCode,
    ProtocolError,
)

__all__ = [
    "__version__",
    "AuthenticationError",
    "ConnectionClosed",
    "ConnectionTimeout",
    "DQUICError",
    "ErrorCode",
    "ProtocolError",
]
