# cython: language_level=3
"""The receive path of the core connection (compiled): ``PacketReceiver``, the class between
``ConnectionSetup`` (``_establish``: the state and the establishment) and ``CoreConnection``
(``_connection``) in the connection's class chain.

Theory of operation
-------------------
``receive_datagram`` (or ``receive_segments`` for a run of datagrams from UDP GRO) splits a
datagram into its packets and checks each one's destination connection ID. A packet is then
opened with the keys of its space (``_receive_short``: 1-RTT, parsed in place; ``_receive_long``:
handshake packets, parsed with the codec's objects) and ``_after_open`` does what every
authenticated packet needs: the duplicate check, the closing period's answers, the handshake's
confirmation, the frame loop, the ACK bookkeeping of its space (``_spaces.space_received``) and
migration (RFC 9000 §9.3: only the highest-numbered non-probing packet moves the path).

``_process_frames`` acts on a payload's frames: STREAM frames go from the packet straight into
their stream's reassembly (after the packet's other frames, see PROTOCOL.md §16.7), ACK frames
are decoded without frame objects and go to the sender; every other frame is a ``dquic._frames``
object handed to its handler by ``FRAME_HANDLERS``, most of which hand it on to the object that
owns the concept (the stream table, the connection IDs, the paths).

What the receive path asks of the class at the top of the chain (``CoreConnection``), as cdef
methods declared in the chain's ``.pxd`` files and overridden there (vtable calls, like every
cdef call): closing (``_protocol_error``, ``_enter_closing``, ``_emit_terminated``, declared in
``_establish.pxd``) and migration (``_on_peer_address_change``, declared in ``_receive.pxd``).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport ldexp
from libc.stdint cimport int64_t, uint8_t, uint64_t

from dquic._cids cimport cid_is_current
from dquic._codec cimport Buffer
from dquic._establish cimport (_CLOSING, _DRAINING, _ESTABLISHED, _TERMINATED, ConnectionSetup,
                               flush_noted, note_work)
from dquic._frames cimport parse_ack_ranges, parse_ecn, pull_stream_frame_header
from dquic._paths cimport PathState
from dquic._protection cimport PacketProtection
from dquic._recovery cimport RttEstimator
from dquic._spaces cimport F_ACK, SP_APP, SP_HS, _Space, space_can_record, space_received
from dquic._wire cimport pn_decode as _decode_pn

import hmac

from dquic import _codec as codec
from dquic import _frames as frames
from dquic._protection import DecryptionFailed
from dquic._streamset import _DropPacket
from dquic.errors import ErrorCode, ProtocolError
from dquic.events import ConnectionTerminated, DatagramReceived, PathChanged

__all__ = ["PacketReceiver"]

cdef enum:
    # frame types used on the fast paths (RFC 9000 §19)
    F_PADDING = 0x00
    F_PING = 0x01
    F_ACK_ECN = 0x03
    F_RESET_STREAM = 0x04
    F_CRYPTO = 0x06
    F_NEW_CONNECTION_ID = 0x18
    F_PATH_CHALLENGE = 0x1A
    F_PATH_RESPONSE = 0x1B
    F_CONNECTION_CLOSE = 0x1C
    F_CONNECTION_CLOSE_APP = 0x1D
    # the codec's default limit on ranges in a received ACK frame
    ACK_RANGES_LIMIT = 256


cdef int64_t PN_MAX = ((<int64_t>1) << 62) - 1

cdef object _PROTOCOL_VIOLATION = ErrorCode.PROTOCOL_VIOLATION

cdef struct _DeferredStream:
    # a STREAM frame the first pass of _process_frames parsed, applied after the other frames
    Py_ssize_t at                     # its offset in the payload
    Py_ssize_t data                   # where its data starts
    uint64_t sid
    uint64_t off
    uint64_t length
    bint fin
    int ftype                         # as _stream_frame_at reports it

# STREAM frame headers are parsed with this Buffer pointed at the packet for the length of one
# C call (no Python code runs in between): one serves every connection
# Plaintext buffers for 1-RTT packets (the openssl backend decrypts into one: no bytes object
# per packet), lent under the GIL for one packet each, so any number of threads may be
# receiving at once; a frame that needs a Python object of the payload gets a copy
# (_process_frames)
cdef enum:
    PLAIN_SCRATCH_SIZE = 65536       # the largest UDP payload, so the largest packet
    PLAIN_SCRATCH_MAX = 16
cdef unsigned char* _plain_free[16]
cdef int _plain_n = 0


cdef unsigned char* take_plain() except NULL:
    global _plain_n
    cdef unsigned char* b
    if _plain_n:
        _plain_n -= 1
        return _plain_free[_plain_n]
    b = <unsigned char*>PyMem_Malloc(PLAIN_SCRATCH_SIZE)
    if b == NULL:
        raise MemoryError()
    return b


cdef void give_plain(unsigned char* b) noexcept:
    global _plain_n
    if _plain_n < PLAIN_SCRATCH_MAX:
        _plain_free[_plain_n] = b
        _plain_n += 1
    else:
        PyMem_Free(b)


cdef Buffer _RECV_SCRATCH = Buffer(capacity=0)
_RECV_SCRATCH._writable = False
RECV_SCRATCH = _RECV_SCRATCH  # CoreConnection._rbuf


cdef class PacketReceiver(ConnectionSetup):
    """The receive path of a connection (see the module docstring); the base of
    ``CoreConnection``, never used alone."""

    def receive_datagram(self, data, addr, double now):
        """Process one UDP datagram from ``addr``. Malformed or unauthentic packets are dropped;
        a protocol violation by the authenticated peer closes the connection. Then call
        ``datagrams_to_send(now)``."""
        cdef Py_buffer view
        cdef bint have_view = False
        cdef const uint8_t* p
        cdef Py_ssize_t size, pos, start, end
        cdef uint8_t first
        cdef bint on_path
        cdef PathState paths = self._paths
        self._now_hint = now
        self._sset.now = now
        if self._state == _TERMINATED:
            return
        if not self._started:
            self._started = True
            self._created = now
            self._last_activity = now
        if PyBytes_CheckExact(data):
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            size = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            have_view = True
            p = <const uint8_t*>view.buf
            size = view.len
        on_path = addr is paths.peer_addr or addr == paths.peer_addr
        try:
            self.bytes_received += size
            if on_path:
                paths.bytes_received += size
            pos = 0
            while pos < size:
                start = pos
                first = p[pos]
                if first & 0x80:
                    # long header (handshake space): rare, parsed with the codec's objects
                    buf = Buffer(data)
                    buf._pos = start
                    try:
                        hdr = codec.pull_header(buf, self._cid_len)
                    except ProtocolError:
                        self.packets_dropped += 1
                        return
                    end = hdr.payload_end
                    pos = end
                    ptype = hdr.packet_type
                    if ptype == codec.PACKET_VERSION_NEGOTIATION:
                        self._on_version_negotiation(hdr)
                        return
                    if ptype == codec.PACKET_RETRY:
                        self._on_retry(hdr, bytes(memoryview(data)[start:end]))
                        return
                    if ptype == codec.PACKET_ZERO_RTT:
                        self.packets_dropped += 1
                        continue
                    if not self._cids.knows(hdr.dcid) and not (
                            not self.is_client and hdr.dcid in (self.original_dcid, self._retry_scid)):
                        self.packets_dropped += 1
                        continue
                    self._receive_long(hdr, data, start, end, addr, now)
                else:
                    # short header (RFC 9000 §17.3.1): runs to the end of the datagram
                    if not (first & 0x40) or size - start - 1 < self._cid_len:
                        self.packets_dropped += 1
                        return
                    pos = size
                    if not self._short_dcid_ok(p + start + 1):
                        self.packets_dropped += 1
                        continue
                    self._receive_short(data, p, start, size, addr, now)
                if self._state >= _DRAINING:
                    return
        finally:
            if not on_path and (addr is paths.peer_addr or addr == paths.peer_addr):
                # this datagram moved the peer here: it counts toward the new path's
                # anti-amplification budget (else the PATH_CHALLENGE waits for another one)
                paths.bytes_received += size
            if have_view:
                PyBuffer_Release(&view)
            flush_noted(self)

    def receive_segments(self, data, Py_ssize_t segment_size, addr, double now):
        """Process datagrams of ``segment_size`` bytes packed back to back in ``data`` (the
        last may be shorter), as UDP generic receive offload hands them over: the same as
        ``receive_datagram`` on each piece, without a Python call per datagram.

        Stops at the first piece that is not a short-header packet addressed to one of this
        connection's IDs and returns its offset (``len(data)`` when all were processed); the
        caller routes the rest one datagram at a time. Then call ``datagrams_to_send(now)``.
        """
        cdef Py_buffer view
        cdef const uint8_t* p
        cdef Py_ssize_t size, off, end
        cdef PathState paths = self._paths
        if segment_size <= 0:
            raise ValueError("segment_size must be > 0")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const uint8_t*>view.buf
            size = view.len
            off = 0
            self._now_hint = now
            self._sset.now = now
            if self._state == _TERMINATED or not self._started:
                return 0
            path = addr is paths.peer_addr or addr == paths.peer_addr
            while off < size:
                end = off + segment_size
                if end > size:
                    end = size
                if (p[off] & 0xC0) != 0x40 or end - off - 1 < self._cid_len \
                        or not self._short_dcid_ok(p + off + 1):
                    return off
                self.bytes_received += end - off
                if path:
                    paths.bytes_received += end - off
                self._receive_short(data, p, off, end, addr, now)
                if not path and (addr is paths.peer_addr or addr == paths.peer_addr):
                    path = True  # this datagram moved the peer here (see receive_datagram)
                    paths.bytes_received += end - off
                off = end
                if self._state >= _DRAINING:
                    return size
            return size
        finally:
            PyBuffer_Release(&view)
            flush_noted(self)

    cdef bint _awaits_validation(self):
        """Server whose client address is not validated and no path validation runs: an
        authenticated packet addressed to a connection ID we chose would validate it. (After a
        migration only PATH_RESPONSE validates the new address: the client's packets reach us
        with our connection IDs whatever source address an on-path attacker writes on them.)"""
        return self._paths.awaits_validation(self.is_client)

    cdef bint _dcid_chosen_by_us(self, const uint8_t* dcid):
        """``dcid`` is one of the connection IDs we issued (not the client-chosen original
        destination ID): only a peer that received our packets can know it."""
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return self._cids.knows(cid)

    cdef bint _short_dcid_ok(self, const uint8_t* dcid):
        if cid_is_current(self._cids, dcid):
            return True
        cid = PyBytes_FromStringAndSize(<const char*>dcid, self._cid_len)
        return self._cids.knows(cid) or (
            not self.is_client and cid in (self.original_dcid, self._retry_scid))

    cdef int _receive_short(self, object data, const uint8_t* p, Py_ssize_t start,
                            Py_ssize_t end, object addr, double now) except -1:
        cdef _Space space = self._app
        cdef Py_ssize_t rel = 1 + self._cid_len, plen = end - start, hlen
        cdef int pn_len, i
        cdef int64_t truncated, pn
        cdef uint8_t first
        cdef bint to_our_cid = False
        cdef unsigned char* plain
        opener = self._app_open
        if space.discarded or opener is None:
            self.packets_dropped += 1
            if self._qlog is not None:
                self._trace_drop(now, plen, "rejected", codec.PACKET_SHORT, None, "no 1-RTT keys")
            return 0
        if self._awaits_validation():
            to_our_cid = self._dcid_chosen_by_us(p + start + 1)
        if self._app_open_null:
            # null protection: the packet number is in the clear
            first = p[start]
            pn_len = (first & 0x03) + 1
            pn = PN_MAX + 1
            if plen >= rel + pn_len:
                truncated = 0
                for i in range(pn_len):
                    truncated = (truncated << 8) | p[start + rel + i]
                pn = _decode_pn(truncated, pn_len * 8, space.largest_rx + 1)
            if pn > PN_MAX:
                # what NullProtection.decrypt_packet rejects as DecryptionFailed
                return self._undecryptable(memoryview(data)[start:end], now)
            hlen = rel + pn_len
            return self._after_open(SP_APP, space, opener, pn, first, p + start + hlen,
                                    plen - hlen, data, start + hlen, False, None, plen, addr, now,
                                    to_our_cid)
        if type(opener) is PacketProtection:
            plain = take_plain()
            try:
                try:
                    payload = (<PacketProtection>opener).c_open(p + start, plen, rel,
                                                                 space.largest_rx + 1, &pn, &first,
                                                                 plain)
                except DecryptionFailed:
                    return self._undecryptable(memoryview(data)[start:end], now)
                except ProtocolError as exc:
                    self._protocol_error(exc)
                    return 0
                if type(payload) is int:  # (decrypted into ``plain``)
                    return self._after_open(SP_APP, space, opener, pn, first, plain,
                                            <Py_ssize_t>payload, None, 0, False, None, plen,
                                            addr, now, to_our_cid)
                return self._after_open(SP_APP, space, opener, pn, first,
                                        <const uint8_t*>PyBytes_AS_STRING(payload),
                                        PyBytes_GET_SIZE(payload), payload, 0, False, None, plen,
                                        addr, now, to_our_cid)
            finally:
                give_plain(plain)
        if start == 0 and PyBytes_CheckExact(data) and end == PyBytes_GET_SIZE(data):
            packet = data
        else:
            packet = bytes(memoryview(data)[start:end])
        try:
            plain_header, payload, pn = opener.decrypt_packet(packet, rel, space.largest_rx + 1)
        except DecryptionFailed:
            return self._undecryptable(packet, now)
        except ProtocolError as exc:
            self._protocol_error(exc)  # e.g. AEAD_LIMIT_REACHED (RFC 9001 §6.6)
            return 0
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        return self._after_open(SP_APP, space, opener, pn, plain_header[0],
                                <const uint8_t*>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload), payload, 0, False, None, plen, addr, now,
                                to_our_cid)

    cdef int _undecryptable(self, object packet, double now) except -1:
        """A 1-RTT packet that does not open (forged, corrupted, or for keys we no longer
        have): dropped, unless it is the peer's stateless reset."""
        self.packets_dropped += 1
        if self._qlog is not None:
            self._trace_drop(now, len(packet), "decryption_failure", codec.PACKET_SHORT)
        if self.is_stateless_reset(packet):
            self.on_stateless_reset(now)
        return 0

    cdef int _receive_long(self, object hdr, object data, Py_ssize_t start, Py_ssize_t end,
                           object addr, double now) except -1:
        cdef _Space space = self._hs
        opener = self._open[SP_HS]
        if space.discarded or opener is None:
            self.packets_dropped += 1
            return 0
        if (self.is_client and self._retry_scid is not None and not self._cids.peer_cid_set_by_server
                and hdr.scid != self._retry_scid):
            # after a Retry the server's connection uses the Retry's source connection ID;
            # another one is a connection the server made for an earlier copy of our first
            # packet (accepted without the Retry): ignore it (PROTOCOL.md §18)
            self.packets_dropped += 1
            return 0
        try:
            plain_header, payload, pn = opener.decrypt_packet(
                memoryview(data)[start:end], hdr.pn_offset - start, space.largest_rx + 1)
        except DecryptionFailed:
            self.packets_dropped += 1  # forged, corrupted or for keys we no longer have: drop
            if self._qlog is not None:
                self._trace_drop(now, end - start, "decryption_failure", hdr.packet_type)
            return 0
        except ProtocolError as exc:
            self._protocol_error(exc)
            return 0
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        return self._after_open(SP_HS, space, opener, pn, plain_header[0],
                                <const uint8_t*>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload), payload, 0, True, hdr, end - start,
                                addr, now,
                                self._awaits_validation() and self._cids.knows(hdr.dcid))

    cdef int _after_open(self, int space_id, _Space space, object opener, int64_t pn, int first,
                         const uint8_t* payload, Py_ssize_t plen, object pobj, Py_ssize_t poff,
                         bint is_long, object hdr, Py_ssize_t packet_len, object addr,
                         double now, bint to_our_cid) except -1:
        """An authenticated packet: duplicate check, frames, ACK bookkeeping, migration.

        ``to_our_cid``: the packet was addressed to a connection ID we chose while the client's
        address awaited validation (see ``_awaits_validation``)."""
        cdef bint eliciting = False, non_probing = False, record, dropped = False
        if pn < space.rx_floor or space.rx.contains(<uint64_t>pn):
            self.duplicate_packets += 1
            if self._qlog is not None:
                self._trace_drop(now, packet_len, "rejected",
                                 hdr.packet_type if is_long else codec.PACKET_SHORT, pn, "duplicate")
            return 0
        if (is_long and (first & 0x0C)) or (not is_long and (first & 0x18)):
            self._protocol_error(ProtocolError("reserved header bits set", _PROTOCOL_VIOLATION))
            return 0
        # the packet is authentic from here on
        self.packets_received += 1
        if self._state == _CLOSING:
            # answer with CONNECTION_CLOSE again: to the 1st, 2nd, 4th, 8th... packet that
            # arrives while closing (RFC 9000 §10.2.1: a rate that decreases)
            self._closing_rx += 1
            if self._closing_rx & (self._closing_rx - 1) == 0:
                self._close_resend = True
                note_work(self)
        if (space_id == SP_APP and self._old_keys_deadline is None and not self._app_open_null
                and (((<PacketProtection>opener).keys._prev_recv is not None)
                     if type(opener) is PacketProtection
                     else getattr(opener.keys, "has_old_keys", False))):
            self._old_keys_deadline = now + 3 * self._pto()
        self._last_activity = now
        self._tx.eliciting_since_receive = False
        if is_long and self.is_client and not self._cids.peer_cid_set_by_server:
            # RFC 9000 §7.2: the client switches to the server's chosen connection ID
            self._cids.peer_cid_set_by_server = True
            self._cids.server_chose(hdr.scid)
        if to_our_cid and self._awaits_validation():
            # the client used a connection ID we chose: it received one of our packets at
            # this address. Nothing else in a handshake-phase packet proves that: those
            # packets have no packet protection, and the original destination ID is the
            # client's own choice (PROTOCOL.md §18.1)
            self._paths.validated = True
        if space_id == SP_APP and not self.is_client and not self._handshake_confirmed:
            self._confirm_handshake()
        if self._qlog is not None:
            if space_id == SP_APP:
                self._trace_keys(now, "remote_update")
            try:
                decoded = frames.decode_frames(
                    pobj[poff:poff + plen] if pobj is not None
                    else PyBytes_FromStringAndSize(<const char*>payload, plen))
            except ProtocolError:
                decoded = []
            self._qlog.packet_received(now, hdr.packet_type if is_long else codec.PACKET_SHORT,
                                       pn, packet_len, decoded)
        record = space_can_record(space, pn)
        if space_id == SP_APP:
            self._sset.rx_pn = pn
            self._sset.refuse = not record
        try:
            self._process_frames(space_id, payload, plen, pobj, poff, now, is_long,
                                 &eliciting, &non_probing)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return 0
        except _DropPacket:
            # a frame's stream incarnation cannot be told yet (PROTOCOL.md §16.7)
            dropped = True
        if self._state >= _DRAINING:
            return 0
        if dropped or not record:
            # the packet counts as not received (no ACK), its sender sends its frames again.
            # An ACK goes out now when it resolves halves waiting, or asks for the floor to
            # rise so that the space can record packets again
            self.packets_dropped += 1
            if (not record or self._sset.tomb is not None) and not space.ack_pending:
                space.ack_pending = True
                space.ack_deadline = now
                note_work(self)
            return 0
        # ACK bookkeeping (RFC 9000 §13.2)
        space_received(space, pn, eliciting, space_id == SP_HS, now,
                          self._ack_eliciting_threshold, self._max_ack_delay)
        # migration (RFC 9000 §9.3): only the highest-numbered non-probing packet moves the path
        if (space_id == SP_APP and non_probing and pn == space.largest_rx
                and self._state == _ESTABLISHED
                and not (addr is self._paths.peer_addr or addr == self._paths.peer_addr)):
            self._on_peer_address_change(addr, now)
        return 0

    cdef int _process_frames(self, int space_id, const uint8_t* p, Py_ssize_t n, object pobj,
                             Py_ssize_t poff, double now, bint long_header, bint* eliciting,
                             bint* non_probing) except -1:
        """Decode and act on every frame of a payload ``p[:n]`` (which is ``pobj[poff:]``).

        STREAM and RESET_STREAM frames act after every other frame of the packet, in their
        order: a packet with one whose stream incarnation cannot be told yet is dropped before
        any of them changed a stream (_DropPacket, PROTOCOL.md §16.7)."""
        cdef Buffer rb = self._rbuf
        cdef Buffer fb
        cdef Py_ssize_t pos = 0, at, start = 0, nd = 0, i
        cdef _DeferredStream dfr[64]      # deferred STREAM frames, as the first pass parsed them
        cdef list dlist = None            # ... beyond 64, or once a RESET_STREAM is deferred
                                          # (offsets in p, parsed again: rare)
        cdef uint64_t ftype, sid, off, length, delay = 0
        cdef bint fin
        cdef list ranges
        if n <= 0:
            raise ProtocolError("packet without frames", _PROTOCOL_VIOLATION)
        while pos < n:
            ftype = p[pos]
            frame = None
            ranges = None
            start = pos
            if 0x08 <= ftype <= 0x0F:
                # STREAM: header parsed in C, data inserted straight from the packet
                rb._base = <unsigned char*>p
                rb._size = n
                rb._pos = pos + 1
                pull_stream_frame_header(rb, ftype, &sid, &off, &length, &fin)
                pos = rb._pos + <Py_ssize_t>length
            elif ftype == F_PADDING:
                pos += 1
                while pos < n and p[pos] == 0:
                    pos += 1
            elif ftype == F_PING:
                pos += 1
            else:
                if ftype == F_ACK or ftype == F_ACK_ECN:
                    # the codec's parser, straight from the packet (no frame object)
                    at = pos + 1
                    try:
                        ranges = parse_ack_ranges(p, n, &at, ACK_RANGES_LIMIT, &delay, False)
                        if ftype == F_ACK_ECN:
                            parse_ecn(p, n, &at)
                        pos = at
                    except ProtocolError:
                        ranges = None  # the codec below raises it again with the frame named
                if ranges is None:
                    # everything else (and any malformed frame) through the codec
                    if pobj is None:
                        # (the payload is in a lent buffer: frames may keep views of it)
                        pobj = PyBytes_FromStringAndSize(<const char*>p, n)
                        poff = 0
                    fb = Buffer(pobj)
                    fb._pos = poff + pos
                    frame = frames.pull_frame(fb)
                    pos = fb._pos - poff
                    ftype = frame.wire_type
            if long_header and not (ftype <= F_ACK_ECN or ftype == F_CRYPTO
                                    or ftype == F_CONNECTION_CLOSE):
                raise ProtocolError(f"frame 0x{ftype:x} not allowed in a handshake packet",
                                    _PROTOCOL_VIOLATION, ftype)
            if not (ftype == F_ACK or ftype == F_ACK_ECN or ftype == F_PADDING
                    or ftype == F_CONNECTION_CLOSE or ftype == F_CONNECTION_CLOSE_APP):
                eliciting[0] = True
            if not (ftype == F_PADDING or ftype == F_PATH_CHALLENGE or ftype == F_PATH_RESPONSE
                    or ftype == F_NEW_CONNECTION_ID):
                non_probing[0] = True
            if frame is not None:
                if ftype == F_RESET_STREAM:
                    if self._sset.ambiguous(frame.stream_id):
                        raise _DropPacket()
                    if dlist is None:
                        dlist = [dfr[i].at for i in range(nd)]
                    dlist.append(frame)
                else:
                    self._dispatch_frame(space_id, frame, now)
            elif ranges is not None:
                self._on_ack_c(space_id, ranges, delay, now)
            elif 0x08 <= ftype <= 0x0F:
                if self._sset.ambiguous(sid):
                    raise _DropPacket()
                if dlist is not None:
                    dlist.append(start)
                elif nd < 64:
                    dfr[nd].at = start
                    dfr[nd].sid = sid
                    dfr[nd].off = off
                    dfr[nd].length = length
                    dfr[nd].data = pos - <Py_ssize_t>length
                    dfr[nd].fin = fin
                    dfr[nd].ftype = <int>(0x08 | (0x04 if off else 0) | (ftype & 0x02)
                                          | (0x01 if fin else 0))
                    nd += 1
                else:
                    dlist = [dfr[i].at for i in range(nd)]
                    dlist.append(start)
            if self._state >= _DRAINING:
                return 0
        if nd == 0 and dlist is None:
            return 0
        # every stream frame of the packet passed the checks above: none may be dropped now, so
        # nothing the first of them does may change how a later one is classified (forgetting
        # finished halves raises the watermark: it waits until the packet is done)
        self._sset.applying = True
        try:
            if dlist is None:
                for i in range(nd):
                    if self._state >= _DRAINING:
                        break
                    self._sset.on_stream(dfr[i].sid, dfr[i].off, p + dfr[i].data,
                                      <Py_ssize_t>dfr[i].length, dfr[i].fin, dfr[i].ftype)
            else:
                for item in dlist:
                    if self._state >= _DRAINING:
                        break
                    if type(item) is int:
                        self._stream_frame_at(p, n, <Py_ssize_t>item)
                    else:
                        self._sset.on_reset_stream(item, now)
        finally:
            self._sset.applying = False
        if self._sset.trim_due:
            self._sset.trim_finished()
        return 0

    cdef int _stream_frame_at(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t pos) except -1:
        """Act on the STREAM frame at ``p[pos]`` (already checked by the first pass)."""
        cdef Buffer rb = self._rbuf
        cdef uint64_t ftype = p[pos], sid, off, length
        cdef bint fin
        rb._base = <unsigned char*>p
        rb._size = n
        rb._pos = pos + 1
        pull_stream_frame_header(rb, ftype, &sid, &off, &length, &fin)
        self._sset.on_stream(sid, off, p + rb._pos, <Py_ssize_t>length, fin,
                          <int>(0x08 | (0x04 if off else 0) | (ftype & 0x02) | (0x01 if fin else 0)))
        return 0

    cdef int _dispatch_frame(self, int space_id, object frame, double now) except -1:
        handler = FRAME_HANDLERS.get(frame.wire_type)
        if handler is not None:
            handler(self, space_id, frame, now)
        return 0

    # --- frame handlers ---
    def _on_ack(self, space_id, frame, now):
        self._on_ack_c(space_id, list(frame.ranges), frame.ack_delay, now)

    cdef int _on_ack_c(self, int space_id, list ranges, uint64_t ack_delay, double now) except -1:
        cdef double delay = 0.0
        if space_id == SP_APP:
            delay = ldexp(<double>ack_delay, self._peer_ack_delay_exponent) / 1e6
        return self._tx.on_ack(space_id, ranges, delay, now)

    def _on_stream(self, space_id, frame, now):
        data = bytes(frame.data)
        self._sset.on_stream(frame.stream_id, frame.offset,
                             <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                             frame.fin, frame.frame_type)

    def _on_stream_control(self, space_id, frame, now):
        """RESET_STREAM, STOP_SENDING, MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS and the BLOCKED
        frames: the stream table's (_streamset.pyx)."""
        self._sset.on_control_frame(frame, now)

    def _on_ignore(self, space_id, frame, now):
        """PADDING, PING and NEW_TOKEN need no action beyond acknowledgement."""

    def _on_new_connection_id(self, space_id, frame, now):
        self._cids.on_new_connection_id(frame.sequence, bytes(frame.connection_id),
                                        bytes(frame.stateless_reset_token), frame.retire_prior_to)

    def _on_retire_connection_id(self, space_id, frame, now):
        self._cids.on_retire_connection_id(frame.sequence)

    def _on_path_challenge(self, space_id, frame, now):
        data = bytes(frame.data)  # 8 bytes (the codec checks)
        self._paths.on_challenge(<const unsigned char*>PyBytes_AS_STRING(data))

    def _on_path_response(self, space_id, frame, now):
        old = self._paths.on_response(bytes(frame.data))
        if old is not None:
            self._events.append(PathChanged(old, self._paths.peer_addr))

    def _on_connection_close(self, space_id, frame, now):
        if self._state >= _CLOSING:
            # the answer to our own CONNECTION_CLOSE (or both closed at once): the peer has
            # it, nothing more to say (RFC 9000 §10.2.1)
            self._enter_closing(_DRAINING, now)
            return
        reason = bytes(frame.reason).decode("utf-8", "replace")
        self._emit_terminated(ConnectionTerminated(frame.error_code, reason, by_peer=True,
                                                   application=frame.application))
        if self._state == _ESTABLISHED:
            # one CONNECTION_CLOSE (NO_ERROR) in answer before draining (RFC 9000 §10.2.2
            # allows it): it tells a peer whose close() waits that its close arrived
            self._close_frame = (0, 0, b"", False)
            self._close_reply_owed = True
            note_work(self)
        self._enter_closing(_DRAINING, now)

    def _on_datagram(self, space_id, frame, now):
        limit = self.config.max_datagram_frame_size
        if not limit or len(frame.data) + 4 > limit:
            raise ProtocolError("DATAGRAM frame too large or not accepted",
                                ErrorCode.PROTOCOL_VIOLATION, frame.frame_type)
        self._events.append(DatagramReceived(bytes(frame.data)))

    def peer_reset_tokens(self):
        """Stateless reset tokens the peer gave us (one per connection ID of the peer)."""
        return self._cids.peer_reset_tokens()

    @property
    def reset_token(self):
        """The stateless reset token of the peer's connection ID we use now (None if the peer
        gave none): the only one a reset can carry (RFC 9000 §10.3.1)."""
        return self._cids.reset_token

    def is_stateless_reset(self, datagram):
        """True if ``datagram`` ends with the reset token of the peer connection ID in use
        (tokens of IDs we have not used, or retired, do not count: RFC 9000 §10.3.1)."""
        if len(datagram) < 21 or self._state >= _DRAINING:
            return False
        token = self.reset_token
        return token is not None and hmac.compare_digest(bytes(datagram[-16:]), token)

    def on_stateless_reset(self, now):
        """The peer lost its state for this connection: stop at once (RFC 9000 §10.3)."""
        if self._state >= _DRAINING:
            return
        self._emit_terminated(ConnectionTerminated(0, "stateless reset", by_peer=True))
        self._enter_closing(_DRAINING, now)

    cdef double _pto(self):
        cdef RttEstimator rtt = self._recovery.rtt
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + self._peer_max_ack_delay

    cdef int _on_peer_address_change(self, object addr, double now) except -1:
        raise NotImplementedError  # migration: CoreConnection's (_connection.pyx)

    def _trace_drop(self, now, size, trigger, packet_type=None, pn=None, reason=None):
        """Tell the trace about a packet this connection discarded (qlog packet_dropped)."""
        self._qlog.packet_dropped(now, size, trigger, packet_type=packet_type, pn=pn, reason=reason)


FRAME_HANDLERS = {
    frames.FRAME_PADDING: PacketReceiver._on_ignore,
    frames.FRAME_PING: PacketReceiver._on_ignore,
    frames.FRAME_ACK: PacketReceiver._on_ack,
    frames.FRAME_ACK_ECN: PacketReceiver._on_ack,
    frames.FRAME_RESET_STREAM: PacketReceiver._on_stream_control,
    frames.FRAME_STOP_SENDING: PacketReceiver._on_stream_control,
    frames.FRAME_CRYPTO: PacketReceiver._on_crypto,
    frames.FRAME_NEW_TOKEN: PacketReceiver._on_ignore,
    frames.FRAME_MAX_DATA: PacketReceiver._on_stream_control,
    frames.FRAME_MAX_STREAM_DATA: PacketReceiver._on_stream_control,
    frames.FRAME_MAX_STREAMS: PacketReceiver._on_stream_control,
    frames.FRAME_DATA_BLOCKED: PacketReceiver._on_stream_control,
    frames.FRAME_STREAM_DATA_BLOCKED: PacketReceiver._on_stream_control,
    frames.FRAME_STREAMS_BLOCKED: PacketReceiver._on_stream_control,
    frames.FRAME_NEW_CONNECTION_ID: PacketReceiver._on_new_connection_id,
    frames.FRAME_RETIRE_CONNECTION_ID: PacketReceiver._on_retire_connection_id,
    frames.FRAME_PATH_CHALLENGE: PacketReceiver._on_path_challenge,
    frames.FRAME_PATH_RESPONSE: PacketReceiver._on_path_response,
    frames.FRAME_CONNECTION_CLOSE: PacketReceiver._on_connection_close,
    frames.FRAME_CONNECTION_CLOSE_APP: PacketReceiver._on_connection_close,
    frames.FRAME_HANDSHAKE_DONE: PacketReceiver._on_handshake_done,
    frames.FRAME_DATAGRAM: PacketReceiver._on_datagram,
    frames.FRAME_DATAGRAM_LEN: PacketReceiver._on_datagram,
}
for _t in range(0x08, 0x10):
    FRAME_HANDLERS[_t] = PacketReceiver._on_stream
