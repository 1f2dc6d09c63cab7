"""Connection configuration: every tunable of a connection in one place.

A ``Configuration`` is plain data. The endpoint copies it into each connection it creates; the
transport parameters a connection announces to its peer (PROTOCOL.md, "Transport parameters") are
derived from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Optional

__all__ = ["Configuration"]


@dataclass
class Configuration:
    """Options of one connection (and defaults for an endpoint's connections).

    Sizes are bytes, times are seconds.
    """

    #: True for the side that opens the connection.
    is_client: bool = True
    #: Length of the connection IDs this side issues (the peer puts them in short headers).
    connection_id_length: int = 8
    #: UDP payload size a connection starts with, which every path must carry (QUIC's minimum
    #: is 1200). Path MTU discovery raises it for a busy connection (PROTOCOL.md §14.7): up to
    #: ``mtu_discovery_max``, and no further than the local route's MTU allows when the driver
    #: knows it (the sockets of ``DQUIC`` and ``dquic.aio`` ask the kernel), else 1452.
    max_datagram_size: int = 1200
    mtu_discovery: bool = True
    mtu_discovery_max: int = 8952
    #: Idle timeout; the effective value is the smaller of both sides' (0 disables on this side).
    idle_timeout: float = 30.0
    #: The handshake must complete within this time or the connection fails.
    handshake_timeout: float = 10.0
    #: Send a PING when nothing ack-eliciting was sent for this long (None: no keep-alive).
    keep_alive: Optional[float] = None
    #: Longest time this side delays an ACK (RFC 9002 max_ack_delay).
    max_ack_delay: float = 0.025
    #: Exponent scaling the ACK Delay field (RFC 9000 §18.2).
    ack_delay_exponent: int = 3
    #: Initial RTT estimate before any sample (RFC 9002 §6.2.2).
    initial_rtt: float = 0.1
    #: Connection-level receive window: initial and auto-tuning maximum.
    initial_max_data: int = 1 << 20
    max_data_window: int = 24 << 20
    #: Per-stream receive window: initial and auto-tuning maximum.
    initial_max_stream_data: int = 256 << 10
    max_stream_data_window: int = 16 << 20
    #: Stream ids the peer may open (cumulative; raised as streams close).
    max_streams: int = 1024
    #: ACK bookkeeping (PROTOCOL.md §15.10): the most ranges of received packet numbers kept above
    #: the floor (at most 256, what one ACK frame may list; 16 bytes each while kept; a packet
    #: that would need more is not acknowledged, its sender sends it again), and how many may lie
    #: there before an ACK asks to be acknowledged (a PING with it, at most one a round trip) so
    #: that the floor rises (at most half of max_ack_ranges; 1: as soon as a packet is missing).
    max_ack_ranges: int = 256
    ack_ranges_per_frame: int = 1
    #: Send an ACK after this many ack-eliciting packets (or max_ack_delay).
    ack_eliciting_threshold: int = 2
    #: Congestion controller name ("cubic", "newreno") or a CongestionController factory.
    congestion_control: Any = "cubic"
    #: Pace packets over the RTT instead of sending window-sized bursts.
    pacing: bool = True
    #: How many of the peer's connection IDs this side stores.
    active_connection_id_limit: int = 2
    #: Largest DATAGRAM frame accepted (0 disables unreliable datagrams).
    max_datagram_frame_size: int = 1200
    #: Unreliable datagrams queued for sending at most (older ones are dropped as lost).
    max_datagram_queue: int = 256
    #: Bytes of application data a connection buffers for sending, unacknowledged (a blocking
    #: ``send_to`` waits above this). The default covers one stream's largest window
    #: (``max_stream_data_window``): more would only queue, and data queued far ahead of
    #: what is sent has left the CPU's caches by the time it is sealed (bulk over loopback
    #: moved 9.5-10.4 Gbit/s with 64 MiB, 11.1-12.4 with 16 MiB). Raise it with the windows.
    max_send_buffer: int = 16 << 20
    #: Security (see PROTOCOL.md "Handshake and keys"): our static key pair, trusted peer keys,
    #: a pinned server key for clients, and an optional pre-shared key.
    identity: Any = None
    trusted_peers: Optional[List[bytes]] = None
    server_key: Optional[bytes] = None
    psk: Optional[bytes] = None
    #: Packet protection: False only for tests and benchmarks of the bare transport.
    encryption: bool = True
    #: AEAD for packet protection chosen by a client: "AESGCM" (AES-256-GCM with SHA-256, the
    #: fastest where the CPU has AES instructions) or "ChaChaPoly" (ChaCha20-Poly1305 with
    #: BLAKE2s, for CPUs without them). Servers accept both.
    cipher: str = "AESGCM"
    #: Packets sealed under one key before a key update is started automatically.
    key_update_interval: int = 1 << 23
    #: Directory for qlog traces (None: no tracing).
    qlog_dir: Optional[str] = None
    #: QUIC-LB (PROTOCOL.md §17.1, ``dquic.quic_lb``): a server ID of 1..15 bytes written into
    #: every connection ID this side issues, so a QUIC-LB load balancer routes the connection
    #: to this server for its whole life; the nonce fills the rest of ``connection_id_length``
    #: (at least 4 bytes). ``lb_key``: 16-byte AES-128 key of the encrypted modes (None:
    #: plaintext); ``lb_config_id``: the config-rotation codepoint 0..6;
    #: ``lb_length_self_encoding``: the first octet carries the ID's length (else random bits).
    server_id: Optional[bytes] = None
    lb_key: Optional[bytes] = None
    lb_config_id: int = 0
    lb_length_self_encoding: bool = False
    extra: dict = field(default_factory=dict)

    def copy(self, **changes: Any) -> "Configuration":
        """A copy with some fields changed (shallow, as ``dataclasses.replace`` makes it:
        without its call of ``__init__`` with every field, a tenth of the cost); TypeError
        naming a field that does not exist."""
        unknown = changes.keys() - FIELD_NAMES
        if unknown:
            raise TypeError(f"Configuration has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(type(self))
        values = new.__dict__
        values.update(self.__dict__)
        values.update(changes)
        return new

    def new_connection_id(self, random_bytes: Callable[[int], bytes]) -> bytes:
        """A new connection ID for this side to issue: ``connection_id_length`` random bytes,
        or a QUIC-LB connection ID carrying ``server_id`` (nonce drawn from ``random_bytes``)."""
        if self.server_id is None:
            return random_bytes(self.connection_id_length)
        from .quic_lb import generator_for

        return generator_for(self.connection_id_length, self.server_id, self.lb_config_id,
                             self.lb_key, self.lb_length_self_encoding, random_bytes)(
                                 self.connection_id_length)

    def validate(self) -> None:
        """Raise ValueError for settings no connection can work with."""
        if not 0 <= self.connection_id_length <= 20:
            raise ValueError("connection_id_length must be 0..20")
        if self.connection_id_length < 4 and not self.is_client:
            raise ValueError("a server needs connection IDs of at least 4 bytes to route packets")
        if not 1200 <= self.max_datagram_size <= 65527:
            raise ValueError("max_datagram_size must be 1200..65527")
        if not 1200 <= self.mtu_discovery_max <= 65527:
            raise ValueError("mtu_discovery_max must be 1200..65527")
        if self.max_ack_delay < 0 or self.max_ack_delay >= 2 ** 14 / 1000:
            raise ValueError("max_ack_delay out of range")
        if not 0 <= self.ack_delay_exponent <= 20:
            raise ValueError("ack_delay_exponent must be 0..20")
        if not 2 <= self.max_ack_ranges <= 256:
            raise ValueError("max_ack_ranges must be 2..256")
        if self.ack_ranges_per_frame < 1:
            raise ValueError("ack_ranges_per_frame must be >= 1")
        for name in ("initial_max_data", "initial_max_stream_data", "max_streams"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_data_window < self.initial_max_data:
            raise ValueError("max_data_window must be >= initial_max_data")
        if self.max_stream_data_window < self.initial_max_stream_data:
            raise ValueError("max_stream_data_window must be >= initial_max_stream_data")
        if self.active_connection_id_limit < 2:
            raise ValueError("active_connection_id_limit must be >= 2")
        if self.server_id is not None:
            if not isinstance(self.server_id, (bytes, bytearray)) or not 1 <= len(self.server_id) <= 15:
                raise ValueError("server_id must be 1..15 bytes")
            if self.connection_id_length - 1 - len(self.server_id) < 4:
                raise ValueError("connection_id_length must leave a QUIC-LB nonce of at least 4 "
                                 "bytes after the first octet and the server_id")
        if self.lb_key is not None and len(self.lb_key) != 16:
            raise ValueError("lb_key must be 16 bytes (AES-128)")
        if not 0 <= self.lb_config_id <= 6:
            raise ValueError("lb_config_id must be 0..6 (7 marks unroutable connection IDs)")


#: The names of ``Configuration``'s fields.
FIELD_NAMES = frozenset(f.name for f in fields(Configuration))
