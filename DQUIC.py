"""Compatibility module: ``import DQUIC; DQUIC.DQUIC()`` as in the original seed project.

Everything here is re-exported from the ``dquic`` package: ``DQUIC.DQUIC is dquic.sync.DQUIC``.
"""
from dquic._seed import DQUICFrame, DQUICHeader
from dquic.errors import (
    AuthenticationError,
    ConnectionClosed,
    ConnectionTimeout,
    DQUICError,
)
from dquic.sync import DQUIC, Connection, ConnectionRefused

__all__ = [
    "DQUIC",
    "DQUICHeader",
    "DQUICFrame",
    "Connection",
    "DQUICError",
    "ConnectionTimeout",
    "ConnectionClosed",
    "ConnectionRefused",
    "AuthenticationError",
]
