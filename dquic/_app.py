"""What the blocking (``dquic.sync``) and asyncio (``dquic.aio``) drivers show the application
alike: argument checks, the split of options into ``Configuration`` fields and the driver's own,
and the exception a connection's end means for the calls waiting on it.

Both drivers call these, so a check or a message reads the same whichever API a user picked.
"""
from __future__ import annotations

import errno
from typing import Any, Dict, Iterable, Tuple, Union

from .config import FIELD_NAMES
from .errors import AuthenticationError, ConnectionClosed, ConnectionTimeout, ErrorCode
from .events import ConnectionTerminated

__all__ = ["MAX_STREAM_ID", "CONFIG_FIELDS", "check_stream_id", "as_buffer", "validate_messages",
           "split_options", "termination_error"]

#: The largest stream id (ids are varints: 0 <= id < 2**62).
MAX_STREAM_ID = (1 << 62) - 1
#: ``Configuration`` fields an application may pass as options (``is_client`` is the driver's).
CONFIG_FIELDS = FIELD_NAMES - {"is_client"}


def check_stream_id(stream_id: Any, what: str = "stream id") -> int:
    """``stream_id`` if it is an int in 0..2**62-1 (bools refused): TypeError/ValueError else."""
    if type(stream_id) is not int and (not isinstance(stream_id, int) or isinstance(stream_id, bool)):
        raise TypeError(f"{what} {stream_id!r} is not an int")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"{what} {stream_id} outside 0 <= id < 2**62")
    return stream_id


def as_buffer(data: Any, what: str = "") -> Tuple[Union[bytes, memoryview], int]:
    """``(buffer, nbytes)`` for a contiguous bytes-like ``data`` (bytes as they are, anything
    else as a flat byte memoryview); TypeError for str and non-buffers, ValueError for a
    non-contiguous buffer. ``what`` prefixes the messages (e.g. ``"stream 4: "``)."""
    if type(data) is bytes:
        return data, len(data)
    if isinstance(data, str):
        raise TypeError(f"{what}str is not bytes-like (encode it first)")
    view: Union[memoryview, bytes]
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what}{type(data).__name__} is not a bytes-like object") from None
    if not view.c_contiguous:
        raise ValueError(f"{what}buffer is not C-contiguous")
    n = view.nbytes
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B") if n else b""
    return view, n


# ``validate_messages(messages)``: the compiled check of a ``{stream_id: bytes-like}`` dict
# before anything is sent, ``([(stream_id, buffer, nbytes)], total)`` (with check_stream_id and
# as_buffer above for anything but int ids with bytes values)
from ._connection import validate_messages  # noqa: E402


def split_options(options: Dict[str, Any], driver_options: Iterable[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(Configuration fields, driver options)`` from ``options`` (which is not changed);
    TypeError naming every unknown option."""
    names = set(driver_options)
    driver = {k: v for k, v in options.items() if k in names}
    config = {k: v for k, v in options.items() if k not in names}
    unknown = set(config) - CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return config, driver


def termination_error(ev: ConnectionTerminated, established: bool, addr: Tuple) -> BaseException:
    """The exception a ``ConnectionTerminated`` event means for the application's calls."""
    code = ev.error_code
    if ev.timeout:
        what = "idle" if established else "handshake"
        return ConnectionTimeout(errno.ETIMEDOUT, f"{what} timeout with {addr}")
    if code == ErrorCode.AUTHENTICATION_FAILED or (
            code == ErrorCode.HANDSHAKE_FAILED and not ev.application and not established):
        return AuthenticationError(errno.EACCES, f"handshake with {addr} failed: {ev.reason}")
    if ev.by_peer:
        return ConnectionClosed(f"connection closed by {addr} (code {code}): {ev.reason}", code,
                                ev.reason)
    if code:
        return ConnectionClosed(f"connection to {addr} failed (code {code}): {ev.reason}", code,
                                ev.reason)
    return ConnectionClosed(f"connection to {addr} closed", code, ev.reason)
