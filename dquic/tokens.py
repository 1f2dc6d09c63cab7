"""Address validation and stateless reset tokens (PROTOCOL.md §17, §18).

* Retry tokens (RFC 9000 §8.1.2 adapted): an AES-256-GCM box under a per-endpoint secret key.
  The plaintext holds the issue time, the client's original destination connection ID and the
  Retry's source connection ID; the client's address is the associated data, so a token only
  validates the address it was issued to, and only for ``lifetime`` seconds. Checking one costs
  one AEAD open and no per-client state.
* The Retry integrity tag (RFC 9001 §5.8 adapted): HMAC-SHA256 over the original destination
  connection ID and the Retry packet, truncated to 16 bytes, under a fixed public key. Like QUIC's,
  it protects against corruption and off-path injection (who does not know the original DCID),
  not against an on-path attacker.
* Stateless reset tokens (RFC 9000 §10.3): HMAC-SHA256(reset key, connection ID)[:16], so an
  endpoint that lost all state can still compute the token of a connection ID it once issued.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import struct
from typing import Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._protection import hmac_sha256

__all__ = ["RetryTokens", "ResetTokens", "retry_integrity_tag", "RETRY_INTEGRITY_KEY"]

RETRY_INTEGRITY_KEY = b"dquic/1 retry integrity"
_TOKEN_VERSION = 1
_NONCE = 12


def retry_integrity_tag(original_dcid: bytes, retry_without_tag: bytes) -> bytes:
    """The 16-byte tag that ends a Retry packet."""
    msg = bytes([len(original_dcid)]) + bytes(original_dcid) + bytes(retry_without_tag)
    return hmac.new(RETRY_INTEGRITY_KEY, msg, "sha256").digest()[:16]


def _addr_bytes(addr: Tuple) -> bytes:
    host, port = addr[0], addr[1]
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:
        packed = str(host).encode("utf-8", "replace")[:64]
    return packed + struct.pack("!H", port & 0xFFFF)


class RetryTokens:
    """Issues and checks Retry tokens bound to a client address."""

    def __init__(self, key: Optional[bytes] = None, lifetime: float = 10.0) -> None:
        self._aead = AESGCM(key or os.urandom(32))
        self.lifetime = lifetime

    def issue(self, addr: Tuple, original_dcid: bytes, retry_scid: bytes, now: float) -> bytes:
        """A token for ``addr`` that remembers the two connection IDs."""
        plain = (struct.pack("!Bd", _TOKEN_VERSION, now) + bytes([len(original_dcid)])
                 + bytes(original_dcid) + bytes([len(retry_scid)]) + bytes(retry_scid))
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, _addr_bytes(addr))

    def validate(self, token: bytes, addr: Tuple, now: float) -> Optional[Tuple[bytes, bytes]]:
        """``(original_dcid, retry_scid)`` if the token is authentic, for ``addr`` and fresh."""
        token = bytes(token)
        if len(token) < _NONCE + 16 + 11 or len(token) > 256:
            return None
        try:
            plain = self._aead.decrypt(token[:_NONCE], token[_NONCE:], _addr_bytes(addr))
        except InvalidTag:
            return None
        version, issued = struct.unpack_from("!Bd", plain)
        if version != _TOKEN_VERSION or not (issued - 1.0 <= now <= issued + self.lifetime):
            return None
        pos = 9
        n = plain[pos]
        odcid = plain[pos + 1:pos + 1 + n]
        pos += 1 + n
        m = plain[pos]
        rscid = plain[pos + 1:pos + 1 + m]
        return odcid, rscid


class ResetTokens:
    """Stateless reset tokens derived from the connection ID and a per-endpoint secret."""

    def __init__(self, key: Optional[bytes] = None) -> None:
        self._key = key or os.urandom(32)

    def __call__(self, cid: bytes) -> bytes:
        return hmac_sha256(self._key, cid)[:16]
