# cython: language_level=3
"""What goes into each packet a connection sends, and the sending of it (compiled).

Theory of operation
-------------------
A ``Sender`` builds a connection's packets when its driver asks for output (``transmit``, from
``CoreConnection.datagram_trains``): the handshake space's first (CRYPTO data, its ACK, a probe's
PING; a client pads to 1200 bytes), then 1-RTT packets while congestion control, pacing and the
anti-amplification limit let them go, each filled in a fixed order: the ACK owed, the control
frames owed (``Pending``: HANDSHAKE_DONE and PING here, MAX_DATA/MAX_STREAMS from the stream
table, connection-ID frames from ``CidState``, path frames from ``PathState``), unreliable
datagrams, then stream data round robin (``StreamSet.write_frames``). A packet that carried
nothing ack-eliciting beyond its ACK stays small; ack-eliciting ones are at least
``MIN_ELICITING_PACKET`` bytes (long enough to trigger a stateless reset). 1-RTT packets are
sealed straight into a train of equal-size datagrams for segmentation offload, or one
``bytes`` each.

Each packet sent is handed to ``Recovery`` with the record of what it carried (``record_sent``);
the probes a PTO asks for (``probes``) and the pacing deadline (``pacing_deadline``) live here.

It holds the connection's sub-objects it writes from (spaces, connection IDs, path, streams,
recovery, pacer), never the connection: what the connection must do afterwards is left in
``noted`` (more to send than one call built) and ``idle_restart`` (the first ack-eliciting packet
since a receipt restarts the idle timer, RFC 9000 §10.1).
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from dquic._cids cimport CidState, cid_frames_owed
from dquic._codec cimport Buffer
from dquic._congestion cimport CongestionController, Pacer
from dquic._packet cimport (SEND_SCRATCH_SIZE, finish_packet, give_scratch, pad_to, pay, put_frame,
                            start_packet, start_short_packet, take_scratch)
from dquic._paths cimport PathState, amplification_room, path_frames_owed
from dquic._recovery cimport Recovery, start_sent
from dquic._spaces cimport (FR_CRYPTO, FR_DATAGRAM, FR_HANDSHAKE_DONE, FR_MAX_DATA,
                            FR_MAX_STREAM_DATA, FR_MAX_STREAMS, FR_NEW_CONNECTION_ID,
                            FR_PATH_CHALLENGE, FR_PATH_RESPONSE, FR_PING, FR_RESET_STREAM,
                            FR_RETIRE_CONNECTION_ID, FR_STOP_SENDING, FR_STREAM, OWE_CONTROL,
                            OWE_HANDSHAKE_DONE, OWE_MAX_STREAMS, OWE_PATH_CHALLENGE, OWE_PING,
                            SP_APP, SP_HS, FrameRecord, U64Queue, _Sent, _Space, new_sent, q_pop,
                            record_at, recycle, space_ack_acked, write_ack)
from dquic._streams cimport SendStream
from dquic._streamset cimport StreamSet, _Stream, held
from dquic._wire cimport be_write

from bisect import insort
from collections import deque

from dquic import _codec as codec
from dquic.events import DatagramAcknowledged, DatagramLost

__all__ = ["Sender", "MIN_ELICITING_PACKET", "MAX_LOST_STREAM_PACKETS"]

#: smallest ack-eliciting 1-RTT packet sent (endpoint.MIN_RESET_TRIGGER)
MIN_ELICITING_PACKET = 42
cdef Py_ssize_t _MIN_ELICITING = MIN_ELICITING_PACKET

#: 1-RTT packets declared lost whose stream data is remembered for a late acknowledgement
#: (StreamSet.late_acks); beyond it the oldest are forgotten
MAX_LOST_STREAM_PACKETS = 1024


cdef int trace_keys(object qlog, object seal, double now, object trigger) except -1:
    """Tell the trace when the 1-RTT keys are new: installed by the handshake (generation 0)
    or updated (RFC 9001 §6); the trace writes only a generation it has not seen."""
    keys = getattr(seal, "keys", None)
    if keys is not None:
        qlog.keys_updated(now, keys.generation, trigger)
    return 0


cdef class Sender:
    """Builds one connection's packets (see the module docstring)."""

    def __init__(self, config, bint is_client, list seal, _Space hs, _Space app, CidState cids,
                 PathState paths, StreamSet sset, Recovery recovery, Pacer pacer, reset_token,
                 list events):
        self.events = events
        self.is_client = is_client
        self.seal = seal
        self.hs = hs
        self.app = app
        self.cids = cids
        self.paths = paths
        self.sset = sset
        self.recovery = recovery
        self.pacer = pacer
        self.reset_token = reset_token
        self.mds = config.max_datagram_size
        # (at most half the ranges a space keeps: asking must start well before the bound)
        self.ack_ranges_per_frame = max(1, min(config.ack_ranges_per_frame, app.max_ranges // 2))
        self.ack_delay_exponent = config.ack_delay_exponent
        self.sbuf = None
        self.app_seal = None
        self.app_seal_null = False
        self.app_tag = 0
        self.retry_token = b""
        self.qlog = None
        self.pacing_deadline = -1.0
        self.probes[0] = 0
        self.probes[1] = 0
        self.datagrams = None  # (id, data) waiting to be sent (a deque; None while empty)
        self.datagram_seq = 0
        self.last_eliciting_sent = 0.0
        self.eliciting_since_receive = False
        self.idle_restart = -1.0
        self.noted = False
        self.ask_pn = -1
        self.asked_hi = -1
        self.ask_time = 0.0
        self.base_mds = self.mds
        self.pmtud = bool(config.mtu_discovery)
        self.pmtu_max = max(self.mds, config.mtu_discovery_max)
        self.pmtu_probes_sent = 0
        self.pmtu_restart()
        # (self.pending, the control frames owed to the peer, starts zeroed: nothing owed)

    cdef Py_ssize_t transmit(self, double now, Py_ssize_t max_bytes, Py_ssize_t max_segments,
                             bint trains, list out) except -1:
        """Build what should be sent now into ``out``: ``(data, segment_size, address)`` when
        ``trains``, else ``(datagram, address)``; 1-RTT packets go into trains of up to
        ``max_segments`` once the handshake space is gone, else one ``bytes`` each. Returns the
        bytes built. ``noted`` is set when more remains than one call builds."""
        cdef Py_ssize_t mds = self.mds, total = 0, off = 0, seg = 0, count = 0, n, room
        cdef unsigned char* base = NULL
        cdef int i
        cdef bint close_train
        addr = self.paths.peer_addr
        self.pacing_deadline = -1.0
        # handshake space first: it is small and unblocks everything else
        if not self.hs.discarded:
            n = len(out)
            total += self.datagram_each(False, 8, now, trains, out)
            if self.app_seal is not None and len(out) > n:
                total += self.coalesce_app(now, out, trains)
        if (self.pmtu_due() and self.sset.send_queue is not None
                and self.sset.send_queue.n > 0):
            # a busy connection's probe goes before its data: data would fill the window first
            total += self.maybe_probe_pmtu(now, trains, out)
        if self.app_seal is None:
            pass
        elif not trains or max_segments <= 1 or not self.hs.discarded:
            total += self.datagram_each(True, 256, now, trains, out)
            self.check_app_limited(mds)
        else:
            room = mds + self.app_tag + 64  # a packet never exceeds mds; slack for safety
            if max_bytes < room:
                max_bytes = room
            train = None
            for i in range(256):
                if train is None:
                    train = PyByteArray_FromStringAndSize(NULL, max_bytes)
                    base = <unsigned char*>PyByteArray_AS_STRING(train)
                    off = 0
                    count = 0
                d = self.build_app_packet(now, mds, base + off)
                if d is None:
                    break
                n = <Py_ssize_t>d
                total += n
                close_train = False
                if count == 0 or n == seg:
                    if count == 0:
                        seg = n
                    off += n
                    count += 1
                elif n < seg:
                    off += n  # a shorter datagram ends a train
                    count += 1
                    close_train = True
                else:
                    # longer than the train's size: it starts the next train. It is copied out
                    # before the old train is cut to size (that may move or free what lies
                    # past ``off``), and only its own ``n`` bytes are read
                    new = PyByteArray_FromStringAndSize(NULL, max_bytes)
                    memcpy(PyByteArray_AS_STRING(new), base + off, n)
                    PyByteArray_Resize(train, off)
                    out.append((train, seg, addr))
                    train = new
                    base = <unsigned char*>PyByteArray_AS_STRING(train)
                    off = n
                    seg = n
                    count = 1
                if close_train or count >= max_segments or off + room > max_bytes:
                    PyByteArray_Resize(train, off)
                    out.append((train, seg, addr))
                    train = None
            else:
                self.noted = True
            if train is not None and count:
                PyByteArray_Resize(train, off)
                out.append((train, seg, addr))
            self.check_app_limited(mds)
        if total and self.pmtu_due():
            total += self.maybe_probe_pmtu(now, trains, out)  # (a connection sending little)
        self.return_scratch()
        return total

    cdef Py_ssize_t datagram_each(self, bint app, int most, double now, bint trains,
                                  list out) except -1:
        """Build up to ``most`` datagrams into ``out``, each its own ``bytes`` (1-RTT packets
        when ``app``, else the handshake space's); returns their bytes."""
        cdef Py_ssize_t total = 0
        cdef int i
        addr = self.paths.peer_addr
        for i in range(most):
            if app:
                d = self.build_app_packet(now, self.mds)
            else:
                d = self.build_handshake_datagram(now, self.mds)
            if d is None:
                return total
            out.append((d, len(d), addr) if trains else (d, addr))
            total += len(d)
        self.noted = True  # more than one call's worth: ask to be polled again
        return total

    cdef Py_ssize_t coalesce_app(self, double now, list out, bint trains) except -1:
        """The first 1-RTT packet goes in the same datagram as the handshake space's last one
        when it fits (PROTOCOL.md §6): the acknowledgement that ends a handshake, the first
        1-RTT frames and the application's first message then take one datagram, not three."""
        cdef tuple last = <tuple>out[len(out) - 1]
        cdef bytes d = <bytes>last[0]
        cdef Py_ssize_t room = self.mds - len(d)
        if room < 64:
            return 0
        a = self.build_app_packet(now, room)
        if a is None:
            return 0
        d = d + <bytes>a
        out[len(out) - 1] = (d, len(d), last[len(last) - 1]) if trains else (d, last[1])
        return len(<bytes>a)

    cdef void return_scratch(self):
        if self.sbuf is not None:
            give_scratch(self.sbuf)
            self.sbuf = None

    cdef int check_app_limited(self, Py_ssize_t mds) except -1:
        # nothing left to send while the window has room: the application, not the network,
        # limits the rate (delivery-rate estimation)
        if ((self.sset.send_queue is None or self.sset.send_queue.n == 0) and not self.datagrams
                and self.recovery.congestion.can_send(mds)):
            self.recovery.on_app_limited()
        # (an emptied send queue is kept while the connection is busy, a ring grown to the
        # streams of a step instead of one grown anew each step; StreamSet.drop_pools lets it
        # go once the connection is quiet)
        if self.datagrams is not None and not self.datagrams:
            self.datagrams = None
        return 0

    cdef int begin_packet(self, int space_id, Py_ssize_t limit, int64_t* pn_out, int* pn_len_out,
                           Py_ssize_t* length_off) except -1:
        """Write a packet header into the send buffer (borrowed until the end of this
        datagrams_to_send / datagram_trains); the payload follows."""
        cdef Buffer buf = self.sbuf
        cdef int ptype = -1
        if buf is None:
            buf = self.sbuf = take_scratch(self.mds)
        if space_id == SP_APP:
            length_off[0] = -1
            return start_short_packet(buf, self.app, self.cids.peer_cid, pn_out, pn_len_out)
        ptype = self.packet_type(space_id)
        return start_packet(buf, self.hs, ptype, self.cids.peer_cid, self.cids.host_cid,
                            self.retry_token if ptype == codec.PACKET_INITIAL else b"", pn_out,
                            pn_len_out, length_off)

    cdef int packet_type(self, int space_id) except -1:
        """The header type of this space's packets; the client's handshake packets are
        INITIAL until the server's first packet arrives."""
        if space_id == SP_APP:
            return codec.PACKET_SHORT
        if self.is_client and not self.cids.peer_cid_set_by_server:
            return codec.PACKET_INITIAL
        return codec.PACKET_HANDSHAKE

    cdef int pad_handshake(self) except -1:
        # a client's handshake datagrams are at least 1200 bytes (RFC 9000 §14.1)
        return pad_to(self.sbuf, 1200 - self.seal[SP_HS].tag_size)

    cdef bint floor_wanted(self, double now) noexcept:
        """Should the application ACK being sent ask to be acknowledged (a PING with it if
        nothing else elicits one), so that the floor rises (_spaces.pyx)? When peer halves
        completed above what the ACK in flight can resolve (PROTOCOL.md §16.7); and when more
        than ``ack_ranges_per_frame`` ranges, or any late packet, lie above the floor, with no
        ask in flight or the one in flight sent a smoothed RTT ago or more (so the floor follows
        the packets about a round trip behind, and the ranges kept stay few)."""
        if self.sset.tomb is not None and self.sset.tomb_hi > self.asked_hi:
            return True
        if self.app.rx.count() <= self.ack_ranges_per_frame and self.app.nfills == 0:
            return False
        return self.ask_pn < 0 or now - self.ask_time >= self.recovery.rtt.smoothed_rtt

    cdef int ask_settled(self) except -1:
        """The packet that asked for the floor to rise was acknowledged or lost: ask again with
        the next ACK if that is still wanted (at once: the halves waiting hold their credit)."""
        self.ask_pn = -1
        self.asked_hi = -1
        if self.sset.tomb is not None and not self.app.discarded and not self.app.ack_pending:
            # (an ACK may go out when congestion control holds back everything else; the PING
            # goes with it when it may)
            self.app.ack_pending = True
            self.app.ack_deadline = self.sset.now
            self.noted = True
        return 0

    cdef int record_sent(self, _Sent rec, int space_id, int64_t pn, Py_ssize_t size,
                          bint eliciting, double now) except -1:
        start_sent(rec, pn, space_id, now, size, eliciting, eliciting, False)
        self.paths.bytes_sent += size
        self.recovery.on_packet_sent(rec)
        if self.qlog is not None:
            self.qlog.packet_sent(now, self.packet_type(space_id), pn, size,
                                  rec.frames_for_trace())
            if space_id == SP_APP:
                trace_keys(self.qlog, self.app_seal, now, "local_update")
        rec.frames = None
        if eliciting:
            self.last_eliciting_sent = now
            if not self.eliciting_since_receive:
                # RFC 9000 §10.1: the first ack-eliciting packet after a receipt restarts idle
                self.eliciting_since_receive = True
                self.idle_restart = now
            if self.pacer is not None:
                self.pacer.on_sent(size, now)
        return 0

    cdef object build_handshake_datagram(self, double now, Py_ssize_t mds):
        cdef _Space space = self.hs
        cdef SendStream crypto = space.crypto_send
        cdef bint ack_due, probe, eliciting = False
        cdef int64_t room, pn
        cdef Py_ssize_t limit, hdr_end, length_off, avail, tag
        cdef int pn_len
        cdef _Sent rec
        ack_due = space.ack_pending and space.ack_deadline >= 0.0 and space.ack_deadline <= now
        probe = self.probes[SP_HS] > 0
        if not (ack_due or crypto.has_pending_c() or probe):
            return None
        room = amplification_room(self.paths)
        if room <= 64:
            return None  # anti-amplification: wait for more bytes from the unvalidated client
        limit = mds if mds < room else <Py_ssize_t>room
        self.begin_packet(SP_HS, limit, &pn, &pn_len, &length_off)
        hdr_end = self.sbuf._pos
        tag = self.seal[SP_HS].tag_size
        rec = new_sent()
        if space.ack_pending:
            write_ack(self.sbuf, space, SP_HS, now, rec, limit - tag - self.sbuf._pos - 1,
                      self.ack_delay_exponent, self.qlog is not None)
        while crypto.has_pending_c():
            avail = limit - tag - self.sbuf._pos - 1 - 8 - 2
            if avail < 16:
                break
            chunk = crypto.next_chunk(avail, 1 << 62)
            if chunk is None:
                break
            off, data, _fin = chunk
            # (always fits: avail leaves room for the frame's type, offset and length)
            put_frame(self.sbuf, limit - tag, rec, FR_CRYPTO, off, len(data), SP_HS,
                            <const unsigned char*>PyBytes_AS_STRING(data), len(data))
            eliciting = True
        if self.probes[SP_HS] > 0:
            self.probes[SP_HS] -= 1
            if not eliciting:
                eliciting = put_frame(self.sbuf, limit - tag, rec, FR_PING)
        if self.is_client and eliciting:
            self.pad_handshake()  # anti-amplification (RFC 9000 §14.1)
        data = finish_packet(self.sbuf, self.seal[SP_HS], False, hdr_end, length_off, pn, pn_len,
                             NULL)
        self.record_sent(rec, SP_HS, pn, len(data), eliciting, now)
        return data

    cdef object build_app_packet(self, double now, Py_ssize_t mds, unsigned char* dst=NULL):
        cdef _Space space = self.app
        cdef bint ack_due, probe, control, path_frames, have_data, cc_ok, eliciting, ask
        cdef Py_ssize_t limit = mds, hdr_end, length_off, end, acked_end, pad
        cdef int64_t room, pn
        cdef int pn_len
        cdef double t
        cdef _Sent rec
        ack_due = space.ack_pending and space.ack_deadline >= 0.0 and space.ack_deadline <= now
        probe = self.probes[SP_APP] > 0
        control = self.has_control_frames()
        # path validation frames are small and not held back by congestion control: the
        # window may still be full of packets sent on the previous path (RFC 9000 §9.4)
        path_frames = path_frames_owed(self.paths)
        have_data = ((self.sset.send_queue is not None and self.sset.send_queue.n > 0)
                     or (self.datagrams is not None and len(self.datagrams) > 0))
        if not (ack_due or probe or control or have_data or self.pending.once & OWE_PING):
            return None
        room = amplification_room(self.paths)
        if room < limit:
            if room < 64:
                return None
            limit = <Py_ssize_t>room
        # congestion control and pacing gate ack-eliciting packets (probes bypass: RFC 9002 §7.5)
        cc_ok = probe or self.recovery.congestion.can_send(limit)
        if cc_ok and not probe and self.pacer is not None:
            self.pacer.update(self.recovery.congestion.congestion_window, self.recovery.rtt.smoothed_rtt,
                               self.recovery.congestion.in_slow_start(), self.recovery.congestion.pacing_rate())
            t = self.pacer.next_send_time(now)
            if t > now:
                cc_ok = False
                if control or have_data:
                    self.pacing_deadline = t
        if not cc_ok and not ack_due and not path_frames:
            return None
        self.begin_packet(SP_APP, limit, &pn, &pn_len, &length_off)
        hdr_end = self.sbuf._pos
        end = limit - self.app_tag
        rec = new_sent()
        ask = False
        if space.ack_pending:
            write_ack(self.sbuf, space, SP_APP, now, rec, end - self.sbuf._pos - 1,
                      self.ack_delay_exponent, self.qlog is not None)
            ask = rec.ack_full and self.floor_wanted(now)
        acked_end = self.sbuf._pos  # every frame after the ACK elicits one
        if cc_ok:
            if control or self.sset.credit_lazy:
                self.write_control_frames(end, rec)
            if self.datagrams is not None and len(self.datagrams):
                self.write_datagrams(end, rec)
            if self.sset.send_queue is not None and self.sset.send_queue.n:
                self.sset.write_frames(self.sbuf, end, rec)
            if probe:
                self.probes[SP_APP] -= 1
            if (probe or ask or self.pending.once & OWE_PING) and self.sbuf._pos == acked_end:
                put_frame(self.sbuf, end, rec, FR_PING)
            self.pending.once &= ~OWE_PING
        elif path_frames:
            self.write_path_frames(end, rec)
        eliciting = self.sbuf._pos > acked_end
        if eliciting and rec.ack_full:
            # acknowledged, it raises the floor (_spaces.pyx); the newest such packet is watched
            self.ask_pn = pn
            self.asked_hi = rec.ack_hi
            self.ask_time = now
        if eliciting and self.sbuf._pos + self.app_tag < _MIN_ELICITING:
            # long enough for a peer that lost the connection to answer with a stateless reset
            # (RFC 9000 §10.3; endpoint.MIN_RESET_TRIGGER): small packets (a lone FIN, a PING)
            # are common once message streams end by themselves
            pad = _MIN_ELICITING - self.app_tag - self.sbuf._pos
            memset(self.sbuf.c_push_ptr(pad), 0, pad)
        if self.sbuf._pos == hdr_end:
            # nothing fitted: undo the packet number
            space.next_pn -= 1
            recycle(rec)
            return None
        data = finish_packet(self.sbuf, self.app_seal, self.app_seal_null, hdr_end, -1, pn, pn_len,
                             dst)
        self.record_sent(rec, SP_APP, pn, len(data) if dst == NULL else <Py_ssize_t>data, eliciting, now)
        return data

    cdef bint has_control_frames(self):
        return ((self.pending.once & OWE_CONTROL) != 0 or self.sset.owed != 0
                or cid_frames_owed(self.cids) or path_frames_owed(self.paths))

    cdef int write_control_frames(self, Py_ssize_t end, _Sent rec) except -1:
        cdef uint32_t* owed = &self.pending.once
        cdef CidState cids = self.cids
        cdef U64Queue* q = &cids.new_cids
        pay(self.sbuf, owed, FR_HANDSHAKE_DONE, end, rec)
        pay(self.sbuf, &self.sset.owed, FR_MAX_DATA, end, rec, self.sset.recv_window._limit)
        if self.sset.credit_lazy:
            self.sset.owed |= OWE_MAX_STREAMS
        pay(self.sbuf, &self.sset.owed, FR_MAX_STREAMS, end, rec, self.sset.max_streams_local)
        if not self.sset.owed & OWE_MAX_STREAMS:
            self.sset.credit_announced()
        self.write_path_frames(end, rec)
        while q.n:
            seq = q.items[0]
            cid = cids.host_cids.get(seq)
            if cid is not None:
                tail = bytes(cid) + bytes(self.reset_token(cid))
                if not (1 <= len(cid) <= 20 and len(tail) == len(cid) + 16):
                    raise ValueError("a connection ID is 1..20 bytes, a reset token 16")
                if not put_frame(self.sbuf, end, rec, FR_NEW_CONNECTION_ID, seq, 0, len(cid),
                                       <const unsigned char*>PyBytes_AS_STRING(tail), len(tail)):
                    break
            q_pop(q)
        q = &cids.retire_cids
        while q.n and put_frame(self.sbuf, end, rec, FR_RETIRE_CONNECTION_ID, q.items[0]):
            q_pop(q)
        return 0

    cdef int write_path_frames(self, Py_ssize_t end, _Sent rec) except -1:
        """PATH_RESPONSE for challenges received, PATH_CHALLENGE for a new path."""
        cdef PathState paths = self.paths
        cdef U64Queue* q = &paths.responses
        cdef unsigned char data[8]
        while q.n:
            be_write(data, q.items[0], 8)
            if not put_frame(self.sbuf, end, rec, FR_PATH_RESPONSE, 0, 0, 0, data, 8):
                break
            q_pop(q)
        if paths.owed & OWE_PATH_CHALLENGE:
            challenge = paths.challenge[0]
            pay(self.sbuf, &paths.owed, FR_PATH_CHALLENGE, end, rec, 0, 0, 0,
                      <const unsigned char*>PyBytes_AS_STRING(challenge), 8)
        return 0

    cdef int write_datagrams(self, Py_ssize_t end, _Sent rec) except -1:
        cdef Py_ssize_t n
        while self.datagrams:
            dg_id, data = self.datagrams[0]
            n = PyBytes_GET_SIZE(data)
            if not put_frame(self.sbuf, end, rec, FR_DATAGRAM, <uint64_t>n, dg_id, 0,
                                   <const unsigned char*>PyBytes_AS_STRING(data), n):
                break
            self.datagrams.popleft()
        return 0

    # --- what was sent: acknowledged or lost ---
    cdef int on_ack(self, int space_id, list ranges, double delay, double now) except -1:
        """An ACK frame of the peer (``delay``: its ACK delay in seconds): what recovery declares
        acknowledged or lost is replayed record by record."""
        cdef _Space space
        cdef _Sent pkt
        acked, lost = self.recovery.on_ack_received(space_id, ranges, delay, now)
        if self.qlog is not None:
            self.trace_recovery(now, space_id, lost)
        space = self.app if space_id == SP_APP else self.hs
        for pkt in acked:
            if pkt.packet_number > space.largest_acked:
                space.largest_acked = pkt.packet_number
            self.on_packet_acked(pkt)
            # recovery holds no reference to an acknowledged packet any more: reuse it (a lost
            # one stays tracked by recovery, which may still report it acknowledged later)
            recycle(pkt)
        for pkt in lost:
            self.on_packet_lost(pkt)
        if space_id == SP_APP and self.sset.lost_streams:
            self.sset.late_acks(ranges)
        return 0

    cdef int on_loss_timeout(self, double now) except -1:
        """The loss-detection timer expired (RFC 9002 §6): packets declared lost are replayed,
        and a PTO asks for probes."""
        cdef _Sent pkt
        cdef int probe_space
        lost, probe_space = self.recovery.on_loss_detection_timeout(now)
        if self.qlog is not None:  # (a PTO changes pto_count even when nothing was lost)
            self.trace_recovery(now, lost[0].space if lost else SP_APP, lost)
        for pkt in lost:
            self.on_packet_lost(pkt)
        if probe_space >= 0:
            self.probes[probe_space] = max(self.probes[probe_space], self.recovery.probes_needed)
            self.requeue_for_probe(probe_space)
            if (self.recovery.pto_count >= PMTU_BLACK_HOLE_PTOS and self.mds > self.base_mds
                    and probe_space == SP_APP):
                # nothing of ours arrives any more: perhaps the path now drops datagrams of
                # the size found (a black hole, RFC 8899 §4.3); back to the size every path
                # carries, and the search starts again once the connection is busy
                self.pmtu_restart()
        return 0

    cdef int trace_recovery(self, double now, int space_id, list lost) except -1:
        """Losses, then the recovery metrics and congestion state (the trace writes only what
        changed): after each ACK and loss-detection timeout, while tracing."""
        ptype = codec.PACKET_SHORT if space_id == SP_APP else codec.PACKET_HANDSHAKE
        for pkt in lost:
            self.qlog.packet_lost(now, ptype, pkt.packet_number)
        recovery = self.recovery
        rtt = recovery.rtt
        cc = self.recovery.congestion
        self.qlog.metrics_updated(now, cwnd=cc.congestion_window,
                                   bytes_in_flight=cc.bytes_in_flight,
                                   smoothed_rtt=rtt.smoothed_rtt, min_rtt=rtt.min_rtt,
                                   latest_rtt=rtt.latest_rtt, rttvar=rtt.rttvar,
                                   ssthresh=cc.ssthresh, pto_count=recovery.pto_count)
        self.qlog.congestion_state_updated(
            now, cc.congestion_state(recovery.app_limited_until != 0),
            persistent_congestion_events=cc.persistent_congestion_events)
        return 0

    cdef int requeue_for_probe(self, int space_id) except -1:
        """PTO (RFC 9002 §6.2.4): make the probe carry data still unacknowledged if there is any."""
        cdef SendStream cs
        if space_id == SP_HS and not self.hs.discarded:
            cs = self.hs.crypto_send
            if cs._offset_sent:
                cs.on_lost_c(0, cs._offset_sent, False)  # re-send whatever is not acknowledged
        return 0

    # A packet's records are replayed in packet order: STREAM records in on_packet_acked /
    # on_packet_lost (the per-packet path), the others by record_acked / record_lost, one branch
    # per kind, each to the object the frame concerns.
    cdef int on_packet_acked(self, _Sent pkt) except -1:
        cdef int i
        cdef FrameRecord* r
        cdef _Stream s
        cdef _Space sp
        cdef int64_t floor
        if pkt.pmtu_probe:
            if pkt.packet_number == self.pmtu_probe_pn:
                self.pmtu_acked()
            return 0
        if pkt.ack_space >= 0:
            # RFC 9000 §13.2.4: the peer has our ACK; the floor may rise (_spaces.pyx), and
            # with it the peer's halves complete below it are resolved (PROTOCOL.md §16.7)
            sp = self.app if pkt.ack_space == SP_APP else self.hs
            floor = space_ack_acked(sp, pkt)
            if floor >= 0 and pkt.ack_space == SP_APP and self.sset.tomb is not None:
                self.sset.floor_moved(floor)
            if pkt.packet_number == self.ask_pn and pkt.space == SP_APP:
                self.ask_settled()
        cdef uint64_t h0
        if pkt.declared_lost and pkt.space == SP_APP and self.sset.lost_streams is not None:
            # a loss recovery took back in time: its stream data is acknowledged here
            if self.sset.lost_streams.pop(pkt.packet_number, None) is not None:
                self.sset.lost_streams_pns.remove(pkt.packet_number)
                if not self.sset.lost_streams_pns:
                    self.sset.lost_streams = self.sset.lost_streams_pns = None
        for i in range(pkt.nrec):
            r = record_at(pkt, i)
            if r.kind == FR_STREAM:
                s = self.sset.lookup(r.a)
                if s is not None and s.send_gen == r.gen:
                    h0 = held(s.send)
                    s.send.on_acked_c(r.b, r.c, r.fin)
                    self.sset.send_buffered -= h0 - held(s.send)
                    self.sset.after_ack(s)
            else:
                self.record_acked(r, pkt.declared_lost)
        return 0

    cdef int record_acked(self, FrameRecord* r, bint declared_lost) except -1:
        """A frame other than STREAM arrived: CRYPTO data is delivered, a datagram reported, a
        retirement done (the other kinds need nothing)."""
        cdef _Space sp
        cdef _Stream s
        if r.kind == FR_CRYPTO:
            sp = (self.hs if r.c == SP_HS else self.app)
            sp.crypto_send.on_acked_c(r.a, r.b, False)
        elif r.kind == FR_RESET_STREAM:
            s = self.sset.lookup(r.a)
            if s is not None and s.send_gen == r.gen and s.send_opened and s.send._reset:
                self.sset.send_complete(s)
        elif r.kind == FR_DATAGRAM and not declared_lost:
            # a datagram declared lost was already reported as such; one verdict per datagram
            self.events.append(DatagramAcknowledged(r.b))
        elif r.kind == FR_RETIRE_CONNECTION_ID:
            self.cids.on_retire_acked(r.a)
        return 0

    cdef int on_packet_lost(self, _Sent pkt) except -1:
        cdef int i
        cdef FrameRecord* r
        cdef _Stream s
        cdef list streams = None
        if pkt.pmtu_probe:
            if pkt.packet_number == self.pmtu_probe_pn:
                self.pmtu_lost()
            return 0
        for i in range(pkt.nrec):
            r = record_at(pkt, i)
            if r.kind == FR_STREAM:
                s = self.sset.lookup(r.a)
                if s is not None and s.send_gen == r.gen and not s.send._reset:
                    s.send.on_lost_c(r.b, r.c, r.fin)
                    self.sset.schedule(s)
                    if streams is None:
                        streams = []
                    streams.append((r.a, r.gen, r.b, r.c, r.fin))
            else:
                self.record_lost(r)
        if streams is not None and pkt.space == SP_APP:
            # kept until acknowledged late (StreamSet.late_acks) or pushed out by newer ones
            if self.sset.lost_streams is None:
                self.sset.lost_streams = {}
                self.sset.lost_streams_pns = []
            self.sset.lost_streams[pkt.packet_number] = tuple(streams)
            insort(self.sset.lost_streams_pns, pkt.packet_number)
            if len(self.sset.lost_streams_pns) > MAX_LOST_STREAM_PACKETS:
                del self.sset.lost_streams[self.sset.lost_streams_pns.pop(0)]
        if pkt.packet_number == self.ask_pn and pkt.space == SP_APP:
            self.ask_settled()
        return 0

    cdef int record_lost(self, FrameRecord* r) except -1:
        """A frame other than STREAM was lost: what it carried is owed again, unless that no
        longer applies (a frame announcing a limit is sent anew with the limit then current)."""
        cdef _Stream s
        cdef _Space sp
        cdef int kind = r.kind
        if kind == FR_CRYPTO:
            sp = (self.hs if r.c == SP_HS else self.app)
            if not sp.discarded:
                sp.crypto_send.on_lost_c(r.a, r.b, False)
        elif kind == FR_HANDSHAKE_DONE:
            self.pending.once |= OWE_HANDSHAKE_DONE
        elif kind == FR_MAX_DATA or kind == FR_MAX_STREAMS:
            self.sset.owed |= (<uint32_t>1) << kind
        elif kind == FR_MAX_STREAM_DATA or kind == FR_RESET_STREAM or kind == FR_STOP_SENDING:
            s = self.sset.lookup(r.a)
            if s is None:
                return 0
            if kind == FR_MAX_STREAM_DATA:
                # no more credit is needed once the final size is known
                if s.recv_gen != r.gen or not s.recv_opened or s.recv.final_size >= 0:
                    return 0
            elif kind == FR_RESET_STREAM:
                if s.send_gen != r.gen or not s.send_opened or not s.send._reset:
                    return 0
                s.reset_code = r.b
            else:
                if s.recv_gen != r.gen or not s.recv_opened or s.recv_done:
                    return 0
                s.stop_code = r.b
            s.owed |= (<uint32_t>1) << kind
            self.sset.schedule(s)
        elif kind == FR_NEW_CONNECTION_ID:
            self.cids.on_new_cid_lost(r.a)
        elif kind == FR_RETIRE_CONNECTION_ID:
            self.cids.on_retire_lost(r.a)
        elif kind == FR_DATAGRAM:
            self.events.append(DatagramLost(r.b))
        return 0

    # ------------------------------------------------------------------ path MTU discovery
    # (RFC 9000 §14.3 with RFC 8899's packetization-layer search; PROTOCOL.md §14.7) A probe is
    # a 1-RTT packet of PING and PADDING of the size being tried, alone in its datagram, sent
    # while the connection is busy and one at a time. Acknowledged, the size becomes the one
    # every packet uses; lost PMTU_MAX_PROBES times in a row, it counts as too large. Its
    # loss is no congestion signal (_recovery.pyx). The first size tried is the ceiling (the
    # local route's MTU is usually the path's), then a binary search.

    cdef int pmtu_limit(self, Py_ssize_t ceiling) except -1:
        """A bound on the search (the peer's max_udp_payload_size): never above it."""
        if ceiling < self.base_mds:
            ceiling = self.base_mds
        if ceiling < self.pmtu_max:
            self.pmtu_max = ceiling
        if self.pmtu_hi > self.pmtu_max:
            self.pmtu_hi = self.pmtu_max
        return 0

    cdef int pmtu_restart(self) except -1:
        """A new path (or the start): back to the base size, the search from the default
        ceiling (a driver tells the new route's MTU again, if it knows it)."""
        self.set_datagram_size(self.base_mds)
        self.pmtu_hi = min(self.pmtu_max, max(self.base_mds, PMTU_DEFAULT_CEILING))
        self.pmtu_probe_size = 0
        self.pmtu_probe_pn = -1
        self.pmtu_fails = 0
        self.pmtu_failed_sizes = 0
        self.pmtu_start = self.paths.bytes_sent
        return 0

    cdef int pmtu_route(self, Py_ssize_t payload) except -1:
        """The local route takes UDP payloads up to ``payload`` bytes (a driver asked the
        socket): the search's ceiling, at most ``pmtu_max``, in place of the default one."""
        if payload < self.base_mds:
            payload = self.base_mds
        if payload > self.pmtu_max:
            payload = self.pmtu_max
        if self.mds > payload:
            self.set_datagram_size(payload)
        self.pmtu_hi = payload
        self.pmtu_failed_sizes = 0
        if self.pmtu_probe_pn < 0:
            self.pmtu_probe_size = 0
            self.pmtu_fails = 0
        return 0

    cdef int set_datagram_size(self, Py_ssize_t size) except -1:
        """Use ``size`` for every packet from now on (congestion control and pacing count in
        datagrams of it)."""
        cdef Py_ssize_t old = self.mds
        cdef CongestionController cc = self.recovery.congestion
        self.mds = size
        cc.max_datagram_size = size
        if size != old:
            # the minimum window is counted in datagrams (RFC 9002 §7.2: 2 of them): a window
            # below one datagram could never send again
            cc.minimum_window = max(1, cc.minimum_window * size // old)
            if cc.congestion_window < cc.minimum_window:
                cc.congestion_window = cc.minimum_window
        if self.pacer is not None:
            self.pacer.max_datagram_size = size
        return 0

    cdef Py_ssize_t pmtu_next(self) noexcept:
        """The size to try: the one tried last while it has not failed PMTU_MAX_PROBES times,
        else the ceiling while nothing failed in this search, else (after the ceiling failed)
        1452, else the middle."""
        if self.pmtu_probe_size:
            return self.pmtu_probe_size
        if self.pmtu_failed_sizes == 0:
            return self.pmtu_hi
        if self.pmtu_failed_sizes == 1 and self.mds < PMTU_DEFAULT_CEILING < self.pmtu_hi:
            return PMTU_DEFAULT_CEILING  # the route's MTU was not the path's: most likely 1500
        return (self.mds + self.pmtu_hi + 1) // 2

    cdef int maybe_probe_pmtu(self, double now, bint trains, list out) except -1:
        """Send the next probe if the search goes on and one may go now (returns its bytes)."""
        cdef Py_ssize_t size, hdr_end, end
        cdef int64_t pn
        cdef int pn_len
        cdef _Sent rec
        if not self.hs.discarded or self.app_seal is None or self.app.discarded:
            return 0
        if self.paths.bytes_sent < self.pmtu_start:
            self.pmtu_start = 0  # (the path's count started again: a new address)
        if self.paths.bytes_sent - self.pmtu_start < PMTU_START_BYTES:
            return 0
        size = self.pmtu_next()
        if size > SEND_SCRATCH_SIZE - 64 or amplification_room(self.paths) < size:
            return 0
        if not self.recovery.congestion.can_send(size):
            return 0
        self.pmtu_probe_size = size
        if self.sbuf is None:
            self.sbuf = take_scratch(size)
        self.sbuf._size = size
        start_short_packet(self.sbuf, self.app, self.cids.peer_cid, &pn, &pn_len)
        hdr_end = self.sbuf._pos
        end = size - self.app_tag
        rec = new_sent()
        put_frame(self.sbuf, end, rec, FR_PING)
        pad_to(self.sbuf, end)
        data = finish_packet(self.sbuf, self.app_seal, self.app_seal_null, hdr_end, -1, pn, pn_len,
                             NULL)
        self.sbuf._size = self.mds
        self.record_sent(rec, SP_APP, pn, len(data), True, now)
        rec.pmtu_probe = True
        self.pmtu_probe_pn = pn
        self.pmtu_probes_sent += 1
        addr = self.paths.peer_addr
        out.append((data, len(data), addr) if trains else (data, addr))
        return len(data)

    cdef int pmtu_acked(self) except -1:
        cdef Py_ssize_t old = self.mds
        self.pmtu_probe_pn = -1
        if self.pmtu_probe_size > old:
            self.set_datagram_size(self.pmtu_probe_size)
            if self.qlog is not None:
                self.qlog.mtu_updated(self.sset.now, old, self.mds,
                                      self.pmtu_hi - self.mds < PMTU_STEP)
        self.pmtu_probe_size = 0
        self.pmtu_fails = 0
        return 0

    cdef int pmtu_lost(self) except -1:
        self.pmtu_probe_pn = -1
        self.pmtu_fails += 1
        if self.pmtu_fails >= PMTU_MAX_PROBES:
            # too large: the search goes on below it
            self.pmtu_hi = self.pmtu_probe_size - 1
            self.pmtu_failed_sizes += 1
            self.pmtu_probe_size = 0
            self.pmtu_fails = 0
        return 0
