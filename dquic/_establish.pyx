# cython: language_level=3
"""The root of the core connection's class chain: the state of a connection and its
establishment (compiled).

``ConnectionSetup`` declares, in ``_establish.pxd``, the state every class of the chain reads:
``ConnectionSetup`` (here) <- ``PacketReceiver`` (``_receive``: receiving) <- ``CoreConnection``
(``_connection``: the coordinator and the Python API, which also builds the state in its
``__init__``). What is here is the establishment of the connection:

* our transport parameters and the handshake's prologue (PROTOCOL.md), the handshake object
  (``dquic.handshake``'s Noise handshakes, or ``_PlainHandshake`` without encryption);
* the handshake messages carried in CRYPTO frames, the checks of the peer's transport
  parameters and the switch to the 1-RTT keys (``_set_app_protection``);
* the handshake's confirmation (RFC 9001 §4.1.2) and the discarding of the handshake space;
* Retry (client) and Version Negotiation.

A protocol error found here goes to ``_protocol_error``, an ending to ``_emit_terminated``: cdef
methods of closing, declared in ``_establish.pxd`` and overridden by ``CoreConnection`` (the top
of the chain); the versions here only raise ``NotImplementedError``.
"""
from dquic._protection cimport PacketProtection
from dquic._sender cimport trace_keys
from dquic._spaces cimport OWE_HANDSHAKE_DONE, OWE_RESET_STREAM, OWE_STOP_SENDING, SP_APP, SP_HS, _Space
from dquic._streams cimport RecvStream
from dquic._streamset cimport _Stream

from dquic import _codec as codec
from dquic._protection import NullProtection
from dquic._spaces import MAX_CRYPTO_BUFFER
from dquic.errors import AuthenticationError, ErrorCode, ProtocolError
from dquic.events import ConnectionTerminated, HandshakeCompleted
from dquic.tokens import retry_integrity_tag
from dquic.transport_params import TransportParameters

__all__ = ["ConnectionSetup"]


class _PlainHandshake:
    """Handshake used when encryption is disabled (tests, benchmarks of the bare transport).

    Same interface as ``dquic.handshake.ClientHandshake`` / ``ServerHandshake``: the client sends
    its transport parameters, the server answers with its own, and both sides use null packet
    protection. It authenticates nothing and must never be used on a real network.
    """

    def __init__(self, is_client, transport_params):
        self._is_client = is_client
        self._params = transport_params
        self.complete = False
        self.peer_static = None
        self.peer_transport_params = None

    def start(self):
        return b"\xff" + self._params

    def receive(self, message):
        if self.complete or not message or message[0] != 0xFF:
            raise ProtocolError("unexpected plain handshake message", ErrorCode.HANDSHAKE_FAILED)
        self.peer_transport_params = bytes(message[1:])
        self.complete = True
        return None if self._is_client else b"\xff" + self._params

    def protections(self, **_):
        return NullProtection(), NullProtection()


cdef class ConnectionSetup:
    """The state of a connection (see ``_establish.pxd``) and its establishment; the base of
    ``PacketReceiver`` and ``CoreConnection``, never used alone."""

    def _make_transport_params(self):
        c = self.config
        p = TransportParameters(
            max_idle_timeout=int(c.idle_timeout * 1000),
            max_udp_payload_size=65527,  # any size: no receive-side limit
            initial_max_data=c.initial_max_data,
            initial_max_stream_data=c.initial_max_stream_data,
            initial_max_streams=c.max_streams,
            ack_delay_exponent=c.ack_delay_exponent,
            max_ack_delay=int(round(c.max_ack_delay * 1000)),
            active_connection_id_limit=c.active_connection_id_limit,
            initial_source_connection_id=self._cids.host_cid,
            max_datagram_frame_size=c.max_datagram_frame_size,
        )
        if not self.is_client:
            p.original_destination_connection_id = self.original_dcid
            p.retry_source_connection_id = self._retry_scid
            p.stateless_reset_token = self._reset_token(self._cids.host_cid)
        return p

    def _prologue(self):
        odcid = self.original_dcid or b""
        client_cid = self._cids.host_cid if self.is_client else self._cids.peer_cid
        return (b"dquic/1" + codec.DQUIC_VERSION_1.to_bytes(4, "big") + bytes([len(odcid)]) + odcid
                + bytes([len(client_cid)]) + client_cid)

    def _make_secure_handshake(self):
        from dquic.handshake import ClientHandshake, ServerHandshake

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


    cdef int _set_app_protection(self, object seal, object open_) except -1:
        self._seal[SP_APP] = seal
        self._open[SP_APP] = open_
        self._app_seal = seal
        self._app_open = open_
        self._tx.app_seal = seal
        self._tx.app_seal_null = isinstance(seal, NullProtection)
        self._app_open_null = isinstance(open_, NullProtection)
        self._tx.app_tag = seal.tag_size
        return 0

    def _trace_keys(self, now, trigger):
        trace_keys(self._qlog, self._app_seal, now, trigger)

    def _on_crypto(self, space_id, frame, now):
        cdef _Space space = self._spaces[space_id]
        if space.crypto_recv is None:
            space.crypto_recv = RecvStream(0, MAX_CRYPTO_BUFFER)
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

    def _on_handshake_message(self, message, now):
        hs = self._handshake
        if hs is None or hs.complete:
            return  # a retransmission of a message already processed
        try:
            reply = hs.receive(message)
        except AuthenticationError as exc:
            self._protocol_error(ProtocolError(str(exc), ErrorCode.AUTHENTICATION_FAILED))
            return
        except ProtocolError as exc:
            raise ProtocolError(str(exc), ErrorCode.HANDSHAKE_FAILED) from None
        if reply is not None:
            self._hs.crypto_send.write_message(reply)
        if hs.complete:
            self._on_handshake_complete(now)

    def _on_handshake_complete(self, now):
        cdef _Stream s
        hs = self._handshake
        params = TransportParameters.decode(hs.peer_transport_params or b"")
        # RFC 9000 §7.3: authenticate the connection IDs used during the handshake
        if params.initial_source_connection_id != self._cids.peer_cid:
            raise ProtocolError("initial_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.original_destination_connection_id != self.original_dcid:
            raise ProtocolError("original_destination_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        if self.is_client and params.retry_source_connection_id != self._retry_scid:
            raise ProtocolError("retry_source_connection_id mismatch",
                                ErrorCode.TRANSPORT_PARAMETER_ERROR)
        self._peer_params = params
        self._peer_idle_timeout = params.max_idle_timeout / 1000.0
        self._cids.set_peer_reset_token(params.stateless_reset_token)
        self._sset.peer_max_data = params.initial_max_data
        self._sset.peer_stream_limit = params.initial_max_stream_data
        self._sset.peer_stream_credit = params.initial_max_streams
        self._sset.peer_streams_window = params.initial_max_streams
        self._peer_max_ack_delay = params.max_ack_delay / 1000.0
        self._recovery.max_ack_delay = self._peer_max_ack_delay
        self._peer_ack_delay_exponent = params.ack_delay_exponent
        self._peer_max_datagram_frame = params.max_datagram_frame_size
        self._tx.pmtu_limit(params.max_udp_payload_size)
        for s in self._sset.stream_list():
            s.send_limit = max(s.send_limit, self._sset.peer_stream_limit)
        seal, open_ = hs.protections(key_update_interval=self.config.key_update_interval)
        self._set_app_protection(seal, open_)
        self.peer_key = hs.peer_static
        self._state = _ESTABLISHED
        # issue spare connection IDs for migration (RFC 9000 §5.1.1)
        self._cids.issue_spares(min(params.active_connection_id_limit, 8))
        self._events.append(HandshakeCompleted(hs.peer_static))
        if self._qlog is not None:
            self._trace_keys(now, "tls")
        for s in self._sset.stream_list():
            if s.send.has_pending_c() or s.owed & (OWE_RESET_STREAM | OWE_STOP_SENDING):
                self._sset.schedule(s)

    cdef int _confirm_handshake(self) except -1:
        """RFC 9001 §4.1.2: the server confirms on its first 1-RTT packet from the client; the
        client on HANDSHAKE_DONE. The handshake space is then discarded."""
        if self._handshake_confirmed or self._state < _ESTABLISHED:
            return 0
        self._handshake_confirmed = True
        self._recovery.handshake_confirmed = True
        if not self.is_client:
            self._tx.pending.once |= OWE_HANDSHAKE_DONE
        self._discard_space(SP_HS)
        # the handshake's state (its Noise objects are gone already, the 1-RTT keys live on
        # in _seal/_open) and both sides' transport parameters (what is needed of the
        # peer's was copied) are not needed any more
        self._handshake = None
        self._local_params = None
        self._peer_params = None
        return 0

    def _discard_space(self, int space_id):
        cdef _Space space = self._spaces[space_id]
        if space.discarded:
            return
        space.discarded = True
        space.ack_deadline = -1.0
        space.ack_pending = False
        self._recovery.discard_space(space_id)
        self._tx.probes[space_id] = 0
        space.release()
        self._seal[space_id] = None
        self._open[space_id] = None

    def _on_handshake_done(self, space_id, frame, now):
        if not self.is_client:
            raise ProtocolError("HANDSHAKE_DONE from a client", ErrorCode.PROTOCOL_VIOLATION)
        self._confirm_handshake()

    cdef int _on_retry(self, object hdr, object packet) except -1:
        """Client: the server asks us to prove our address (RFC 9000 §17.2.5.2)."""
        if (not self.is_client or self._state != _HANDSHAKING or self._retry_scid is not None
                or self.packets_received or hdr.dcid != self._cids.host_cid or not hdr.token):
            self.packets_dropped += 1
            return 0
        if retry_integrity_tag(self.original_dcid, packet[:-16]) != bytes(hdr.integrity_tag):
            self.packets_dropped += 1
            return 0
        self._retry_scid = bytes(hdr.scid)
        self._tx.retry_token = bytes(hdr.token)
        self._cids.server_chose(self._retry_scid)
        # the server kept nothing: send the first handshake message again, same offsets
        cs = self._hs.crypto_send
        cs.on_lost(0, cs.offset_sent, False)
        return 0

    cdef int _on_version_negotiation(self, object hdr) except -1:
        if not self.is_client or self._state != _HANDSHAKING or self.packets_received:
            return 0
        if codec.DQUIC_VERSION_1 in hdr.supported_versions:
            return 0  # RFC 9000 §6.2: ignore a VN that lists our version
        self._state = _TERMINATED
        self._emit_terminated(ConnectionTerminated(ErrorCode.CONNECTION_REFUSED,
                                                   "no common protocol version", by_peer=True))
        return 0

    # closing: CoreConnection's (_connection.pyx), the top of the chain
    cdef int _protocol_error(self, object exc) except -1:
        raise NotImplementedError

    cdef int _enter_closing(self, int state, object now) except -1:
        raise NotImplementedError

    cdef int _emit_terminated(self, object ev) except -1:
        raise NotImplementedError
