"""dquic: a fast, secure, reliable transport over UDP.

The public surface:

* ``DQUIC``: the blocking, socket-like endpoint (``bind``, ``send_to``, ``receive_from``, ``close``);
  ``Connection``: a connection as ``DQUIC.connections`` shows it;
* ``KeyPair`` and ``load_public``: identities for authenticated connections;
* ``Configuration``: every tunable of a connection;
* ``DQUICHeader`` / ``DQUICFrame``: the packet header and STREAM frame header codecs;
* the exceptions: ``DQUICError`` (an ``OSError``) and its subclasses, and ``ProtocolError`` (a
  ``ValueError``, raised by every decoder on malformed input).

The sans-IO core lives in ``dquic.connection`` and ``dquic.endpoint``; the network simulator in
``dquic.testing``.
"""
from ._seed import DQUICFrame, DQUICHeader
from ._version import __version__
from .config import Configuration
from .errors import (
    AuthenticationError,
    ConnectionClosed,
    ConnectionRefused,
    ConnectionTimeout,
    DQUICError,
    EndpointClosed,
    UndeliveredData,
    ErrorCode,
    ProtocolError,
)

from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from .keys import KeyPair, load_public
    from .sync import DQUIC, Connection

# The socket API and key handling pull in threads, sockets and ``cryptography``: load them on
# first use so ``import dquic`` (and pytest's plugin discovery) stays cheap.
_LAZY = {
    "DQUIC": ("sync", "DQUIC"),
    "Connection": ("sync", "Connection"),
    "KeyPair": ("keys", "KeyPair"),
    "load_public": ("keys", "load_public"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dquic' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    "AuthenticationError",
    "Configuration",
    "Connection",
    "ConnectionClosed",
    "ConnectionRefused",
    "ConnectionTimeout",
    "DQUIC",
    "DQUICError",
    "DQUICFrame",
    "DQUICHeader",
    "EndpointClosed",
    "UndeliveredData",
    "ErrorCode",
    "KeyPair",
    "ProtocolError",
    "load_public",
]
