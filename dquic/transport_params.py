"""Transport parameters: the limits each side announces in the handshake (PROTOCOL.md §12.2).

Encoded as a sequence of ``(id varint, length varint, value)`` entries as RFC 9000 §18; integer
values are varints. Unknown ids are ignored, duplicates and malformed values are a
TRANSPORT_PARAMETER_ERROR.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Union

from ._codec import decode_varint, encode_varint
from .errors import ErrorCode, ProtocolError

__all__ = ["TransportParameters"]

# id -> (attribute, kind); kind "int" is a varint, "bytes" raw, "flag" zero-length
_PARAMS = {
    0x00: ("original_destination_connection_id", "bytes"),
    0x01: ("max_idle_timeout", "int"),  # milliseconds
    0x02: ("stateless_reset_token", "bytes"),
    0x03: ("max_udp_payload_size", "int"),
    0x04: ("initial_max_data", "int"),
    0x05: ("initial_max_stream_data", "int"),
    0x08: ("initial_max_streams", "int"),
    0x0A: ("ack_delay_exponent", "int"),
    0x0B: ("max_ack_delay", "int"),  # milliseconds
    0x0C: ("disable_active_migration", "flag"),
    0x0E: ("active_connection_id_limit", "int"),
    0x0F: ("initial_source_connection_id", "bytes"),
    0x10: ("retry_source_connection_id", "bytes"),
    0x20: ("max_datagram_frame_size", "int"),
}
_BY_NAME = {name: (pid, kind) for pid, (name, kind) in _PARAMS.items()}
MAX_ENCODED_SIZE = 1024


@dataclass
class TransportParameters:
    original_destination_connection_id: Optional[bytes] = None
    max_idle_timeout: int = 0
    stateless_reset_token: Optional[bytes] = None
    max_udp_payload_size: int = 65527
    initial_max_data: int = 0
    initial_max_stream_data: int = 0
    initial_max_streams: int = 0
    ack_delay_exponent: int = 3
    max_ack_delay: int = 25
    disable_active_migration: bool = False
    active_connection_id_limit: int = 2
    initial_source_connection_id: Optional[bytes] = None
    retry_source_connection_id: Optional[bytes] = None
    max_datagram_frame_size: int = 0

    def encode(self) -> bytes:
        """Serialise; fields at their default value are omitted.

        Entries follow the field order of this class (the order is part of the encoding
        every peer and test sees, so keep it).
        """
        out: List[bytes] = []
        append = out.append
        attrs = self.__dict__
        for name, default, prefix, kind in _ENCODE_TABLE:
            value = attrs[name]
            if value == default:
                continue
            if kind is _INT:
                body = encode_varint(value)
            elif kind is _FLAG:
                body = b""
            else:
                body = bytes(value)
            append(prefix)
            n = len(body)
            append(_SMALL_VARINTS[n] if n < 64 else encode_varint(n))
            append(body)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "TransportParameters":
        """Parse; raises ProtocolError(TRANSPORT_PARAMETER_ERROR) on any fault."""
        err = ErrorCode.TRANSPORT_PARAMETER_ERROR
        end = len(data)
        if end > MAX_ENCODED_SIZE:
            raise ProtocolError("transport parameters too long", err)
        values = {}  # attribute -> value for the parameters we know
        unknown = None  # ids of unknown parameters seen, for duplicate detection
        pos = 0
        try:
            while pos < end:
                # Ids and lengths below 64 are one-byte varints (RFC 9000 §16): read
                # those inline, anything else through the general decoder.
                pid = data[pos]
                if pid < 0x40:
                    pos += 1
                else:
                    pid, pos = decode_varint(data, pos)
                if pos < end and data[pos] < 0x40:
                    length = data[pos]
                    pos += 1
                else:
                    length, pos = decode_varint(data, pos)
                stop = pos + length
                if stop > end:
                    raise ProtocolError("transport parameter length past the end", err)
                entry = _DECODE_TABLE.get(pid)
                if entry is None:
                    # Unknown parameters are ignored (RFC 9000 §7.4.2), but not repeated.
                    if unknown is None:
                        unknown = set()
                    elif pid in unknown:
                        raise ProtocolError(f"duplicate transport parameter 0x{pid:x}", err)
                    unknown.add(pid)
                    pos = stop
                    continue
                name, kind = entry
                if name in values:
                    raise ProtocolError(f"duplicate transport parameter 0x{pid:x}", err)
                value: Union[int, bool, bytes]
                if kind is _INT:
                    if length == 1 and data[pos] < 0x40:
                        value = data[pos]
                    else:
                        # The varint must fill the value exactly (a longer one runs past
                        # ``stop``, an empty value reads the next entry or the end).
                        value, used = decode_varint(data, pos)
                        if used != stop:
                            raise ProtocolError(f"bad integer for transport parameter {name}", err)
                elif kind is _FLAG:
                    if length:
                        raise ProtocolError(f"transport parameter {name} must be empty", err)
                    value = True
                else:
                    value = bytes(data[pos:stop])
                values[name] = value
                pos = stop
        except ProtocolError as exc:
            raise ProtocolError(str(exc), err) from None
        # Every field has a default: fill the instance's attributes directly.
        params = cls.__new__(cls)
        attrs = params.__dict__
        attrs.update(_DEFAULTS)
        attrs.update(values)
        params._check()
        return params

    def _check(self) -> None:
        err = ErrorCode.TRANSPORT_PARAMETER_ERROR
        if self.max_udp_payload_size < 1200:
            raise ProtocolError("max_udp_payload_size below 1200", err)
        if self.ack_delay_exponent > 20:
            raise ProtocolError("ack_delay_exponent above 20", err)
        if self.max_ack_delay >= 1 << 14:
            raise ProtocolError("max_ack_delay too large", err)
        if self.active_connection_id_limit < 2:
            raise ProtocolError("active_connection_id_limit below 2", err)
        if self.initial_max_streams > 1 << 60:
            raise ProtocolError("initial_max_streams too large", err)
        if self.stateless_reset_token is not None and len(self.stateless_reset_token) != 16:
            raise ProtocolError("stateless_reset_token must be 16 bytes", err)
        for name in ("original_destination_connection_id", "initial_source_connection_id",
                     "retry_source_connection_id"):
            value = getattr(self, name)
            if value is not None and len(value) > 20:
                raise ProtocolError(f"{name} longer than 20 bytes", err)

    def as_dict(self) -> Dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_INT = "int"
_FLAG = "flag"
_SMALL_VARINTS = [bytes([n]) for n in range(64)]
# (attribute, default, encoded id, kind) in field order, for encode().
_ENCODE_TABLE = tuple(
    (f.name, f.default, encode_varint(_BY_NAME[f.name][0]),
     {"int": _INT, "flag": _FLAG}.get(_BY_NAME[f.name][1], "bytes"))
    for f in fields(TransportParameters)
)
# id -> (attribute, kind) with the kinds above, for decode().
_DECODE_TABLE = {pid: (name, {"int": _INT, "flag": _FLAG}.get(kind, "bytes"))
                 for pid, (name, kind) in _PARAMS.items()}
# attribute -> default value: what decode() starts from.
_DEFAULTS = {f.name: f.default for f in fields(TransportParameters)}
