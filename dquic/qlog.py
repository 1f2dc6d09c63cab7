"""qlog traces: one JSON-SEQ file per connection.

The traces follow qlog 0.3: the main schema of draft-ietf-quic-qlog-main-schema-05 in its
JSON-SEQ form (a header record, then one record per event, each starting with the RS
character) with the QUIC events of draft-ietf-quic-qlog-quic-events-04 (the categories
``connectivity``, ``transport``, ``security`` and ``recovery``). tests/qlog_schema.json is a JSON
Schema of what dquic writes, taken from those drafts' definitions, and the test suite validates
real traces against it.

A ``QlogTrace`` is handed to a connection (endpoints do it when ``qlog_dir`` is configured); the
connection calls its methods with the ``now`` it was given, so traces of simulated connections
carry simulated time. Event times are milliseconds relative to the trace's first event;
``reference_time`` (common_fields) is the wall clock at that moment, in milliseconds since the
Unix epoch. Files are named ``<ODCID hex>_<client|server>.sqlog`` and open in qvis
(https://qvis.quictools.info) and other qlog tools. Records are buffered and written in batches;
``close()`` flushes.

Events: ``connectivity:connection_started``/``connection_closed``,
``transport:packet_sent``/``packet_received``/``packet_dropped`` (with their frames),
``recovery:packet_lost``, ``recovery:metrics_updated`` (the values that changed, after each ACK
and loss-detection timeout), ``recovery:congestion_state_updated`` (the controller's
``congestion_state()`` when it changes, trigger "persistent_congestion" when that collapsed the
window) and ``security:key_updated`` (the 1-RTT keys of both directions when the handshake
installs them, trigger "tls", and at each key update, RFC 9001 §6, with its generation; key
material is never written: ``new`` is left empty). ``connection_closed`` carries the
draft's trigger: "clean", "error", "application", "idle_timeout", "handshake_timeout" or
"stateless_reset".

Sent frames come from the connection's records of what a packet carried, already as qlog
frames (``_Sent.frames_for_trace`` in dquic/_spaces.pyx; an ACK's ranges and delay are
kept only while tracing); received frames are decoded here. A connection without a trace
makes none of these calls (each is behind a ``_qlog is not None`` test).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

__all__ = ["QlogTrace", "frames_to_qlog", "PACKET_TYPE_NAMES", "QLOG_VERSION"]

QLOG_VERSION = "0.3"
RS = "\x1e"
PACKET_TYPE_NAMES = {0: "initial", 1: "0RTT", 2: "handshake", 3: "retry", 4: "1RTT",
                     5: "version_negotiation"}
_UINT32_MAX = 0xFFFFFFFF

# RFC 9000 §20.1 codes with a name in the draft's TransportError
_TRANSPORT_ERRORS = {
    0x00: "no_error", 0x01: "internal_error", 0x02: "connection_refused",
    0x03: "flow_control_error", 0x04: "stream_limit_error", 0x05: "stream_state_error",
    0x06: "final_size_error", 0x07: "frame_encoding_error", 0x08: "transport_parameter_error",
    0x09: "connection_id_limit_error", 0x0A: "protocol_violation", 0x0B: "invalid_token",
    0x0C: "application_error", 0x0D: "crypto_buffer_exceeded", 0x0E: "key_update_error",
    0x0F: "aead_limit_reached", 0x10: "no_viable_path",
}
# packet_dropped triggers of draft-ietf-quic-qlog-quic-events-04
DROP_TRIGGERS = ("internal_error", "rejected", "unsupported", "invalid", "connection_unknown",
                 "decryption_failure", "general")
KEY_TYPES = ("server_initial_secret", "client_initial_secret", "server_handshake_secret",
             "client_handshake_secret", "server_0rtt_secret", "client_0rtt_secret",
             "server_1rtt_secret", "client_1rtt_secret")


def _transport_error(code: int) -> Any:
    """The draft's TransportError name for ``code``, else the number (uint32), else None."""
    name = _TRANSPORT_ERRORS.get(code)
    if name is not None:
        return name
    if 0x100 <= code <= 0x1FF:
        return f"crypto_error_0x{code:x}"
    return code if 0 <= code <= _UINT32_MAX else None


def _ranges(ranges: Iterable[Sequence[int]]) -> List[List[int]]:
    """ACK ranges as the draft's AckRange: [first, last] (inclusive), ascending."""
    pairs = sorted((int(a), int(b)) for a, b in ranges)
    return [[a, b] if b != a else [a] for a, b in pairs]


def frames_to_qlog(frames: Iterable[Any]) -> List[Dict[str, Any]]:
    """Convert decoded frame objects to qlog; frames in qlog form already (dicts, such as a
    connection's records of what it sent) pass through."""
    return [f if isinstance(f, dict) else _frame_object(f) for f in frames]


# frames whose qlog fields are attributes of the same name (MAX_STREAMS and STREAMS_BLOCKED add
# their stream_type); PING and HANDSHAKE_DONE have none
_SAME_NAMED_FIELDS = {
    "ping": (),
    "handshake_done": (),
    "max_data": ("maximum",),
    "max_stream_data": ("stream_id", "maximum"),
    "max_streams": ("maximum",),
    "data_blocked": ("limit",),
    "stream_data_blocked": ("stream_id", "limit"),
    "streams_blocked": ("limit",),
}


def _frame_object(f: Any) -> Dict[str, Any]:
    """A frame decoded by ``dquic._frames``."""
    name = type(f).__name__
    base = name[:-5] if name.endswith("Frame") else name
    snake = "".join("_" + c.lower() if c.isupper() else c for c in base).lstrip("_")
    if snake == "stream":
        d: Dict[str, Any] = {"frame_type": "stream", "stream_id": f.stream_id, "offset": f.offset,
                             "length": len(f.data)}
        if f.fin:
            d["fin"] = True
        return d
    if snake == "ack":
        # the ACK Delay field is in units of the sender's ack_delay_exponent, which the trace
        # does not know: it is left out rather than written wrong
        d = {"frame_type": "ack", "acked_ranges": _ranges((a, b - 1) for a, b in f.ranges)}
        if f.ecn:
            d["ect0"], d["ect1"], d["ce"] = f.ecn
        return d
    if snake == "crypto":
        return {"frame_type": "crypto", "offset": f.offset, "length": len(f.data)}
    if snake == "padding":
        return {"frame_type": "padding", "payload_length": int(getattr(f, "length", 0))}
    fields = _SAME_NAMED_FIELDS.get(snake)
    if fields is not None:
        d = {"frame_type": snake}
        for field in fields:
            d[field] = getattr(f, field)
        if snake in ("max_streams", "streams_blocked"):
            d["stream_type"] = "unidirectional" if f.frame_type & 1 else "bidirectional"
        return d
    if snake == "reset_stream":
        return {"frame_type": "reset_stream", "stream_id": f.stream_id,
                "error_code": _uint32(f.error_code), "final_size": f.final_size}
    if snake == "stop_sending":
        return {"frame_type": "stop_sending", "stream_id": f.stream_id, "error_code": _uint32(f.error_code)}
    if snake == "new_token":
        return {"frame_type": "new_token", "token": {"raw": {"length": len(f.token)}}}
    if snake == "new_connection_id":
        return {"frame_type": "new_connection_id", "sequence_number": f.sequence,
                "retire_prior_to": f.retire_prior_to, "connection_id": bytes(f.connection_id).hex(),
                "stateless_reset_token": bytes(f.stateless_reset_token).hex()}
    if snake == "retire_connection_id":
        return {"frame_type": "retire_connection_id", "sequence_number": f.sequence}
    if snake in ("path_challenge", "path_response"):
        return {"frame_type": snake, "data": bytes(f.data).hex()}
    if snake == "connection_close":
        d = {"frame_type": "connection_close",
             "error_space": "application" if f.application else "transport",
             "error_code_value": f.error_code,
             "reason": bytes(f.reason).decode("utf-8", "replace")}
        code = f.error_code if f.application else _transport_error(f.error_code)
        if code is not None and (not f.application or code <= _UINT32_MAX):
            d["error_code"] = code
        if f.frame_type:
            d["trigger_frame_type"] = f.frame_type
        return d
    if snake == "datagram":
        return {"frame_type": "datagram", "length": len(f.data)}
    return {"frame_type": snake}


def _uint32(code: int) -> int:
    return code if code <= _UINT32_MAX else _UINT32_MAX


def _header(packet_type: int, pn: Optional[int]) -> Dict[str, Any]:
    hdr: Dict[str, Any] = {"packet_type": PACKET_TYPE_NAMES.get(packet_type, "unknown")}
    if pn is not None and pn >= 0:
        hdr["packet_number"] = pn
    return hdr


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class QlogTrace:
    """A qlog trace of one connection, written as JSON-SEQ to ``path``."""

    def __init__(self, path: str, *, vantage_point: str, odcid: bytes, title: str = "dquic",
                 flush_every: int = 256) -> None:
        self.path = path
        self._fh = open(path, "w", encoding="utf-8")
        self._pending: List[str] = []
        self._flush_every = flush_every
        self._t0: Optional[float] = None
        self._cc_state: Optional[str] = None
        self._persistent = 0
        self._metrics: Dict[str, Any] = {}
        self._key_generation = 0
        #: the 1-RTT key generation last written by ``keys_updated`` (-1: none yet)
        self.key_generation = -1
        # the wall clock as the trace starts (its first event follows at once): relative event
        # times count from it
        reference = round(time.time() * 1000.0, 3)
        odcid_hex = bytes(odcid).hex()
        header = {
            "qlog_version": QLOG_VERSION,
            "qlog_format": "JSON-SEQ",
            "title": title,
            "description": "dquic connection trace (draft-ietf-quic-qlog-main-schema-05, "
                           "draft-ietf-quic-qlog-quic-events-04)",
            "trace": {
                "vantage_point": {"name": "dquic", "type": vantage_point},
                "common_fields": {"ODCID": odcid_hex, "group_id": odcid_hex,
                                  "time_format": "relative", "reference_time": reference,
                                  "protocol_type": ["QUIC"]},
            },
        }
        self._fh.write(RS + json.dumps(header) + "\n")
        self.closed = False

    @classmethod
    def for_connection(cls, directory: str, odcid: Optional[bytes], is_client: bool) -> "QlogTrace":
        os.makedirs(directory, exist_ok=True)
        role = "client" if is_client else "server"
        odcid = odcid or b""
        return cls(os.path.join(directory, f"{odcid.hex()}_{role}.sqlog"), vantage_point=role,
                   odcid=odcid)

    def _event(self, now: float, name: str, data: Dict[str, Any]) -> None:
        if self.closed:
            return
        if self._t0 is None:
            self._t0 = now
        rec = {"time": _ms(now - self._t0), "name": name, "data": data}
        self._pending.append(RS + json.dumps(rec) + "\n")
        if len(self._pending) >= self._flush_every:
            self.flush()

    # connectivity -------------------------------------------------------------------------
    def connection_started(self, now: float, local: Any, remote: Any) -> None:
        data: Dict[str, Any] = {"src_ip": str(local[0]) if local else "",
                                "dst_ip": str(remote[0]) if remote else "", "protocol": "QUIC"}
        if remote:
            data["ip_version"] = "v6" if ":" in str(remote[0]) else "v4"
            data["dst_port"] = remote[1]
        if local and len(local) > 1:
            data["src_port"] = local[1]
        self._event(now, "connectivity:connection_started", data)

    def connection_closed(self, now: float, error_code: int, reason: str, by_peer: bool, *,
                          application: bool = False, timeout: bool = False,
                          trigger: Optional[str] = None) -> None:
        """The connection ended: ``error_code`` is a transport error code unless
        ``application``; ``timeout`` marks an idle or handshake timeout. The trigger, unless
        given: "idle_timeout"/"handshake_timeout", "stateless_reset", "application" (an
        application close with an error code), "clean" (code 0) or "error"."""
        data: Dict[str, Any] = {"owner": "remote" if by_peer else "local", "reason": reason}
        if trigger is None:
            if timeout:
                trigger = "handshake_timeout" if "handshake" in reason else "idle_timeout"
            elif reason == "stateless reset":
                trigger = "stateless_reset"
            elif application and error_code:
                trigger = "application"  # closed by the application with its error code
            else:
                trigger = "clean" if error_code == 0 else "error"
        if trigger not in ("idle_timeout", "handshake_timeout", "stateless_reset"):
            # (a timeout or a reset carries no code: no CONNECTION_CLOSE was exchanged)
            if application:
                if 0 <= error_code <= _UINT32_MAX:
                    data["application_code"] = error_code
            else:
                code = _transport_error(error_code)
                if code is not None:
                    data["connection_code"] = code
        data["trigger"] = trigger
        self._event(now, "connectivity:connection_closed", data)
        # written out now; the trace stays open for what the closing period sends (the
        # connection, or the endpoint that forgets it, closes it)
        self.flush()

    # transport ----------------------------------------------------------------------------
    def packet_sent(self, now: float, packet_type: int, pn: int, size: int, frames: Iterable[Any],
                    *, trigger: Optional[str] = None) -> None:
        data: Dict[str, Any] = {"header": _header(packet_type, pn), "raw": {"length": size},
                                "frames": frames_to_qlog(frames)}
        if trigger:
            data["trigger"] = trigger
        self._event(now, "transport:packet_sent", data)

    def packet_received(self, now: float, packet_type: int, pn: int, size: int,
                        frames: Iterable[Any]) -> None:
        self._event(now, "transport:packet_received",
                    {"header": _header(packet_type, pn), "raw": {"length": size},
                     "frames": frames_to_qlog(frames)})

    def packet_dropped(self, now: float, size: int, trigger: str = "general", *,
                       packet_type: Optional[int] = None, pn: Optional[int] = None,
                       reason: Optional[str] = None) -> None:
        """A packet (or datagram) the connection discarded: ``trigger`` is one of
        ``DROP_TRIGGERS`` ("decryption_failure", "invalid", "rejected", "unsupported",
        "connection_unknown", "internal_error", "general"; a duplicate is "rejected" with the
        reason "duplicate"); ``reason`` goes into ``details``."""
        if trigger not in DROP_TRIGGERS:
            reason = reason or trigger
            trigger = "general"
        data: Dict[str, Any] = {"raw": {"length": size}, "trigger": trigger}
        if packet_type is not None:
            data["header"] = _header(packet_type, pn)
        if reason:
            data["details"] = {"reason": reason}
        self._event(now, "transport:packet_dropped", data)

    # recovery -----------------------------------------------------------------------------
    def packet_lost(self, now: float, packet_type: int, pn: int,
                    frames: Optional[Iterable[Any]] = None, *, trigger: Optional[str] = None) -> None:
        data: Dict[str, Any] = {"header": _header(packet_type, pn)}
        if frames is not None:
            data["frames"] = frames_to_qlog(frames)
        if trigger:
            data["trigger"] = trigger  # "reordering_threshold", "time_threshold", "pto_expired"
        self._event(now, "recovery:packet_lost", data)

    def metrics_updated(self, now: float, *, cwnd: int, bytes_in_flight: int, smoothed_rtt: float,
                        min_rtt: float, latest_rtt: float, rttvar: float,
                        ssthresh: Optional[float] = None, pto_count: Optional[int] = None,
                        packets_in_flight: Optional[int] = None,
                        pacing_rate: Optional[float] = None) -> None:
        """The recovery metrics now: RTTs in seconds (written in ms), sizes in bytes,
        ``pacing_rate`` in bits/s. Only the values that changed since the last call are
        written (the draft asks for actual updates), and nothing when none did; ``ssthresh``
        is left out while infinite (before the first loss)."""
        data: Dict[str, Any] = {
            "congestion_window": int(cwnd), "bytes_in_flight": int(bytes_in_flight),
            "smoothed_rtt": _ms(smoothed_rtt), "min_rtt": _ms(min_rtt),
            "latest_rtt": _ms(latest_rtt), "rtt_variance": _ms(rttvar)}
        if ssthresh is not None and ssthresh < 2**64:
            data["ssthresh"] = int(ssthresh)
        if pto_count is not None:
            data["pto_count"] = int(pto_count)
        if packets_in_flight is not None:
            data["packets_in_flight"] = int(packets_in_flight)
        if pacing_rate is not None:
            data["pacing_rate"] = int(pacing_rate)
        last = self._metrics
        changed = {k: v for k, v in data.items() if last.get(k) != v}
        if changed:
            last.update(changed)
            self._event(now, "recovery:metrics_updated", changed)

    def mtu_updated(self, now: float, old: int, new: int, done: bool) -> None:
        """Path MTU discovery raised the datagram size from ``old`` to ``new`` bytes (``done``:
        the search ended): the draft's ``connectivity:mtu_updated``."""
        self._event(now, "connectivity:mtu_updated", {"old": int(old), "new": int(new),
                                                      "done": bool(done)})

    def congestion_state_updated(self, now: float, new: str, *, trigger: Optional[str] = None,
                                 persistent_congestion_events: Optional[int] = None) -> None:
        """The congestion controller's state (``CongestionController.congestion_state()``:
        "slow_start", "congestion_avoidance", "recovery", "application_limited"), written only
        when it changes. ``persistent_congestion_events`` is the controller's count of them: a
        new one is written (trigger "persistent_congestion") even when the name stays."""
        if persistent_congestion_events is not None and persistent_congestion_events > self._persistent:
            self._persistent = persistent_congestion_events
            trigger = trigger or "persistent_congestion"
        elif new == self._cc_state:
            return
        data: Dict[str, Any] = {"new": new}
        if self._cc_state is not None:
            data["old"] = self._cc_state
        if trigger:
            data["trigger"] = trigger  # "persistent_congestion" or "ECN"
        self._cc_state = new
        self._event(now, "recovery:congestion_state_updated", data)

    # security -----------------------------------------------------------------------------
    def key_updated(self, now: float, key_type: str, *, generation: Optional[int] = None,
                    trigger: str = "local_update") -> None:
        """New keys are in use: ``key_type`` one of ``KEY_TYPES``; 1-RTT key updates count
        ``generation`` (by default one more than the last); ``trigger`` "local_update",
        "remote_update" or "tls". The key itself is never written (``new`` stays empty)."""
        data: Dict[str, Any] = {"key_type": key_type, "new": "", "trigger": trigger}
        if key_type.endswith("1rtt_secret"):
            if generation is None:
                self._key_generation += 1
                generation = self._key_generation
            else:
                self._key_generation = generation
            data["generation"] = generation
        self._event(now, "security:key_updated", data)

    def keys_updated(self, now: float, generation: int, trigger: str) -> None:
        """Both directions' 1-RTT keys are at ``generation`` (0: installed by the handshake,
        trigger "tls"; then each key update, "local_update" or "remote_update"): one
        key_updated per direction, written only for a generation not written yet."""
        if generation <= self.key_generation:
            return
        self.key_generation = generation
        for key_type in ("client_1rtt_secret", "server_1rtt_secret"):
            self.key_updated(now, key_type, generation=generation, trigger=trigger)

    # output -------------------------------------------------------------------------------
    def flush(self) -> None:
        if self._pending and not self.closed:
            self._fh.write("".join(self._pending))
            self._pending.clear()
            self._fh.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._fh.close()
