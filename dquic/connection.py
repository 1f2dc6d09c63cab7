"""The sans-IO connection: one dquic connection's whole protocol state machine.

The implementation is compiled (``dquic/_connection.pyx``); this module is its public home.

A ``CoreConnection`` never touches a socket, a thread or a clock. Its driver (the endpoint, the
blocking ``DQUIC`` class, the asyncio API or the network simulator) feeds it what happens and asks
it what to do:

* ``receive_datagram(data, addr, now)`` when a datagram for this connection arrives;
* ``handle_timer(now)`` when the deadline from ``get_timer()`` has passed;
* commands from the application: ``send_message``, ``end_stream``, ``reset_stream``,
  ``stop_sending``, ``send_datagram``, ``close``.

After each of those the driver calls ``datagrams_to_send(now)`` and sends every ``(data, addr)``
it returns, then re-arms its timer from ``get_timer()``, and drains ``next_event()``.
"""
from ._connection import (
    MAX_CRYPTO_BUFFER,
    MAX_PENDING_PATH_RESPONSES,
    MAX_STREAM_ID,
    SPACE_APPLICATION,
    SPACE_HANDSHAKE,
    CoreConnection,
    ConnectionStats,
    _PlainHandshake,
)

__all__ = ["CoreConnection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION"]
