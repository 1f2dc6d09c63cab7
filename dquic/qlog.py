"""qlog traces: one JSON-SEQ file per connection, in the shapes of draft-ietf-quic-qlog.

A ``QlogTrace`` is handed to a connection (endpoints do it when ``qlog_dir`` is configured); the
connection calls its ``packet_sent`` / ``packet_received`` / ``packet_lost`` /
``metrics_updated`` / ``connection_*`` methods with the virtual ``now`` it was given, so traces of
simulated connections carry simulated time. Files are named ``<ODCID hex>_<client|server>.sqlog``
and open in qvis (https://qvis.quictools.info) and other qlog tools. Records are buffered and
written in batches; ``close()`` flushes.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional

__all__ = ["QlogTrace", "frames_to_qlog", "PACKET_TYPE_NAMES"]

QLOG_VERSION = "0.3"
RS = "\x1e"
PACKET_TYPE_NAMES = {0: "initial", 1: "0RTT", 2: "handshake", 3: "retry", 4: "1RTT",
                     5: "version_negotiation"}


def frames_to_qlog(frames: Iterable[Any]) -> List[Dict[str, Any]]:
    """Convert a connection's sent-frame records (tuples) or decoded frame objects to qlog."""
    out: List[Dict[str, Any]] = []
    for f in frames:
        if isinstance(f, tuple):
            kind = f[0]
            if kind == "s":
                out.append({"frame_type": "stream", "stream_id": f[1], "offset": f[2],
                            "length": f[3], "fin": bool(f[4])})
            elif kind == "c":
                out.append({"frame_type": "crypto", "offset": f[2], "length": f[3]})
            elif kind == "a":
                out.append({"frame_type": "ack"})
            elif kind == "g":
                out.append({"frame_type": "datagram"})
            else:
                name = {"md": "max_data", "msd": "max_stream_data", "ms": "max_streams",
                        "rs": "reset_stream", "ss": "stop_sending", "nc": "new_connection_id",
                        "rc": "retire_connection_id", "hd": "handshake_done", "p": "ping"}.get(kind, kind)
                out.append({"frame_type": name})
        else:
            out.append(_frame_object(f))
    return out


def _frame_object(f: Any) -> Dict[str, Any]:
    name = type(f).__name__
    base = name[:-5] if name.endswith("Frame") else name
    snake = "".join("_" + c.lower() if c.isupper() else c for c in base).lstrip("_")
    d: Dict[str, Any] = {"frame_type": snake}
    if snake == "stream":
        d.update(stream_id=f.stream_id, offset=f.offset, length=len(f.data), fin=bool(f.fin))
    elif snake == "ack":
        d["acked_ranges"] = [[a, b - 1] for a, b in f.ranges]
        d["ack_delay"] = f.ack_delay
    elif snake == "crypto":
        d.update(offset=f.offset, length=len(f.data))
    elif snake in ("max_data", "max_streams"):
        d["maximum"] = f.maximum
    elif snake == "max_stream_data":
        d.update(stream_id=f.stream_id, maximum=f.maximum)
    elif snake == "connection_close":
        d.update(error_space="application" if f.application else "transport",
                 error_code=f.error_code, reason=bytes(f.reason).decode("utf-8", "replace"))
    elif snake == "padding":
        d["payload_length"] = getattr(f, "length", 0)
    return d


class QlogTrace:
    """A qlog trace of one connection, written as JSON-SEQ to ``path``."""

    def __init__(self, path: str, *, vantage_point: str, odcid: bytes, title: str = "dquic",
                 flush_every: int = 256) -> None:
        self.path = path
        self._fh = open(path, "w", encoding="utf-8")
        self._pending: List[str] = []
        self._flush_every = flush_every
        self._t0: Optional[float] = None
        header = {
            "qlog_version": QLOG_VERSION,
            "qlog_format": "JSON-SEQ",
            "title": title,
            "trace": {
                "vantage_point": {"name": "dquic", "type": vantage_point},
                "common_fields": {"ODCID": odcid.hex(), "time_format": "relative",
                                  "reference_time": 0.0, "protocol_type": ["QUIC"]},
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
        rec = {"time": round((now - self._t0) * 1000.0, 3), "name": name, "data": data}
        self._pending.append(RS + json.dumps(rec) + "\n")
        if len(self._pending) >= self._flush_every:
            self.flush()

    # events -----------------------------------------------------------------------------
    def connection_started(self, now: float, local: Any, remote: Any) -> None:
        self._event(now, "connectivity:connection_started",
                    {"src_ip": str(local[0]) if local else "", "dst_ip": str(remote[0]),
                     "dst_port": remote[1]})

    def connection_closed(self, now: float, error_code: int, reason: str, by_peer: bool) -> None:
        self._event(now, "connectivity:connection_closed",
                    {"owner": "remote" if by_peer else "local", "error_code": error_code,
                     "reason": reason})
        self.close()

    def packet_sent(self, now: float, packet_type: int, pn: int, size: int, frames: Iterable[Any]) -> None:
        self._event(now, "transport:packet_sent",
                    {"header": {"packet_type": PACKET_TYPE_NAMES.get(packet_type, "unknown"),
                                "packet_number": pn},
                     "raw": {"length": size}, "frames": frames_to_qlog(frames)})

    def packet_received(self, now: float, packet_type: int, pn: int, size: int,
                        frames: Iterable[Any]) -> None:
        self._event(now, "transport:packet_received",
                    {"header": {"packet_type": PACKET_TYPE_NAMES.get(packet_type, "unknown"),
                                "packet_number": pn},
                     "raw": {"length": size}, "frames": frames_to_qlog(frames)})

    def packet_dropped(self, now: float, size: int, trigger: str) -> None:
        self._event(now, "transport:packet_dropped", {"raw": {"length": size}, "trigger": trigger})

    def packet_lost(self, now: float, packet_type: int, pn: int) -> None:
        self._event(now, "recovery:packet_lost",
                    {"header": {"packet_type": PACKET_TYPE_NAMES.get(packet_type, "unknown"),
                                "packet_number": pn}})

    def metrics_updated(self, now: float, *, cwnd: int, bytes_in_flight: int, smoothed_rtt: float,
                        min_rtt: float, latest_rtt: float, rttvar: float) -> None:
        self._event(now, "recovery:metrics_updated",
                    {"congestion_window": cwnd, "bytes_in_flight": bytes_in_flight,
                     "smoothed_rtt": round(smoothed_rtt * 1000, 3),
                     "min_rtt": round(min_rtt * 1000, 3),
                     "latest_rtt": round(latest_rtt * 1000, 3),
                     "rtt_variance": round(rttvar * 1000, 3)})

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
