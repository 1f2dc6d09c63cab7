"""dquic: a fast, secure, reliable transport over UDP.

The public surface:

* ``DQUIC``: the blocking, socket-like endpoint (``bind``, ``send_to``, ``receive_from``, ``close``);
  ``Connection``: a connection as ``DQUIC.connections`` shows it;
* ``KeyPair`` and ``load_public``: identities for authenticated connections;
* ``Configuration``: every tunable of a connection;
* ``DQUICHeader`` / ``DQUICFrame``: the packet header and STREAM frame header codecs;
* the exceptions: ``DQUICError`` (an ``OSError``) and its subclasses, and ``ProtocolError`` (a
  ``ValueError``, raised by every decoder on malformed input);
* ``build_info()``: how this installation was built (packet-protection backend, libcrypto).

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

from typing import TYPE_CHECKING, Any, Dict, List

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


def build_info() -> Dict[str, Any]:
    """How this installation of dquic was built and what its packet protection runs on.

    * ``version``, ``python``: dquic's and the interpreter's versions;
    * ``backend``: the packet-protection backend new keys use (``"openssl"``: libcrypto called
      directly from the compiled code, the fast path; ``"cryptography"``: the ``cryptography``
      package's objects, the fallback of a build without libcrypto); ``backends``: all this
      build can use, the preferred first;
    * ``openssl_version``: the version string of the libcrypto called directly (None without);
    * ``openssl_library``: the file it was loaded from, as the dynamic linker resolved it;
      ``openssl_vendored``: whether that file ships inside this installation (a release wheel's
      own copy, placed by auditwheel, delocate or delvewheel) rather than coming from the system;
    * ``cryptography_version``: the ``cryptography`` package the handshake uses.
    """
    import os
    import sys

    import cryptography

    from . import _protection

    library = _protection.OPENSSL_LIBRARY
    if library:
        library = os.path.abspath(library)  # as loaded, e.g. through an RPATH of $ORIGIN/../dquic.libs
    vendored = False
    if library:
        here = os.path.dirname(os.path.realpath(__file__))
        # auditwheel and delvewheel put the libraries beside the package (dquic.libs/),
        # delocate inside it (dquic/.dylibs/)
        homes = (here, os.path.join(os.path.dirname(here), "dquic.libs"))
        real = os.path.realpath(library)
        vendored = any(os.path.commonpath([os.path.normcase(real), os.path.normcase(h)]) == os.path.normcase(h)
                       for h in homes if os.path.splitdrive(real)[0] == os.path.splitdrive(h)[0])
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "backend": _protection.BACKEND,
        "backends": list(_protection.AVAILABLE_BACKENDS),
        "openssl_version": _protection.OPENSSL_VERSION,
        "openssl_library": library,
        "openssl_vendored": vendored,
        "cryptography_version": cryptography.__version__,
    }


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
    "build_info",
    "load_public",
]
