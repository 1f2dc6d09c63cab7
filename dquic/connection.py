"""The sans-IO connection: one dquic connection's whole protocol state machine.

Theory of operation
-------------------
A ``Connection`` never touches a socket, a thread or a clock. Its driver (the endpoint, the
blocking ``DQUIC`` class, the asyncio API or the network simulator) feeds it what happens and asks
it what to do:

* ``receive_datagram(data, addr, now)`` when a datagram for this connection arrives;
* ``handle_timer(now)`` when the deadline from ``get_timer()`` has passed;
* commands from the application: ``send_message``, ``end_stream``, ``reset_stream``,
  ``stop_sending``, ``send_datagram``, ``close``.

After each of those the driver calls ``datagrams_to_send(now)`` and sends every ``(data, addr)``
it returns, then re-arms its timer from ``get_timer()``, and drains ``next_event()``.

Packets live in two packet-number spaces (PROTOCOL.md §7): HANDSHAKE (long-header packets that
carry the Noise handshake in CRYPTO frames) and APPLICATION (short-header 1-RTT packets sealed
with the keys the handshake produced). Each space tracks the packet numbers it received (a
``RangeSet`` that becomes ACK frames) and the packets it sent (``Recovery``, RFC 9002). What a
sent packet carried is recorded as a small tuple per frame, so that when ``Recovery`` declares the
packet acknowledged or lost the connection can mark stream byte ranges delivered or re-queue them:
lost data is always re-sent as byte ranges of its stream in new packets, never by replaying a
packet.

Stream bytes carry length-prefixed messages (PROTOCOL.md §5): ``send_message`` appends one,
``read_message`` returns the next message (or the next piece of a large one).
"""
from __future__ import annotations

import hmac
import os
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _codec as codec
from ._congestion import Pacer
from .congestion import create_controller
from ._ranges import RangeSet
from ._recovery import Recovery, SentPacket
from ._streams import FlowWindow, RecvStream, SendStream
from .config import Configuration
from ._protection import DecryptionFailed, NullProtection
from .errors import AuthenticationError, ErrorCode, ProtocolError
from .events import (
    ConnectionTerminated,
    DatagramAcknowledged,
    DatagramLost,
    DatagramReceived,
    Event,
    HandshakeCompleted,
    MessageReceived,
    PathChanged,
    StopSendingReceived,
    StreamReset,
)
from .tokens import retry_integrity_tag
from .transport_params import TransportParameters

__all__ = ["Connection", "ConnectionStats", "SPACE_HANDSHAKE", "SPACE_APPLICATION"]

SPACE_HANDSHAKE = 0
SPACE_APPLICATION = 1

MAX_STREAM_ID = (1 << 62) - 1
MAX_CRYPTO_BUFFER = 16 * 1024
MAX_PENDING_PATH_RESPONSES = 4
# Packets that only carry these frames are not ack-eliciting (RFC 9002 §2).
_NON_ELICITING = frozenset((codec.FRAME_ACK, codec.FRAME_ACK_ECN, codec.FRAME_PADDING,
                            codec.FRAME_CONNECTION_CLOSE, codec.FRAME_CONNECTION_CLOSE_APP))
# Frames a long-header (handshake) packet may carry (PROTOCOL.md §4.4).
_HANDSHAKE_FRAMES = frozenset((codec.FRAME_PADDING, codec.FRAME_PING, codec.FRAME_ACK,
                               codec.FRAME_ACK_ECN, codec.FRAME_CRYPTO, codec.FRAME_CONNECTION_CLOSE))
# Frames that do not count as "non-probing" for migration (RFC 9000 §9.1).
_PROBING = frozenset((codec.FRAME_PADDING, codec.FRAME_PATH_CHALLENGE, codec.FRAME_PATH_RESPONSE,
                      codec.FRAME_NEW_CONNECTION_ID))

# connection states
_HANDSHAKING, _ESTABLISHED, _CLOSING, _DRAINING, _TERMINATED = range(5)


class _PlainHandshake:
    """Handshake used when encryption is disabled (tests, benchmarks of the bare transport).

    Same interface as ``dquic.handshake.ClientHandshake`` / ``ServerHandshake``: the client sends
    its transport parameters, the server answers with its own, and both sides use null packet
    protection. It authenticates nothing and must never be used on a real network.
    """

    def __init__(self, is_client: bool, transport_params: bytes) -> None:
        self._is_client = is_client
        self._params = transport_params
        self.complete = False
        self.peer_static: Optional[bytes] = None
        self.peer_transport_params: Optional[bytes] = None

    def start(self) -> bytes:
        return b"\xff" + self._params

    def receive(self, message: bytes) -> Optional[bytes]:
        if self.complete or not message or message[0] != 0xFF:
            raise ProtocolError("unexpected plain handshake message", ErrorCode.HANDSHAKE_FAILED)
        self.peer_transport_params = bytes(message[1:])
        self.complete = True
        return None if self._is_client else b"\xff" + self._params

    def protections(self, **_: Any):
        return NullProtection(), NullProtection()


class _Space:
    """Per packet-number-space state: receive bookkeeping for ACKs, crypto stream halves."""

    __slots__ = ("rx", "rx_floor", "largest_rx", "largest_rx_time", "ack_pending",
                 "unacked_eliciting", "ack_deadline", "next_pn", "crypto_send", "crypto_recv",
                 "discarded", "largest_acked")

    def __init__(self, max_ranges: int) -> None:
        self.rx = RangeSet(max_ranges=max_ranges)
        self.rx_floor = 0  # packet numbers below this are treated as duplicates
        self.largest_rx = -1
        self.largest_rx_time = 0.0
        self.ack_pending = False  # something to acknowledge
        self.unacked_eliciting = 0  # ack-eliciting packets received since our last ACK
        self.ack_deadline: Optional[float] = None
        self.next_pn = 0
        self.crypto_send = SendStream(0)
        self.crypto_recv = RecvStream(0, MAX_CRYPTO_BUFFER)
        self.discarded = False
        self.largest_acked = -1  # largest of our packet numbers the peer acknowledged


class _Stream:
    """Both halves of one stream id plus their flow-control state."""

    __slots__ = ("stream_id", "send", "recv", "send_limit", "readable_signalled",
                 "send_opened", "recv_opened", "want_max_stream_data", "blocked_reported",
                 "reset_to_send", "stop_to_send", "queued", "closed_counted", "counted")

    def __init__(self, stream_id: int, config: Configuration, send_limit: int) -> None:
        self.stream_id = stream_id
        self.send = SendStream(stream_id, 0)  # unbounded here: drivers apply back-pressure
        # the receive half owns its auto-tuned flow-control window (MAX_STREAM_DATA)
        self.recv = RecvStream(stream_id, config.max_stream_data_window, config.initial_max_stream_data)
        self.send_limit = send_limit  # peer's MAX_STREAM_DATA for our half
        self.readable_signalled = False
        self.send_opened = False
        self.recv_opened = False
        self.want_max_stream_data = False
        self.blocked_reported = -1
        self.reset_to_send: Optional[int] = None
        self.stop_to_send: Optional[int] = None
        self.queued = False
        self.closed_counted = False
        self.counted = False  # our half consumed one of the peer's MAX_STREAMS credits


class ConnectionStats:
    """A snapshot of a connection's counters (cheap: read on demand)."""

    __slots__ = ("smoothed_rtt", "min_rtt", "latest_rtt", "rttvar", "cwnd", "bytes_in_flight",
                 "packets_sent", "packets_received", "packets_lost", "spurious_losses",
                 "bytes_sent", "bytes_received", "stream_bytes_sent", "stream_bytes_received",
                 "bytes_retransmitted", "bytes_lost", "packets_dropped", "duplicate_packets",
                 "send_window_used", "recv_window_used", "recv_window", "pto_count")

    def __init__(self, **values: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, values.get(k, 0))

    def as_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"ConnectionStats({inner})"


class Connection:
    """One dquic connection, sans-IO (see the module docstring for the calling protocol).

    Clients are created by the application (usually through an endpoint) with
    ``Connection(config, peer_addr, ...)`` and then ``connect(now)``. Servers' connections are
    created by the endpoint when a new client's first packet arrives.
    """

    def __init__(
        self,
        config: Configuration,
        peer_addr: Tuple,
        *,
        host_cid: Optional[bytes] = None,
        peer_cid: Optional[bytes] = None,
        original_dcid: Optional[bytes] = None,
        retry_source_cid: Optional[bytes] = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        reset_token: Optional[Callable[[bytes], bytes]] = None,
        handshake: Any = None,
    ) -> None:
        config.validate()
        self.config = config
        self.is_client = config.is_client
        self._random = random_bytes
        self._reset_token = reset_token or (lambda cid: random_bytes(16))
        self.peer_addr = peer_addr
        self._state = _HANDSHAKING
        self._events: Deque[Event] = deque()

        # connection IDs (RFC 9000 §5.1): ours (peer puts them in DCID) and the peer's
        cid_len = config.connection_id_length
        self.host_cid = host_cid if host_cid is not None else random_bytes(cid_len)
        self._host_cids: Dict[int, bytes] = {0: self.host_cid}  # sequence -> cid
        self._host_cid_seq = 0
        self._cids_to_issue: List[int] = []
        self._retire_host_requested: List[int] = []
        self.cid_changes: List[Tuple[str, bytes]] = [("add", self.host_cid)]
        self._retry_scid = retry_source_cid  # server: the Retry we sent; client: the one we got
        self._retry_token = b""
        if self.is_client:
            self.original_dcid = original_dcid or random_bytes(max(8, cid_len))
            self.peer_cid = self.original_dcid
        else:
            self.original_dcid = original_dcid
            self.peer_cid = peer_cid or b""
        self._peer_cids: Dict[int, Tuple[bytes, Optional[bytes]]] = {0: (self.peer_cid, None)}
        self._peer_cid_seq = 0
        self._retire_to_send: List[int] = []
        self._retired_below = 0  # peer CIDs with lower sequence numbers are retired
        self._peer_cid_set_by_server = not self.is_client

        # packet-number spaces, loss recovery, congestion control
        self._spaces = [_Space(config.max_ack_ranges), _Space(config.max_ack_ranges)]
        cc = config.congestion_control
        self._cc = cc(max_datagram_size=config.max_datagram_size) if callable(cc) else create_controller(
            cc, max_datagram_size=config.max_datagram_size)
        self._recovery = Recovery(self._cc, max_ack_delay=0.0, initial_rtt=config.initial_rtt)
        self._pacer = Pacer(config.max_datagram_size) if config.pacing else None
        self._pacing_deadline: Optional[float] = None
        self._probes = [0, 0]

        # transport parameters
        self._local_params = self._make_transport_params()
        self._peer_params: Optional[TransportParameters] = None
        self._peer_max_ack_delay = 0.025
        self._peer_ack_delay_exponent = 3
        self._peer_max_datagram_frame = 0

        # handshake and packet protection
        if handshake is None:
            if config.encryption:
                handshake = self._make_secure_handshake()
            else:
                handshake = _PlainHandshake(self.is_client, self._local_params.encode())
        self._handshake = handshake
        self._seal = [NullProtection(), None]
        self._open = [NullProtection(), None]
        self._handshake_confirmed = False
        self._handshake_done_pending = False
        self.peer_key: Optional[bytes] = None

        # streams and flow control
        self._streams: Dict[int, _Stream] = {}
        self._send_queue: Deque[_Stream] = deque()
        self._peer_max_data = 0
        self._peer_stream_limit = 0  # initial MAX_STREAM_DATA for our halves
        self._data_sent = 0  # sum of highest offsets sent, all streams (connection credit used)
        self._data_blocked_reported = -1
        self._recv_window = FlowWindow(config.initial_max_data, config.max_data_window)
        self._data_received = 0  # sum of highest offsets received
        self._want_max_data = False
        self._peer_stream_credit = 0  # MAX_STREAMS from the peer
        self._peer_opened = 0  # stream ids the peer started sending on
        self._max_streams_local = config.max_streams  # what we allow the peer (cumulative)
        self._want_max_streams = False
        self._streams_blocked_reported = -1
        self._waiting_for_stream_credit: Deque[_Stream] = deque()
        self._send_buffered = 0

        # unreliable datagrams (RFC 9221)
        self._datagrams: Deque[Tuple[int, bytes]] = deque()
        self._datagram_seq = 0

        # paths (RFC 9000 §8.2, §9)
        self._bytes_received_on_path = 0
        self._bytes_sent_on_path = 0
        # a server that sent a Retry has validated the address through the token
        self._address_validated = self.is_client or retry_source_cid is not None
        self._path_challenge: Optional[Tuple[bytes, Tuple, float]] = None  # data, addr, deadline
        self._path_responses: Deque[bytes] = deque()
        self._previous_addr: Optional[Tuple] = None
        self._ping_pending = False
        self._old_keys_deadline: Optional[float] = None  # when to drop pre-key-update keys

        # timers (absolute virtual times)
        self._created = None
        self._last_activity = 0.0
        self._last_eliciting_sent = 0.0
        self._eliciting_since_receive = False
        self._idle_timeout = config.idle_timeout
        self._close_deadline: Optional[float] = None
        self._close_frame: Optional[Tuple[int, int, bytes, bool]] = None
        self._close_sent_at = -1.0
        self._local_close = False

        self._qlog: Any = None
        # statistics
        self.packets_received = 0
        self.packets_dropped = 0
        self.duplicate_packets = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.stream_bytes_received = 0

    # ----------------------------------------------------------------------------------------
    # construction helpers
    def _make_transport_params(self) -> TransportParameters:
        c = self.config
        p = TransportParameters(
            max_idle_timeout=int(c.idle_timeout * 1000),
            max_udp_payload_size=max(1200, c.max_datagram_size),
            initial_max_data=c.initial_max_data,
            initial_max_stream_data=c.initial_max_stream_data,
            initial_max_streams=c.max_streams,
            ack_delay_exponent=c.ack_delay_exponent,
            max_ack_delay=int(round(c.max_ack_delay * 1000)),
            active_connection_id_limit=c.active_connection_id_limit,
            initial_source_connection_id=self.host_cid,
            max_datagram_frame_size=c.max_datagram_frame_size,
        )
        if not self.is_client:
            p.original_destination_connection_id = self.original_dcid
            p.retry_source_connection_id = self._retry_scid
            p.stateless_reset_token = self._reset_token(self.host_cid)
        return p

    def _prologue(self) -> bytes:
        odcid = self.original_dcid or b""
        client_cid = self.host_cid if self.is_client else self.peer_cid
        return (b"dquic/1" + codec.DQUIC_VERSION_1.to_bytes(4, "big") + bytes([len(odcid)]) + odcid
                + bytes([len(client_cid)]) + client_cid)

    def _make_secure_handshake(self) -> Any:
        from .handshake import ClientHandshake, ServerHandshake

        c = self.config
        params = self._local_params.encode()
        if self.is_client:
            return ClientHandshake(identity=c.identity, server_key=c.server_key,
                                   trusted_peers=c.trusted_peers, psk=c.psk,
                                   transport_params=params, prologue=self._prologue(),
                                   cipher=c.cipher)
        if c.identity is None:
            raise ValueError("a server needs an identity (KeyPair)")
        return ServerHandshake(identity=c.identity, trusted_peers=c.trusted_peers, psk=c.psk,
                               transport_params=params, prologue=self._prologue())

    # ----------------------------------------------------------------------------------------
    # public state
    @property
    def is_established(self) -> bool:
        """True once the handshake completed and until the connection starts closing."""
        return self._state == _ESTABLISHED

    @property
    def is_closed(self) -> bool:
        """True once the connection is closing, draining or terminated: it sends no more data."""
        return self._state >= _CLOSING

    @property
    def is_terminated(self) -> bool:
        """True when nothing remains to do: the driver may forget the connection."""
        return self._state == _TERMINATED

    @property
    def handshake_confirmed(self) -> bool:
        """True once the peer proved it has the 1-RTT keys (RFC 9001 §4.1.2)."""
        return self._handshake_confirmed

    @property
    def handshake_complete(self) -> bool:
        return self._state >= _ESTABLISHED or self._handshake.complete

    @property
    def stats(self) -> ConnectionStats:
        r = self._recovery
        rtt = r.rtt
        return ConnectionStats(
            smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt, latest_rtt=rtt.latest_rtt,
            rttvar=rtt.rttvar, cwnd=self._cc.congestion_window,
            bytes_in_flight=self._cc.bytes_in_flight, packets_sent=r.packets_sent,
            packets_received=self.packets_received, packets_lost=r.packets_lost,
            spurious_losses=r.spurious_losses, bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received, stream_bytes_sent=self._data_sent,
            stream_bytes_received=self.stream_bytes_received,
            bytes_retransmitted=sum(s.send.bytes_retransmitted for s in self._streams.values()),
            bytes_lost=r.bytes_lost, packets_dropped=self.packets_dropped,
            duplicate_packets=self.duplicate_packets,
            send_window_used=(self._data_sent / self._peer_max_data) if self._peer_max_data else 0.0,
            recv_window_used=(self._data_received / self._recv_window.limit)
            if self._recv_window.limit else 0.0,
            recv_window=self._recv_window.limit, pto_count=r.pto_count,
        )

    def streams(self) -> List[int]:
        """Ids of the streams this connection has state for."""
        return list(self._streams)

    def stream_bytes(self, stream_id: int) -> Tuple[int, int]:
        """``(bytes_sent, bytes_acked)`` of our half of a stream (message prefixes included)."""
        s = self._streams.get(stream_id)
        if s is None:
            return (0, 0)
        return (s.send.offset_sent, s.send.acked_offset)

    @property
    def send_buffered(self) -> int:
        """Bytes of stream data written but not yet acknowledged (for back-pressure)."""
        return sum(s.send.buffered for s in self._streams.values())

    # ----------------------------------------------------------------------------------------
    # commands
    def connect(self, now: float) -> None:
        """Client: start the handshake. Call ``datagrams_to_send(now)`` next."""
        if not self.is_client:
            raise RuntimeError("connect() is for clients")
        if self._created is not None:
            raise RuntimeError("connect() called twice")
        self._created = now
        self._last_activity = now
        self._spaces[SPACE_HANDSHAKE].crypto_send.write_message(self._handshake.start())

    def send_message(self, stream_id: int, data: Any) -> int:
        """Queue ``data`` (any bytes-like object) as one message on ``stream_id``.

        Returns the number of payload bytes queued. The stream is opened on first use. Raises
        ValueError/TypeError for bad arguments and ``ConnectionClosed``-worthy RuntimeError if the
        connection is closing. Call ``datagrams_to_send(now)`` next.
        """
        stream = self._send_stream(stream_id)
        n = stream.send.write_message(data)
        self._schedule(stream)
        return n - _varint_len(n)  # payload bytes (write_message counts the prefix too)

    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = False) -> int:
        """Queue ``data`` as one message; with ``end_stream`` also finish our half of the stream."""
        n = self.send_message(stream_id, data)
        if end_stream:
            self.end_stream(stream_id)
        return n

    def end_stream(self, stream_id: int) -> None:
        """Finish our half of a stream (FIN after the queued messages)."""
        stream = self._send_stream(stream_id)
        stream.send.finish()
        self._schedule(stream)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Abandon our half of a stream: queued data is dropped, the peer gets RESET_STREAM."""
        stream = self._send_stream(stream_id)
        if stream.send.reset_code is None and not stream.send.is_finished:
            stream.send.reset(error_code)
            stream.reset_to_send = error_code
            self._schedule(stream)

    def stop_sending(self, stream_id: int, error_code: int = 0) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING); data still arriving is dropped."""
        stream = self._get_stream(stream_id, local=True)
        stream.stop_to_send = error_code
        self._schedule(stream)

    def send_datagram(self, data: Any) -> int:
        """Queue an unreliable datagram (RFC 9221); returns its id for the ack/loss events.

        Raises ValueError if the peer does not accept datagrams of that size.
        """
        data = bytes(data)
        if self._state > _ESTABLISHED:
            raise RuntimeError("connection is closing")
        limit = self._peer_max_datagram_frame if self._peer_params else self.config.max_datagram_frame_size
        if len(data) + 4 > limit:
            raise ValueError(f"datagram of {len(data)} bytes exceeds the peer's limit")
        if len(data) > self.config.max_datagram_size - 64:
            raise ValueError("datagram does not fit in one packet")
        self._datagram_seq += 1
        self._datagrams.append((self._datagram_seq, data))
        while len(self._datagrams) > self.config.max_datagram_queue:
            dropped, _ = self._datagrams.popleft()
            self._events.append(DatagramLost(dropped))
        return self._datagram_seq

    def close(self, error_code: int = 0, reason: str = "", application: bool = True) -> None:
        """Close the connection: CONNECTION_CLOSE goes out, then the closing period (3 PTO).

        Data not yet acknowledged is abandoned; drivers that promise delivery wait for
        ``send_buffered == 0`` first. Call ``datagrams_to_send(now)`` next.
        """
        if self._state >= _CLOSING:
            return
        if not self.handshake_complete:
            application = False
            if error_code == 0:
                error_code = ErrorCode.APPLICATION_ERROR if reason else ErrorCode.NO_ERROR
        self._local_close = True
        self._close_frame = (int(error_code), 0, reason.encode("utf-8", "replace")[:512], application)
        self._enter_closing(_CLOSING, None)
        self._emit_terminated(ConnectionTerminated(int(error_code), reason, by_peer=False,
                                                 application=application))

    def request_key_update(self) -> None:
        """Start a key update (RFC 9001 §6) now instead of waiting for the automatic one."""
        keys = getattr(self._seal[SPACE_APPLICATION], "request_key_update", None)
        if keys is None:
            raise RuntimeError("no key update possible before the handshake completes")
        keys()

    # ----------------------------------------------------------------------------------------
    # reading
    def next_event(self) -> Optional[Event]:
        """Pop the next event, or None. Drain after every call that moves the connection."""
        return self._events.popleft() if self._events else None

    def readable_streams(self) -> List[int]:
        """Streams whose next message (or a piece of it) can be read now."""
        return [sid for sid, s in self._streams.items() if s.recv.message_ready(1)]

    def message_ready(self, stream_id: int, max_bytes: int) -> bool:
        """True if ``read_message(stream_id, max_bytes)`` would return a whole message, the end of
        one, or exactly ``max_bytes`` of one."""
        s = self._streams.get(stream_id)
        return s is not None and s.recv.message_ready(max_bytes)

    def read_message(self, stream_id: int, max_bytes: int) -> Optional[Tuple[bytes, bool]]:
        """Read up to ``max_bytes`` of the next message on a stream: ``(data, end_of_message)``,
        or None if nothing is readable. Reading opens flow-control window for the peer."""
        s = self._streams.get(stream_id)
        if s is None:
            return None
        before = s.recv.read_offset
        result = s.recv.read_message(max_bytes)
        consumed = s.recv.read_offset - before
        if consumed:
            self._on_consumed(s, consumed)
        if result is not None and not s.recv.message_ready(1):
            s.readable_signalled = False
        return result

    def _on_consumed(self, s: _Stream, consumed: int) -> None:
        rtt = self._recovery.rtt.smoothed_rtt
        if s.recv.should_update_window():
            s.recv.next_window(self._now_hint, rtt)
            s.want_max_stream_data = True
            self._schedule(s)
        self._recv_window.on_consumed(consumed)
        if self._recv_window.should_update():
            self._recv_window.update(self._now_hint, rtt)
            self._want_max_data = True
        self._check_recv_closed(s)

    _now_hint = 0.0

    # ----------------------------------------------------------------------------------------
    # streams
    def _get_stream(self, stream_id: int, local: bool) -> _Stream:
        s = self._streams.get(stream_id)
        if s is None:
            if not isinstance(stream_id, int) or isinstance(stream_id, bool):
                raise TypeError("stream id must be an int")
            if not 0 <= stream_id <= MAX_STREAM_ID:
                raise ValueError("stream id must be 0 <= id < 2**62")
            s = _Stream(stream_id, self.config, self._peer_stream_limit)
            self._streams[stream_id] = s
        return s

    def _send_stream(self, stream_id: int) -> _Stream:
        if self._state >= _CLOSING:
            raise RuntimeError("connection is closing")
        s = self._get_stream(stream_id, local=True)
        s.send_opened = True
        return s

    def _schedule(self, s: _Stream) -> None:
        if not s.queued:
            s.queued = True
            self._send_queue.append(s)

    def _check_recv_closed(self, s: _Stream) -> None:
        """Give the peer a new stream credit once its half of ``s`` is fully consumed."""
        if s.recv_opened and not s.closed_counted and (s.recv.is_finished or s.recv.reset_code is not None):
            s.closed_counted = True
            self._max_streams_local += 1
            self._want_max_streams = True

    # ----------------------------------------------------------------------------------------
    # timers
    def get_timer(self) -> Optional[float]:
        """The absolute time at which ``handle_timer`` must be called, or None."""
        if self._state == _TERMINATED:
            return None
        if self._state >= _CLOSING:
            return self._close_deadline
        deadlines = []
        t = self._recovery.get_loss_detection_timer()
        if t is not None:
            deadlines.append(t)
        for sp in self._spaces:
            if sp.ack_deadline is not None and not sp.discarded:
                deadlines.append(sp.ack_deadline)
        if self._pacing_deadline is not None:
            deadlines.append(self._pacing_deadline)
        if self._created is not None:
            if self._state == _HANDSHAKING:
                deadlines.append(self._created + self.config.handshake_timeout)
            idle = self._effective_idle_timeout()
            if idle:
                deadlines.append(self._last_activity + idle)
            ka = self.config.keep_alive
            if ka and self._state == _ESTABLISHED:
                deadlines.append(self._last_eliciting_sent + ka)
        if self._path_challenge is not None:
            deadlines.append(self._path_challenge[2])
        if self._old_keys_deadline is not None:
            deadlines.append(self._old_keys_deadline)
        return min(deadlines) if deadlines else None

    def _effective_idle_timeout(self) -> float:
        idle = self._idle_timeout
        if self._peer_params and self._peer_params.max_idle_timeout:
            peer = self._peer_params.max_idle_timeout / 1000.0
            idle = min(idle, peer) if idle else peer
        if idle:
            idle = max(idle, 3 * self._pto())
        return idle

    def _pto(self) -> float:
        rtt = self._recovery.rtt
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + self._peer_max_ack_delay

    def handle_timer(self, now: float) -> None:
        """Call when ``get_timer()``'s deadline has passed; then ``datagrams_to_send(now)``."""
        self._now_hint = now
        if self._state == _TERMINATED:
            return
        if self._state >= _CLOSING:
            if self._close_deadline is not None and now >= self._close_deadline:
                self._state = _TERMINATED
            return
        if self._created is None:
            return
        if self._state == _HANDSHAKING and now >= self._created + self.config.handshake_timeout:
            self._terminate_timeout("handshake timeout")
            return
        idle = self._effective_idle_timeout()
        if idle and now >= self._last_activity + idle:
            self._terminate_timeout("idle timeout")
            return
        if self._path_challenge is not None and now >= self._path_challenge[2]:
            self._path_validation_failed()
        if self._old_keys_deadline is not None and now >= self._old_keys_deadline:
            # RFC 9001 §6.5: keep the previous keys about 3 PTO after a key update, no longer
            self._old_keys_deadline = None
            self._open[SPACE_APPLICATION].discard_old_keys()
        t = self._recovery.get_loss_detection_timer()
        if t is not None and now >= t:
            lost, probe_space = self._recovery.on_loss_detection_timeout(now)
            if self._qlog is not None and lost:
                self._trace_recovery(now, lost[0].space, lost)
            for pkt in lost:
                self._on_packet_lost(pkt)
            if probe_space is not None and probe_space >= 0:
                self._probes[probe_space] = max(self._probes[probe_space], self._recovery.probes_needed)
                self._requeue_for_probe(probe_space)
        ka = self.config.keep_alive
        if ka and self._state == _ESTABLISHED and now >= self._last_eliciting_sent + ka:
            self._ping_pending = True

    def _emit_terminated(self, ev: ConnectionTerminated) -> None:
        self._events.append(ev)
        if self._qlog is not None:
            self._qlog.connection_closed(self._now_hint, ev.error_code, ev.reason, ev.by_peer)

    def attach_qlog(self, trace: Any, now: float) -> None:
        """Trace this connection to ``trace`` (a ``dquic.qlog.QlogTrace``) from now on."""
        self._qlog = trace
        trace.connection_started(now, None, self.peer_addr)

    def _terminate_timeout(self, reason: str) -> None:
        self._state = _TERMINATED
        self._emit_terminated(ConnectionTerminated(0, reason, by_peer=False, timeout=True))

    # ----------------------------------------------------------------------------------------
    # receiving
    def receive_datagram(self, data: bytes, addr: Tuple, now: float) -> None:
        """Process one UDP datagram from ``addr``. Malformed or unauthentic packets are dropped;
        a protocol violation by the authenticated peer closes the connection. Then call
        ``datagrams_to_send(now)``."""
        self._now_hint = now
        if self._state == _TERMINATED:
            return
        if self._created is None:
            self._created = now
            self._last_activity = now
        size = len(data)
        self.bytes_received += size
        if addr == self.peer_addr:
            self._bytes_received_on_path += size
        buf = codec.Buffer(data)
        view = memoryview(data)
        cid_len = self.config.connection_id_length
        while not buf.eof():
            start = buf.tell()
            try:
                hdr = codec.pull_header(buf, cid_len)
            except ProtocolError:
                self.packets_dropped += 1
                return
            end = hdr.payload_end
            buf.seek(end)
            ptype = hdr.packet_type
            if ptype == codec.PACKET_VERSION_NEGOTIATION:
                self._on_version_negotiation(hdr)
                return
            if ptype == codec.PACKET_RETRY:
                self._on_retry(hdr, bytes(view[start:end]))
                return
            if ptype == codec.PACKET_ZERO_RTT:
                self.packets_dropped += 1
                continue
            if hdr.dcid not in self._host_cids.values() and not (
                    not self.is_client and hdr.dcid in (self.original_dcid, self._retry_scid)):
                self.packets_dropped += 1
                continue
            self._receive_packet(hdr, view[start:end], hdr.pn_offset - start, addr, now)
            if self._state >= _DRAINING:
                return

    def _receive_packet(self, hdr: Any, packet: memoryview, pn_offset: int, addr: Tuple,
                        now: float) -> None:
        space_id = SPACE_HANDSHAKE if hdr.is_long else SPACE_APPLICATION
        space = self._spaces[space_id]
        opener = self._open[space_id]
        if space.discarded or opener is None:
            self.packets_dropped += 1
            return
        try:
            plain_header, payload, pn = opener.decrypt_packet(packet, pn_offset, space.largest_rx + 1)
        except DecryptionFailed:
            self.packets_dropped += 1  # forged, corrupted or for keys we no longer have: drop
            if not hdr.is_long and self.is_stateless_reset(packet):
                self.on_stateless_reset(now)
            return
        except ProtocolError as exc:
            self._protocol_error(exc)  # e.g. AEAD_LIMIT_REACHED (RFC 9001 §6.6)
            return
        if pn < space.rx_floor or pn in space.rx:
            self.duplicate_packets += 1
            return
        if hdr.is_long and (plain_header[0] & 0x0C):
            self._protocol_error(ProtocolError("reserved header bits set", ErrorCode.PROTOCOL_VIOLATION))
            return
        if not hdr.is_long and (plain_header[0] & 0x18):
            self._protocol_error(ProtocolError("reserved header bits set", ErrorCode.PROTOCOL_VIOLATION))
            return
        # the packet is authentic from here on
        self.packets_received += 1
        if (space_id == SPACE_APPLICATION and self._old_keys_deadline is None
                and getattr(opener.keys, "has_old_keys", False)):
            self._old_keys_deadline = now + 3 * self._pto()
        self._last_activity = now
        self._eliciting_since_receive = False
        if self.is_client and hdr.is_long and not self._peer_cid_set_by_server:
            # RFC 9000 §7.2: the client switches to the server's chosen connection ID
            self._peer_cid_set_by_server = True
            self.peer_cid = hdr.scid
            self._peer_cids[0] = (hdr.scid, None)
        if not self.is_client and not self._address_validated and (
                hdr.packet_type != codec.PACKET_INITIAL or hdr.dcid == self.host_cid):
            self._address_validated = True  # the client used a CID we chose: it got our packet
        if space_id == SPACE_APPLICATION and not self.is_client and not self._handshake_confirmed:
            self._confirm_handshake()
        if self._qlog is not None:
            try:
                decoded = codec.decode_frames(payload)
            except ProtocolError:
                decoded = []
            self._qlog.packet_received(now, hdr.packet_type, pn, len(packet), decoded)
        try:
            eliciting, non_probing = self._process_frames(space_id, payload, now, hdr.is_long)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if self._state >= _DRAINING:
            return
        # ACK bookkeeping (RFC 9000 §13.2)
        out_of_order = pn != space.largest_rx + 1
        space.rx.add(pn)
        if len(space.rx) >= self.config.max_ack_ranges:
            space.rx_floor = max(space.rx_floor, space.rx[0][0])
        if pn > space.largest_rx:
            space.largest_rx = pn
            space.largest_rx_time = now
        if eliciting:
            space.ack_pending = True
            space.unacked_eliciting += 1
            if (space_id == SPACE_HANDSHAKE or out_of_order
                    or space.unacked_eliciting >= self.config.ack_eliciting_threshold):
                space.ack_deadline = now
            elif space.ack_deadline is None:
                space.ack_deadline = now + self.config.max_ack_delay
        # migration (RFC 9000 §9.3): only the highest-numbered non-probing packet moves the path
        if (addr != self.peer_addr and space_id == SPACE_APPLICATION and non_probing
                and pn == space.largest_rx and self._state == _ESTABLISHED):
            self._on_peer_address_change(addr, now)

    def _process_frames(self, space_id: int, payload: Any, now: float, long_header: bool) -> Tuple[bool, bool]:
        buf = codec.Buffer(payload)
        eliciting = False
        non_probing = False
        if buf.eof():
            raise ProtocolError("packet without frames", ErrorCode.PROTOCOL_VIOLATION)
        while not buf.eof():
            frame = codec.pull_frame(buf)
            ftype = frame.wire_type
            if long_header and ftype not in _HANDSHAKE_FRAMES:
                raise ProtocolError(f"frame 0x{ftype:x} not allowed in a handshake packet",
                                    ErrorCode.PROTOCOL_VIOLATION, ftype)
            if ftype not in _NON_ELICITING:
                eliciting = True
            if ftype not in _PROBING:
                non_probing = True
            handler = _FRAME_HANDLERS.get(ftype)
            if handler is not None:
                handler(self, space_id, frame, now)
                if self._state >= _DRAINING:
                    break
        return eliciting, non_probing

    # --- frame handlers ---
    def _on_ack(self, space_id: int, frame: Any, now: float) -> None:
        delay = 0.0
        if space_id == SPACE_APPLICATION:
            delay = (frame.ack_delay << self._peer_ack_delay_exponent) / 1e6
        acked, lost = self._recovery.on_ack_received(space_id, frame.ranges, delay, now)
        if self._qlog is not None:
            self._trace_recovery(now, space_id, lost)
        space = self._spaces[space_id]
        for pkt in acked:
            if pkt.packet_number > space.largest_acked:
                space.largest_acked = pkt.packet_number
            self._on_packet_acked(pkt)
        for pkt in lost:
            self._on_packet_lost(pkt)

    def _trace_recovery(self, now: float, space_id: int, lost: List[SentPacket]) -> None:
        ptype = codec.PACKET_SHORT if space_id == SPACE_APPLICATION else codec.PACKET_HANDSHAKE
        for pkt in lost:
            self._qlog.packet_lost(now, ptype, pkt.packet_number)
        rtt = self._recovery.rtt
        self._qlog.metrics_updated(now, cwnd=self._cc.congestion_window,
                                   bytes_in_flight=self._cc.bytes_in_flight,
                                   smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt,
                                   latest_rtt=rtt.latest_rtt, rttvar=rtt.rttvar)

    def _on_crypto(self, space_id: int, frame: Any, now: float) -> None:
        space = self._spaces[space_id]
        try:
            space.crypto_recv.insert(frame.offset, frame.data, False)
        except ProtocolError as exc:
            if exc.error_code == ErrorCode.FLOW_CONTROL_ERROR:
                raise ProtocolError("crypto buffer exceeded", ErrorCode.CRYPTO_BUFFER_EXCEEDED) from None
            raise
        while space.crypto_recv.message_ready(MAX_CRYPTO_BUFFER):
            piece = space.crypto_recv.read_message(MAX_CRYPTO_BUFFER)
            if piece is None:
                break
            message, end = piece
            if not end:
                raise ProtocolError("handshake message too long", ErrorCode.CRYPTO_BUFFER_EXCEEDED)
            self._on_handshake_message(message, now)
            if self._state >= _CLOSING:
                return

    def _on_handshake_message(self, message: bytes, now: float) -> None:
        hs = self._handshake
        if hs.complete:
            return  # a retransmission of a message already processed
        try:
            reply = hs.receive(message)
        except AuthenticationError as exc:
            self._protocol_error(ProtocolError(str(exc), ErrorCode.AUTHENTICATION_FAILED), auth=True)
            return
        except ProtocolError as exc:
            raise ProtocolError(str(exc), ErrorCode.HANDSHAKE_FAILED) from None
        if reply is not None:
            self._spaces[SPACE_HANDSHAKE].crypto_send.write_message(reply)
        if hs.complete:
            self._on_handshake_complete(now)

    def _on_handshake_complete(self, now: float) -> None:
        hs = self._handshake
        params = TransportParameters.decode(hs.peer_transport_params or b"")
        # RFC 9000 §7.3: authenticate the connection IDs used during the handshake
        if params.initial_source_connection_id != self.peer_cid:
            raise ProtocolError("initial_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.original_destination_connection_id != self.original_dcid:
            raise ProtocolError("original_destination_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.retry_source_connection_id != self._retry_scid:
            raise ProtocolError("retry_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        self._peer_params = params
        self._peer_cids[0] = (self.peer_cid, params.stateless_reset_token)
        self._peer_max_data = params.initial_max_data
        self._peer_stream_limit = params.initial_max_stream_data
        self._peer_stream_credit = params.initial_max_streams
        self._peer_max_ack_delay = params.max_ack_delay / 1000.0
        self._recovery.max_ack_delay = self._peer_max_ack_delay
        self._peer_ack_delay_exponent = params.ack_delay_exponent
        self._peer_max_datagram_frame = params.max_datagram_frame_size
        for s in self._streams.values():
            s.send_limit = max(s.send_limit, self._peer_stream_limit)
        seal, open_ = hs.protections(key_update_interval=self.config.key_update_interval)
        self._seal[SPACE_APPLICATION] = seal
        self._open[SPACE_APPLICATION] = open_
        self.peer_key = hs.peer_static
        self._state = _ESTABLISHED
        # issue spare connection IDs for migration (RFC 9000 §5.1.1)
        limit = min(params.active_connection_id_limit, 8)
        while len(self._host_cids) < limit:
            self._issue_cid()
        self._events.append(HandshakeCompleted(hs.peer_static))
        for s in list(self._streams.values()):
            if s.send.has_pending() or s.reset_to_send is not None or s.stop_to_send is not None:
                self._schedule(s)

    def _confirm_handshake(self) -> None:
        """RFC 9001 §4.1.2: the server confirms on its first 1-RTT packet from the client; the
        client on HANDSHAKE_DONE. The handshake space is then discarded."""
        if self._handshake_confirmed or self._state < _ESTABLISHED:
            return
        self._handshake_confirmed = True
        self._recovery.handshake_confirmed = True
        if not self.is_client:
            self._handshake_done_pending = True
        self._discard_space(SPACE_HANDSHAKE)

    def _discard_space(self, space_id: int) -> None:
        space = self._spaces[space_id]
        if space.discarded:
            return
        space.discarded = True
        space.ack_deadline = None
        space.ack_pending = False
        self._recovery.discard_space(space_id)
        self._probes[space_id] = 0

    def _on_handshake_done(self, space_id: int, frame: Any, now: float) -> None:
        if not self.is_client:
            raise ProtocolError("HANDSHAKE_DONE from a client", ErrorCode.PROTOCOL_VIOLATION)
        self._confirm_handshake()

    def _peer_stream(self, stream_id: int) -> _Stream:
        """The stream a peer frame refers to, opening the peer's half if new (MAX_STREAMS)."""
        s = self._streams.get(stream_id)
        if s is None:
            s = self._get_stream(stream_id, local=False)
        if not s.recv_opened:
            if self._peer_opened >= self._max_streams_local:
                raise ProtocolError(f"stream {stream_id} exceeds the stream limit",
                                    ErrorCode.STREAM_LIMIT_ERROR)
            s.recv_opened = True
            self._peer_opened += 1
        return s

    def _on_stream(self, space_id: int, frame: Any, now: float) -> None:
        s = self._streams.get(frame.stream_id)
        if s is not None and s.closed_counted:
            return  # late data for a stream we already closed and released
        s = self._peer_stream(frame.stream_id)
        if s.stop_to_send is not None or s.recv.reset_code is not None:
            return
        before = s.recv.highest_offset
        new = s.recv.insert(frame.offset, frame.data, frame.fin)
        if new:
            self._data_received += new
            if self._data_received > self._recv_window.limit:
                raise ProtocolError("connection flow control limit exceeded",
                                    ErrorCode.FLOW_CONTROL_ERROR, frame.frame_type)
        del before
        self.stream_bytes_received += len(frame.data)
        if not s.readable_signalled and s.recv.message_ready(1):
            s.readable_signalled = True
            self._events.append(MessageReceived(s.stream_id))
        self._check_recv_closed(s)

    def _on_reset_stream(self, space_id: int, frame: Any, now: float) -> None:
        s = self._streams.get(frame.stream_id)
        if s is not None and s.closed_counted:
            return
        s = self._peer_stream(frame.stream_id)
        if s.recv.reset_code is not None:
            return
        before = s.recv.highest_offset
        s.recv.reset(frame.error_code, frame.final_size)
        grown = max(0, frame.final_size - before)
        self._data_received += grown
        if self._data_received > self._recv_window.limit:
            raise ProtocolError("connection flow control limit exceeded", ErrorCode.FLOW_CONTROL_ERROR)
        # the bytes the peer will never send count as consumed for connection flow control
        unread = frame.final_size - s.recv.read_offset
        if unread > 0:
            self._recv_window.on_consumed(unread)
        self._events.append(StreamReset(frame.stream_id, frame.error_code))
        self._check_recv_closed(s)

    def _on_stop_sending(self, space_id: int, frame: Any, now: float) -> None:
        s = self._get_stream(frame.stream_id, local=False)
        self._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
        if s.send.reset_code is None and not s.send.is_finished:
            s.send.reset(frame.error_code)
            s.reset_to_send = frame.error_code
            self._schedule(s)

    def _on_max_data(self, space_id: int, frame: Any, now: float) -> None:
        if frame.maximum > self._peer_max_data:
            self._peer_max_data = frame.maximum
            self._requeue_blocked()

    def _on_max_stream_data(self, space_id: int, frame: Any, now: float) -> None:
        s = self._get_stream(frame.stream_id, local=False)
        if frame.maximum > s.send_limit:
            s.send_limit = frame.maximum
            if s.send.has_pending():
                self._schedule(s)

    def _on_max_streams(self, space_id: int, frame: Any, now: float) -> None:
        if frame.maximum > self._peer_stream_credit:
            self._peer_stream_credit = frame.maximum
            self._requeue_blocked()

    def _requeue_blocked(self) -> None:
        for s in self._streams.values():
            if s.send.has_pending():
                self._schedule(s)

    def _on_data_blocked(self, space_id: int, frame: Any, now: float) -> None:
        if self._recv_window.limit > frame.limit:
            self._want_max_data = True  # our update was lost: repeat it

    def _on_stream_data_blocked(self, space_id: int, frame: Any, now: float) -> None:
        s = self._streams.get(frame.stream_id)
        if s is not None and s.recv.max_offset > frame.limit and not s.recv.is_finished:
            s.want_max_stream_data = True
            self._schedule(s)

    def _on_ignore(self, space_id: int, frame: Any, now: float) -> None:
        """PADDING, PING and the BLOCKED frames need no action beyond acknowledgement."""

    def _on_new_connection_id(self, space_id: int, frame: Any, now: float) -> None:
        if not self.peer_cid:
            raise ProtocolError("NEW_CONNECTION_ID to a peer using zero-length IDs",
                                ErrorCode.PROTOCOL_VIOLATION)
        seq = frame.sequence
        known = self._peer_cids.get(seq)
        if known is not None:
            if known[0] != bytes(frame.connection_id):
                raise ProtocolError("NEW_CONNECTION_ID reuses a sequence number",
                                    ErrorCode.PROTOCOL_VIOLATION)
            return
        if seq >= self._peer_cid_seq_floor():
            self._peer_cids[seq] = (bytes(frame.connection_id), bytes(frame.stateless_reset_token))
        if frame.retire_prior_to > 0:
            for old in [q for q in self._peer_cids if q < frame.retire_prior_to]:
                cid, _ = self._peer_cids.pop(old)
                self._retire_to_send.append(old)
                if cid == self.peer_cid:
                    self._switch_peer_cid()
            self._retired_below = max(self._retired_below, frame.retire_prior_to)
        if len(self._peer_cids) > self.config.active_connection_id_limit:
            raise ProtocolError("too many connection IDs", ErrorCode.CONNECTION_ID_LIMIT_ERROR)

    def _peer_cid_seq_floor(self) -> int:
        return self._retired_below

    def _switch_peer_cid(self) -> bool:
        """Move to an unused peer connection ID (after retirement or on a new path)."""
        for seq in sorted(self._peer_cids):
            if seq > self._peer_cid_seq:
                old_seq = self._peer_cid_seq
                self._peer_cid_seq = seq
                self.peer_cid = self._peer_cids[seq][0]
                if old_seq in self._peer_cids:
                    del self._peer_cids[old_seq]
                    self._retire_to_send.append(old_seq)
                return True
        return False

    def _on_retire_connection_id(self, space_id: int, frame: Any, now: float) -> None:
        seq = frame.sequence
        if seq > self._host_cid_seq:
            raise ProtocolError("RETIRE_CONNECTION_ID for an unissued ID", ErrorCode.PROTOCOL_VIOLATION)
        cid = self._host_cids.get(seq)
        if cid is None:
            return
        if len(self._host_cids) == 1:
            return  # never retire the last one
        del self._host_cids[seq]
        self.cid_changes.append(("remove", cid))
        if cid == self.host_cid:
            self.host_cid = next(iter(self._host_cids.values()))
        self._issue_cid()

    def _issue_cid(self) -> None:
        self._host_cid_seq += 1
        cid = self._random(self.config.connection_id_length)
        self._host_cids[self._host_cid_seq] = cid
        self._cids_to_issue.append(self._host_cid_seq)
        self.cid_changes.append(("add", cid))

    def _on_path_challenge(self, space_id: int, frame: Any, now: float) -> None:
        if len(self._path_responses) < MAX_PENDING_PATH_RESPONSES:
            self._path_responses.append(bytes(frame.data))

    def _on_path_response(self, space_id: int, frame: Any, now: float) -> None:
        pc = self._path_challenge
        if pc is not None and bytes(frame.data) == pc[0]:
            self._path_challenge = None
            self._address_validated = True
            old = self._previous_addr
            self._previous_addr = None
            if old is not None and old != self.peer_addr:
                self._events.append(PathChanged(old, self.peer_addr))

    def _on_connection_close(self, space_id: int, frame: Any, now: float) -> None:
        reason = bytes(frame.reason).decode("utf-8", "replace")
        self._emit_terminated(ConnectionTerminated(frame.error_code, reason, by_peer=True,
                                                 application=frame.application))
        self._enter_closing(_DRAINING, now)

    def _on_datagram(self, space_id: int, frame: Any, now: float) -> None:
        limit = self.config.max_datagram_frame_size
        if not limit or len(frame.data) + 4 > limit:
            raise ProtocolError("DATAGRAM frame too large or not accepted",
                                ErrorCode.PROTOCOL_VIOLATION, frame.frame_type)
        self._events.append(DatagramReceived(bytes(frame.data)))

    def _on_retry(self, hdr: Any, packet: bytes) -> None:
        """Client: the server asks us to prove our address (RFC 9000 §17.2.5.2)."""
        if (not self.is_client or self._state != _HANDSHAKING or self._retry_scid is not None
                or self.packets_received or hdr.dcid != self.host_cid or not hdr.token):
            self.packets_dropped += 1
            return
        if retry_integrity_tag(self.original_dcid, packet[:-16]) != bytes(hdr.integrity_tag):
            self.packets_dropped += 1
            return
        self._retry_scid = bytes(hdr.scid)
        self._retry_token = bytes(hdr.token)
        self.peer_cid = self._retry_scid
        self._peer_cids[0] = (self.peer_cid, None)
        # the server kept nothing: send the first handshake message again, same offsets
        cs = self._spaces[SPACE_HANDSHAKE].crypto_send
        cs.on_lost(0, cs.offset_sent, False)

    def peer_reset_tokens(self) -> List[bytes]:
        """Stateless reset tokens the peer gave us (one per connection ID of the peer)."""
        return [tok for _, tok in self._peer_cids.values() if tok]

    def is_stateless_reset(self, datagram: Any) -> bool:
        """True if ``datagram`` ends with one of the peer's stateless reset tokens."""
        if len(datagram) < 21 or self._state >= _DRAINING:
            return False
        tail = bytes(datagram[-16:])
        return any(hmac.compare_digest(tail, tok) for tok in self.peer_reset_tokens())

    def on_stateless_reset(self, now: float) -> None:
        """The peer lost its state for this connection: stop at once (RFC 9000 §10.3)."""
        if self._state >= _DRAINING:
            return
        self._emit_terminated(ConnectionTerminated(0, "stateless reset", by_peer=True))
        self._enter_closing(_DRAINING, now)

    def _on_version_negotiation(self, hdr: Any) -> None:
        if not self.is_client or self._state != _HANDSHAKING or self.packets_received:
            return
        if codec.DQUIC_VERSION_1 in hdr.supported_versions:
            return  # RFC 9000 §6.2: ignore a VN that lists our version
        self._state = _TERMINATED
        self._emit_terminated(ConnectionTerminated(ErrorCode.CONNECTION_REFUSED,
                                                 "no common protocol version", by_peer=True))

    # --- acknowledgement and loss of what we sent ---
    def _on_packet_acked(self, pkt: SentPacket) -> None:
        for item in pkt.frames:
            kind = item[0]
            if kind == "s":
                s = self._streams.get(item[1])
                if s is not None:
                    s.send.on_acked(item[2], item[3], item[4])
            elif kind == "c":
                self._spaces[item[1]].crypto_send.on_acked(item[2], item[3], False)
            elif kind == "a":
                # RFC 9000 §13.2.4: the peer has our ACK; stop acknowledging below its smallest
                sp = self._spaces[item[1]]
                if item[2] > sp.rx_floor:
                    sp.rx.subtract(0, item[2])
                    sp.rx_floor = item[2]
            elif kind == "g" and not pkt.declared_lost:
                # a datagram declared lost was already reported as such; one verdict per datagram
                self._events.append(DatagramAcknowledged(item[1]))

    def _on_packet_lost(self, pkt: SentPacket) -> None:
        for item in pkt.frames:
            kind = item[0]
            if kind == "s":
                s = self._streams.get(item[1])
                if s is not None and s.send.reset_code is None:
                    s.send.on_lost(item[2], item[3], item[4])
                    self._schedule(s)
            elif kind == "c":
                sp = self._spaces[item[1]]
                if not sp.discarded:
                    sp.crypto_send.on_lost(item[2], item[3], False)
            elif kind == "md":
                self._want_max_data = True
            elif kind == "msd":
                s = self._streams.get(item[1])
                if s is not None and not s.recv.is_finished:
                    s.want_max_stream_data = True
                    self._schedule(s)
            elif kind == "ms":
                self._want_max_streams = True
            elif kind == "rs":
                s = self._streams.get(item[1])
                if s is not None:
                    s.reset_to_send = item[2]
                    self._schedule(s)
            elif kind == "ss":
                s = self._streams.get(item[1])
                if s is not None and s.recv.reset_code is None:
                    s.stop_to_send = item[2]
                    self._schedule(s)
            elif kind == "nc":
                if item[1] in self._host_cids:
                    self._cids_to_issue.append(item[1])
            elif kind == "rc":
                self._retire_to_send.append(item[1])
            elif kind == "hd":
                self._handshake_done_pending = True
            elif kind == "g":
                self._events.append(DatagramLost(item[1]))

    def _requeue_for_probe(self, space_id: int) -> None:
        """PTO (RFC 9002 §6.2.4): make the probe carry data still unacknowledged if there is any."""
        if space_id == SPACE_HANDSHAKE:
            cs = self._spaces[SPACE_HANDSHAKE].crypto_send
            if cs.offset_sent:
                cs.on_lost(0, cs.offset_sent, False)  # re-send whatever is not acknowledged

    # ----------------------------------------------------------------------------------------
    # closing
    def _protocol_error(self, exc: ProtocolError, auth: bool = False) -> None:
        if self._state >= _CLOSING:
            return
        code = exc.error_code
        self._close_frame = (code, exc.frame_type or 0, str(exc).encode()[:256], False)
        self._enter_closing(_CLOSING, None)
        self._emit_terminated(ConnectionTerminated(code, str(exc), by_peer=False))

    def _enter_closing(self, state: int, now: Optional[float]) -> None:
        self._state = state
        self._close_deadline = None if now is None else now + 3 * self._pto()
        self._send_queue.clear()
        self._pacing_deadline = None
        for sp in self._spaces:
            sp.ack_deadline = None

    # ----------------------------------------------------------------------------------------
    # path management
    def _on_peer_address_change(self, addr: Tuple, now: float) -> None:
        old = self.peer_addr
        self._previous_addr = old if self._previous_addr is None else self._previous_addr
        self.peer_addr = addr
        self._bytes_received_on_path = 0
        self._bytes_sent_on_path = 0
        if old[0] != addr[0]:
            # a new network path: congestion state does not carry over (RFC 9000 §9.4)
            self._reset_congestion()
        self._address_validated = False
        challenge = self._random(8)
        self._path_challenge = (challenge, addr, now + max(3 * self._pto(), 0.1))
        self._switch_peer_cid()

    def _path_validation_failed(self) -> None:
        # RFC 9000 §9.3.2: go back to the last validated path
        self._path_challenge = None
        if self._previous_addr is not None:
            self.peer_addr = self._previous_addr
            self._previous_addr = None
        self._address_validated = True

    def _reset_congestion(self) -> None:
        cc = self.config.congestion_control
        new = cc(max_datagram_size=self.config.max_datagram_size) if callable(cc) else create_controller(
            cc, max_datagram_size=self.config.max_datagram_size)
        self._cc = new
        self._recovery.set_congestion_controller(new, reset_rtt=True)

    def change_address(self) -> None:
        """Client: after our local address changed, move to a fresh connection ID so the new
        path is not linkable to the old one (the peer validates the new path)."""
        self._switch_peer_cid()

    # ----------------------------------------------------------------------------------------
    # sending
    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple]]:
        """Build what should be sent now: a list of ``(datagram, address)``.

        Call after every input (datagram, timer, command). Then re-read ``get_timer()``.
        """
        self._now_hint = now
        out: List[Tuple[bytes, Tuple]] = []
        if self._state == _TERMINATED or self._created is None:
            return out
        if self._state >= _CLOSING:
            self._send_close(now, out)
            return out
        self._pacing_deadline = None
        mds = self.config.max_datagram_size
        # handshake space first: it is small and unblocks everything else
        hs = self._spaces[SPACE_HANDSHAKE]
        if not hs.discarded:
            for _ in range(8):
                d = self._build_handshake_datagram(now, mds)
                if d is None:
                    break
                out.append((d, self.peer_addr))
        if self._seal[SPACE_APPLICATION] is not None:
            for _ in range(256):
                d = self._build_app_packet(now, mds)
                if d is None:
                    break
                out.append((d, self.peer_addr))
            if not self._send_queue and not self._datagrams and self._cc.can_send(mds):
                # the application, not the network, limits the rate (delivery-rate estimation)
                self._recovery.on_app_limited()
        if out:
            n = sum(len(d) for d, _ in out)
            self.bytes_sent += n
            self._bytes_sent_on_path += n
        return out

    def _amplification_room(self) -> int:
        if self._address_validated:
            return 1 << 62
        return 3 * self._bytes_received_on_path - self._bytes_sent_on_path

    def _send_close(self, now: float, out: List) -> None:
        if self._state != _CLOSING or self._close_frame is None:
            return
        if self._close_sent_at >= 0 and now - self._close_sent_at < self._pto():
            return
        if self._close_deadline is None:
            self._close_deadline = now + 3 * self._pto()
        self._close_sent_at = now
        code, ftype, reason, app = self._close_frame
        space_id = SPACE_APPLICATION if self._seal[SPACE_APPLICATION] is not None else SPACE_HANDSHAKE
        if space_id == SPACE_HANDSHAKE and app:
            app = False
            code = ErrorCode.APPLICATION_ERROR
        frame = codec.ConnectionCloseFrame(code, None if app else ftype, reason, app)
        buf, hdr_end, length_off, pn, pn_len = self._start_packet(space_id, self.config.max_datagram_size)
        codec.push_frame(buf, frame)
        if space_id == SPACE_HANDSHAKE and self.is_client:
            self._pad_to(buf, hdr_end, pn_len, 1200)
        data = self._finish_packet(space_id, buf, hdr_end, length_off, pn, pn_len)
        if len(data) <= self._amplification_room():
            out.append((data, self.peer_addr))

    def _start_packet(self, space_id: int, limit: int):
        space = self._spaces[space_id]
        pn = space.next_pn
        space.next_pn += 1
        trunc, pn_len = codec.encode_packet_number(pn, space.largest_acked)
        buf = codec.Buffer(capacity=limit)
        if space_id == SPACE_HANDSHAKE:
            # the client's packets are INITIAL until the server's first packet arrives
            ptype = (codec.PACKET_INITIAL if self.is_client and not self._peer_cid_set_by_server
                     else codec.PACKET_HANDSHAKE)
            length_off = codec.push_long_header(buf, ptype, codec.DQUIC_VERSION_1, self.peer_cid,
                                                self.host_cid,
                                                self._retry_token if ptype == codec.PACKET_INITIAL else b"",
                                                trunc, pn_len)
        else:
            codec.push_short_header(buf, self.peer_cid, trunc, pn_len)
            length_off = -1
        return buf, buf.tell(), length_off, pn, pn_len

    def _pad_to(self, buf: Any, hdr_end: int, pn_len: int, total: int) -> None:
        tag = self._seal_tag(SPACE_HANDSHAKE)
        room = total - tag - buf.tell()
        if room > 0:
            buf.push_bytes(b"\x00" * room)

    def _seal_tag(self, space_id: int) -> int:
        return self._seal[space_id].tag_size

    def _finish_packet(self, space_id: int, buf: Any, hdr_end: int, length_off: int, pn: int,
                       pn_len: int) -> bytes:
        # header protection samples 16 bytes starting 4 after the packet number (RFC 9001 §5.4.2)
        payload_len = buf.tell() - hdr_end
        if payload_len + pn_len < 4:
            buf.push_bytes(b"\x00" * (4 - payload_len - pn_len))
        sealer = self._seal[space_id]
        if length_off >= 0:
            codec.patch_length(buf, length_off, pn_len + buf.tell() - hdr_end + sealer.tag_size)
        header = buf.data_slice(0, hdr_end)
        payload = buf.data_slice(hdr_end, buf.tell())
        return sealer.encrypt_packet(header, payload, pn)

    def _ack_frame(self, space: _Space, now: float) -> Any:
        ranges = list(space.rx)
        if len(ranges) > self.config.ack_ranges_per_frame:
            ranges = ranges[-self.config.ack_ranges_per_frame:]
        delay = max(0.0, now - space.largest_rx_time)
        encoded = int(delay * 1e6) >> self.config.ack_delay_exponent
        return codec.AckFrame(ranges, encoded)

    def _record_sent(self, space_id: int, pn: int, size: int, eliciting: bool, frames: list,
                     now: float) -> None:
        in_flight = eliciting or any(f[0] == "p" for f in frames)
        pkt = SentPacket(pn, space_id, now, size, eliciting, in_flight, frames)
        self._recovery.on_packet_sent(pkt)
        if self._qlog is not None:
            ptype = codec.PACKET_SHORT if space_id == SPACE_APPLICATION else (
                codec.PACKET_INITIAL if self.is_client and not self._peer_cid_set_by_server
                else codec.PACKET_HANDSHAKE)
            self._qlog.packet_sent(now, ptype, pn, size, frames)
        if eliciting:
            self._last_eliciting_sent = now
            if not self._eliciting_since_receive:
                # RFC 9000 §10.1: the first ack-eliciting packet after a receipt restarts idle
                self._eliciting_since_receive = True
                self._last_activity = now
            if self._pacer is not None:
                self._pacer.on_sent(size, now)

    def _build_handshake_datagram(self, now: float, mds: int) -> Optional[bytes]:
        space = self._spaces[SPACE_HANDSHAKE]
        crypto = space.crypto_send
        ack_due = space.ack_pending and space.ack_deadline is not None and space.ack_deadline <= now
        probe = self._probes[SPACE_HANDSHAKE] > 0
        has_crypto = crypto.has_pending()
        if not (ack_due or has_crypto or probe):
            return None
        room = self._amplification_room()
        if room <= 64:
            return None  # anti-amplification: wait for more bytes from the unvalidated client
        limit = min(mds, room)
        buf, hdr_end, length_off, pn, pn_len = self._start_packet(SPACE_HANDSHAKE, limit)
        tag = self._seal_tag(SPACE_HANDSHAKE)
        frames: list = []
        eliciting = False
        if space.ack_pending:
            ack = self._ack_frame(space, now)
            codec.push_frame(buf, ack)
            frames.append(("a", SPACE_HANDSHAKE, space.rx[0][0] if len(space.rx) else 0))
            space.ack_pending = False
            space.unacked_eliciting = 0
            space.ack_deadline = None
        while crypto.has_pending():
            avail = limit - tag - buf.tell() - 1 - 8 - 2
            if avail < 16:
                break
            chunk = crypto.next_chunk(avail, 1 << 62)
            if chunk is None:
                break
            off, data, _fin = chunk
            codec.push_frame(buf, codec.CryptoFrame(off, data))
            frames.append(("c", SPACE_HANDSHAKE, off, len(data)))
            eliciting = True
        if self._probes[SPACE_HANDSHAKE] > 0:
            self._probes[SPACE_HANDSHAKE] -= 1
            if not eliciting:
                codec.push_frame(buf, codec.PingFrame())
                eliciting = True
        if self.is_client and eliciting:
            self._pad_to(buf, hdr_end, pn_len, 1200)  # anti-amplification (RFC 9000 §14.1)
        data = self._finish_packet(SPACE_HANDSHAKE, buf, hdr_end, length_off, pn, pn_len)
        self._record_sent(SPACE_HANDSHAKE, pn, len(data), eliciting, frames, now)
        return data

    def _build_app_packet(self, now: float, mds: int) -> Optional[bytes]:
        space = self._spaces[SPACE_APPLICATION]
        ack_due = space.ack_pending and space.ack_deadline is not None and space.ack_deadline <= now
        probe = self._probes[SPACE_APPLICATION] > 0
        control = self._has_control_frames()
        have_data = bool(self._send_queue) or bool(self._datagrams)
        if not (ack_due or probe or control or have_data or self._ping_pending):
            return None
        limit = mds
        room = self._amplification_room()
        if room < limit:
            if room < 64:
                return None
            limit = room
        # congestion control and pacing gate ack-eliciting packets (probes bypass: RFC 9002 §7.5)
        cc_ok = probe or self._cc.can_send(limit)
        if cc_ok and not probe and self._pacer is not None:
            self._pacer.update(self._cc.congestion_window, self._recovery.rtt.smoothed_rtt,
                               self._cc.in_slow_start(), self._cc.pacing_rate())
            t = self._pacer.next_send_time(now)
            if t > now:
                cc_ok = False
                if control or have_data:
                    self._pacing_deadline = t
        if not cc_ok and not ack_due:
            return None
        buf, hdr_end, _, pn, pn_len = self._start_packet(SPACE_APPLICATION, limit)
        tag = self._seal_tag(SPACE_APPLICATION)
        end = limit - tag
        frames: list = []
        eliciting = False
        if space.ack_pending:
            codec.push_frame(buf, self._ack_frame(space, now))
            frames.append(("a", SPACE_APPLICATION, space.rx[0][0] if len(space.rx) else 0))
            space.ack_pending = False
            space.unacked_eliciting = 0
            space.ack_deadline = None
        if cc_ok:
            eliciting = self._write_control_frames(buf, end, frames)
            if self._datagrams:
                eliciting |= self._write_datagrams(buf, end, frames)
            if self._send_queue:
                eliciting |= self._write_stream_frames(buf, end, frames)
            if probe:
                self._probes[SPACE_APPLICATION] -= 1
            if (probe or self._ping_pending) and not eliciting:
                codec.push_frame(buf, codec.PingFrame())
                eliciting = True
            self._ping_pending = False
        if buf.tell() == hdr_end:
            # nothing fitted: undo the packet number
            space.next_pn -= 1
            return None
        data = self._finish_packet(SPACE_APPLICATION, buf, hdr_end, -1, pn, pn_len)
        self._record_sent(SPACE_APPLICATION, pn, len(data), eliciting, frames, now)
        return data

    def _has_control_frames(self) -> bool:
        return bool(self._want_max_data or self._want_max_streams or self._handshake_done_pending
                    or self._cids_to_issue or self._retire_to_send or self._path_responses
                    or (self._path_challenge is not None and not self._path_challenge_sent))

    _path_challenge_sent = False

    def _write_control_frames(self, buf: Any, end: int, frames: list) -> bool:
        wrote = False

        def fits(frame: Any) -> bool:
            return buf.tell() + codec.frame_size(frame) <= end

        if self._handshake_done_pending:
            f = codec.HandshakeDoneFrame()
            if fits(f):
                codec.push_frame(buf, f)
                frames.append(("hd",))
                self._handshake_done_pending = False
                wrote = True
        if self._want_max_data:
            f = codec.MaxDataFrame(self._recv_window.limit)
            if fits(f):
                codec.push_frame(buf, f)
                frames.append(("md",))
                self._want_max_data = False
                wrote = True
        if self._want_max_streams:
            f = codec.MaxStreamsFrame(self._max_streams_local)
            if fits(f):
                codec.push_frame(buf, f)
                frames.append(("ms",))
                self._want_max_streams = False
                wrote = True
        while self._path_responses:
            f = codec.PathResponseFrame(self._path_responses[0])
            if not fits(f):
                break
            codec.push_frame(buf, f)
            self._path_responses.popleft()
            wrote = True
        if self._path_challenge is not None and not self._path_challenge_sent:
            f = codec.PathChallengeFrame(self._path_challenge[0])
            if fits(f):
                codec.push_frame(buf, f)
                self._path_challenge_sent = True
                wrote = True
        while self._cids_to_issue:
            seq = self._cids_to_issue[0]
            cid = self._host_cids.get(seq)
            if cid is None:
                self._cids_to_issue.pop(0)
                continue
            f = codec.NewConnectionIdFrame(seq, 0, cid, self._reset_token(cid))
            if not fits(f):
                break
            codec.push_frame(buf, f)
            frames.append(("nc", seq))
            self._cids_to_issue.pop(0)
            wrote = True
        while self._retire_to_send:
            f = codec.RetireConnectionIdFrame(self._retire_to_send[0])
            if not fits(f):
                break
            codec.push_frame(buf, f)
            frames.append(("rc", self._retire_to_send.pop(0)))
            wrote = True
        return wrote

    def _write_datagrams(self, buf: Any, end: int, frames: list) -> bool:
        wrote = False
        while self._datagrams:
            dg_id, data = self._datagrams[0]
            f = codec.DatagramFrame(data)
            if buf.tell() + codec.frame_size(f) > end:
                break
            codec.push_frame(buf, f)
            frames.append(("g", dg_id))
            self._datagrams.popleft()
            wrote = True
        return wrote

    def _write_stream_frames(self, buf: Any, end: int, frames: list) -> bool:
        """Fill the packet from the streams with something to send, round robin."""
        wrote = False
        queue = self._send_queue
        rounds = len(queue)
        while queue and rounds > 0 and end - buf.tell() > 24:
            rounds -= 1
            s = queue[0]
            sid = s.stream_id
            # control frames of this stream
            if s.reset_to_send is not None:
                f = codec.ResetStreamFrame(sid, s.reset_to_send, s.send.final_size)
                if buf.tell() + codec.frame_size(f) > end:
                    break
                codec.push_frame(buf, f)
                frames.append(("rs", sid, s.reset_to_send))
                s.reset_to_send = None
                wrote = True
            if s.stop_to_send is not None:
                f = codec.StopSendingFrame(sid, s.stop_to_send)
                if buf.tell() + codec.frame_size(f) > end:
                    break
                codec.push_frame(buf, f)
                frames.append(("ss", sid, s.stop_to_send))
                s.stop_to_send = None
                wrote = True
            if s.want_max_stream_data:
                f = codec.MaxStreamDataFrame(sid, s.recv.max_offset)
                if buf.tell() + codec.frame_size(f) > end:
                    break
                codec.push_frame(buf, f)
                frames.append(("msd", sid))
                s.want_max_stream_data = False
                wrote = True
            send = s.send
            if send.reset_code is None and send.has_pending():
                # stream credit (MAX_STREAMS): our first byte on a new id consumes one
                if send.offset_sent == 0 and not send.fin_sent and not s.counted:
                    if self._streams_counted >= self._peer_stream_credit:
                        if self._streams_blocked_reported != self._peer_stream_credit:
                            f = codec.StreamsBlockedFrame(self._peer_stream_credit)
                            if buf.tell() + codec.frame_size(f) <= end:
                                codec.push_frame(buf, f)
                                self._streams_blocked_reported = self._peer_stream_credit
                                wrote = True
                        queue.popleft()
                        s.queued = False
                        continue
                conn_credit = self._peer_max_data - self._data_sent
                flow_limit = min(s.send_limit, send.offset_sent + max(0, conn_credit))
                header = 1 + _varint_len(sid) + _varint_len(send.offset_sent) + 2
                avail = end - buf.tell() - header
                if avail > 0:
                    before = send.offset_sent
                    chunk = send.next_chunk(avail, flow_limit)
                    if chunk is not None:
                        off, data, fin = chunk
                        if not s.counted:
                            s.counted = True
                            self._streams_counted += 1
                        codec.push_stream_frame_header(buf, sid, off, len(data), fin)
                        buf.push_bytes(data)
                        frames.append(("s", sid, off, len(data), fin))
                        self._data_sent += send.offset_sent - before
                        wrote = True
                if send.has_pending() and end - buf.tell() <= header + 1:
                    break  # packet full: keep this stream first for the next packet
                if send.has_pending() and send.pending_retransmit_bytes == 0 and send.offset_sent >= flow_limit:
                    # flow-control blocked: tell the peer once per limit (RFC 9000 §4.1)
                    if send.offset_sent >= s.send_limit and s.blocked_reported != s.send_limit:
                        f = codec.StreamDataBlockedFrame(sid, s.send_limit)
                        if buf.tell() + codec.frame_size(f) <= end:
                            codec.push_frame(buf, f)
                            s.blocked_reported = s.send_limit
                            wrote = True
                    elif self._data_blocked_reported != self._peer_max_data and \
                            self._data_sent >= self._peer_max_data:
                        f = codec.DataBlockedFrame(self._peer_max_data)
                        if buf.tell() + codec.frame_size(f) <= end:
                            codec.push_frame(buf, f)
                            self._data_blocked_reported = self._peer_max_data
                            wrote = True
                    queue.popleft()
                    s.queued = False
                    continue
            queue.popleft()
            if send.has_pending() and send.reset_code is None:
                queue.append(s)  # round robin
            else:
                s.queued = False
        return wrote

    _streams_counted = 0


def _varint_len(v: int) -> int:
    return 1 if v < 0x40 else 2 if v < 0x4000 else 4 if v < 0x40000000 else 8


_FRAME_HANDLERS: Dict[int, Callable] = {
    codec.FRAME_PADDING: Connection._on_ignore,
    codec.FRAME_PING: Connection._on_ignore,
    codec.FRAME_ACK: Connection._on_ack,
    codec.FRAME_ACK_ECN: Connection._on_ack,
    codec.FRAME_RESET_STREAM: Connection._on_reset_stream,
    codec.FRAME_STOP_SENDING: Connection._on_stop_sending,
    codec.FRAME_CRYPTO: Connection._on_crypto,
    codec.FRAME_NEW_TOKEN: Connection._on_ignore,
    codec.FRAME_MAX_DATA: Connection._on_max_data,
    codec.FRAME_MAX_STREAM_DATA: Connection._on_max_stream_data,
    codec.FRAME_MAX_STREAMS: Connection._on_max_streams,
    codec.FRAME_DATA_BLOCKED: Connection._on_data_blocked,
    codec.FRAME_STREAM_DATA_BLOCKED: Connection._on_stream_data_blocked,
    codec.FRAME_STREAMS_BLOCKED: Connection._on_ignore,
    codec.FRAME_NEW_CONNECTION_ID: Connection._on_new_connection_id,
    codec.FRAME_RETIRE_CONNECTION_ID: Connection._on_retire_connection_id,
    codec.FRAME_PATH_CHALLENGE: Connection._on_path_challenge,
    codec.FRAME_PATH_RESPONSE: Connection._on_path_response,
    codec.FRAME_CONNECTION_CLOSE: Connection._on_connection_close,
    codec.FRAME_CONNECTION_CLOSE_APP: Connection._on_connection_close,
    codec.FRAME_HANDSHAKE_DONE: Connection._on_handshake_done,
    codec.FRAME_DATAGRAM: Connection._on_datagram,
    codec.FRAME_DATAGRAM_LEN: Connection._on_datagram,
}
for _t in range(0x08, 0x10):
    _FRAME_HANDLERS[_t] = Connection._on_stream
