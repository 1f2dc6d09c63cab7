"""Packet protection (RFC 9001 §5 adapted to keys from a Noise handshake), key update
(RFC 9001 §6) and AEAD usage limits (RFC 9001 §6.6).

Key schedule (PROTOCOL.md "Packet protection"): each direction starts from a 32-byte
traffic secret (the Noise ``Split()`` key for that direction). From a secret we derive,
with HKDF-Expand-SHA256 and plain ASCII labels as ``info``:

* ``"dquic key"`` → 32-byte AEAD key (ChaCha20-Poly1305 or AES-256-GCM),
* ``"dquic iv"``  → 12-byte IV,
* ``"dquic hp"``  → 32-byte header-protection key (derived once; never updated),
* ``"dquic ku"``  → the next generation's secret (key update).

Nonce = IV XOR the 62-bit packet number left-padded to 12 bytes (RFC 9001 §5.3); the
associated data is the unprotected header through the packet number. Header protection
(RFC 9001 §5.4) samples 16 bytes starting 4 bytes after the packet-number offset and masks
the low 4 (long header) or 5 (short header) bits of byte 0 and the packet-number bytes,
with AES-256-ECB for AES-GCM suites and ChaCha20 (sample = counter || nonce) for
ChaCha20-Poly1305 suites.

``OneRttKeys`` owns both directions because a key update is a connection-wide event: the
peer flipping the key-phase bit makes us update our sending keys too. Hand
``keys.sender`` to the packet builder and ``keys.receiver`` to the packet parser.
``NullProtection`` has the same interface with no cryptography (handshake packets, tests).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from dquic.errors import ErrorCode, ProtocolError

__all__ = [
    "DecryptionFailed",
    "PacketProtection",
    "NullProtection",
    "OneRttKeys",
    "derive_packet_keys",
    "next_secret",
    "decode_packet_number",
    "TAG_SIZE",
    "SAMPLE_SIZE",
    "KEY_PHASE_BIT",
    "CONFIDENTIALITY_LIMITS",
    "INTEGRITY_LIMITS",
    "DEFAULT_KEY_UPDATE_INTERVAL",
]

TAG_SIZE = 16
SAMPLE_SIZE = 16
KEY_PHASE_BIT = 0x04
_PN_MAX = (1 << 62) - 1
_ZERO5 = bytes(5)

#: RFC 9001 §6.6: packets that may be protected with one key (None: no practical limit).
CONFIDENTIALITY_LIMITS = {"AESGCM": 1 << 23, "ChaChaPoly": None}
#: RFC 9001 §6.6: packets failing authentication tolerated over the connection lifetime.
INTEGRITY_LIMITS = {"AESGCM": 1 << 52, "ChaChaPoly": 1 << 36}
DEFAULT_KEY_UPDATE_INTERVAL = 1 << 23

_AEADS = {"ChaChaPoly": ChaCha20Poly1305, "AESGCM": AESGCM}


class DecryptionFailed(ProtocolError):
    """A packet did not authenticate (or was too short to try). Drop it silently."""

    def __init__(self, message: str = "packet decryption failed") -> None:
        super().__init__(message, ErrorCode.PROTOCOL_VIOLATION)


# ----------------------------------------------------------------------------- helpers


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, label).derive(secret)


def derive_packet_keys(secret: bytes) -> Tuple[bytes, bytes, bytes]:
    """(aead key 32 bytes, iv 12 bytes, header-protection key 32 bytes) for a traffic secret."""
    if len(secret) != 32:
        raise ValueError("traffic secrets are 32 bytes")
    return _expand(secret, b"dquic key", 32), _expand(secret, b"dquic iv", 12), _expand(secret, b"dquic hp", 32)


def next_secret(secret: bytes) -> bytes:
    """The next key-update generation's traffic secret (RFC 9001 §6.1, label "dquic ku")."""
    return _expand(secret, b"dquic ku", 32)


def decode_packet_number(truncated: int, pn_nbits: int, expected: int) -> int:
    """RFC 9000 Appendix A.3: recover a full packet number.

    ``expected`` is the largest packet number received so far in this space plus one.
    """
    win = 1 << pn_nbits
    hwin = win >> 1
    mask = win - 1
    candidate = (expected & ~mask) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


class _HeaderProtection:
    """Computes the header-protection mask from a 16-byte sample (RFC 9001 §5.4).

    ``mask(sample)`` returns at least 5 bytes; only the first 5 are used.
    """

    __slots__ = ("_ctx", "_key", "mask")

    def __init__(self, cipher: str, hp_key: bytes) -> None:
        self._key = hp_key
        if cipher == "AESGCM":
            # §5.4.3: AES in ECB mode over the sample; one long-lived context suffices
            # because ECB has no chaining state between blocks.
            self._ctx = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
            self.mask = self._ctx.update
        else:
            # §5.4.4: counter = sample[0:4] (little endian), nonce = sample[4:16]; this is
            # exactly the 16-byte "nonce" layout cryptography's ChaCha20 takes. Re-seeding
            # one context (cryptography >= 43) is ~4x cheaper than building a new one.
            self._ctx = Cipher(algorithms.ChaCha20(hp_key, bytes(16)), None).encryptor()
            if hasattr(self._ctx, "reset_nonce"):
                self.mask = self._chacha_mask_reset
            else:  # pragma: no cover - older cryptography
                self.mask = self._chacha_mask_new

    def _chacha_mask_reset(self, sample: bytes) -> bytes:
        ctx = self._ctx
        ctx.reset_nonce(sample)
        return ctx.update(_ZERO5)

    def _chacha_mask_new(self, sample: bytes) -> bytes:
        return Cipher(algorithms.ChaCha20(self._key, sample), None).encryptor().update(_ZERO5)


class _Keys:
    """AEAD state for one direction and one key-update generation."""

    __slots__ = ("secret", "aead", "iv")

    def __init__(self, cipher: str, secret: bytes) -> None:
        key, iv, _ = derive_packet_keys(secret)
        self.secret = secret
        self.aead = _AEADS[cipher](key)
        self.iv = int.from_bytes(iv, "big")


# ----------------------------------------------------------------------------- views


class PacketProtection:
    """One direction of 1-RTT protection, a view onto a shared ``OneRttKeys``.

    The sending view offers ``encrypt_packet``; the receiving view ``decrypt_packet``.
    Both expose ``tag_size`` (16: reserve this many bytes after the payload when sizing
    packets and long-header Length fields) and ``keys`` (the shared ``OneRttKeys``).
    """

    __slots__ = ("keys", "sending", "tag_size")

    def __init__(self, keys: "OneRttKeys", sending: bool) -> None:
        self.keys = keys
        self.sending = sending
        self.tag_size = TAG_SIZE

    @property
    def key_phase(self) -> int:
        return self.keys.key_phase

    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        """Protect one packet; returns header (with header protection) + ciphertext + tag.

        ``plain_header`` ends with the truncated packet number, whose length is taken from
        the low 2 bits of byte 0. For short headers the key-phase bit is set here. The
        truncated packet number plus payload must be at least 4 bytes so a full sample
        exists (RFC 9001 §5.4.2): pad the payload (PADDING frames) if needed.
        """
        if not self.sending:
            raise TypeError("this is the receiving half; use keys.sender")
        return self.keys._seal(plain_header, plain_payload, packet_number)

    def decrypt_packet(
        self, packet: Union[bytes, bytearray, memoryview], pn_offset: int, expected_packet_number: int
    ) -> Tuple[bytes, bytes, int]:
        """Remove protection from one packet.

        ``packet`` is exactly one packet (for long headers, cut at its Length field);
        ``pn_offset`` is where the packet number starts; ``expected_packet_number`` is the
        largest packet number received so far in this space plus one (RFC 9000 A.3).
        Returns (unprotected header incl. packet number, payload, full packet number).
        Raises ``DecryptionFailed`` (drop the packet) or, once the integrity limit is
        exceeded, ``ProtocolError`` with ``AEAD_LIMIT_REACHED`` (close the connection).
        """
        if self.sending:
            raise TypeError("this is the sending half; use keys.receiver")
        return self.keys._open(packet, pn_offset, expected_packet_number)


class OneRttKeys:
    """Both directions of 1-RTT packet protection with key update (RFC 9001 §6).

    Create once the handshake completes (``dquic.handshake`` does it) and use
    ``sender``/``receiver``. Key updates:

    * we initiate automatically once ``key_update_interval`` packets were sealed with the
      current key (for AES-GCM never later than its confidentiality limit), or on
      ``update_keys()``; allowed only when ``can_update`` (a packet from the peer has
      authenticated in the current phase, i.e. the peer has the current keys);
    * a peer-initiated update is detected when a packet with the other phase bit and a
      packet number above those seen in the current phase authenticates with the next
      generation's keys; our sending keys then update too;
    * after any update the previous receive keys stay usable for reordered packets until
      the connection calls ``discard_old_keys()`` (RFC 9001 §6.5 suggests 3*PTO after the
      update). ``has_old_keys`` says whether that timer is needed.
    """

    def __init__(
        self,
        send_secret: bytes,
        recv_secret: bytes,
        cipher: str = "ChaChaPoly",
        *,
        key_update_interval: int = DEFAULT_KEY_UPDATE_INTERVAL,
        confidentiality_limit: Optional[int] = -1,
        integrity_limit: Optional[int] = None,
    ) -> None:
        if cipher not in _AEADS:
            raise ValueError("unknown cipher %r" % cipher)
        if key_update_interval < 1:
            raise ValueError("key_update_interval must be positive")
        self.cipher = cipher
        if confidentiality_limit == -1:
            confidentiality_limit = CONFIDENTIALITY_LIMITS[cipher]
        self.confidentiality_limit = confidentiality_limit
        self.integrity_limit = INTEGRITY_LIMITS[cipher] if integrity_limit is None else integrity_limit
        if confidentiality_limit is not None:
            key_update_interval = min(key_update_interval, confidentiality_limit)
        self.key_update_interval = key_update_interval

        _, _, send_hp = derive_packet_keys(send_secret)
        _, _, recv_hp = derive_packet_keys(recv_secret)
        self._hp_send = _HeaderProtection(cipher, send_hp)
        self._hp_recv = _HeaderProtection(cipher, recv_hp)
        self._send = _Keys(cipher, bytes(send_secret))
        self._recv = _Keys(cipher, bytes(recv_secret))
        self._prev_recv: Optional[_Keys] = None
        # Precomputed so that trying the next generation costs the same as any other
        # decryption (RFC 9001 §6.3, timing side channels).
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret))
        self._recv_first_pn: Optional[int] = None  # lowest pn authenticated in this phase

        self.key_phase = 0
        self.generation = 0
        self.key_updates = 0
        self.packets_sent_in_phase = 0
        self.packets_received_in_phase = 0
        self.failed_decryptions = 0
        self.integrity_limit_reached = False
        self.sender = PacketProtection(self, True)
        self.receiver = PacketProtection(self, False)

    # ------------------------------------------------------------------ key update
    @property
    def can_update(self) -> bool:
        """True when we may initiate a key update (RFC 9001 §6.1 precondition, simplified:
        the peer has already sent a packet that authenticated with the current keys)."""
        return self._recv_first_pn is not None

    @property
    def has_old_keys(self) -> bool:
        """True while previous-generation receive keys are retained."""
        return self._prev_recv is not None

    def update_keys(self) -> None:
        """Initiate a key update now. Raises ``RuntimeError`` if ``can_update`` is false."""
        if not self.can_update:
            raise RuntimeError("cannot initiate a key update before the peer confirms the current keys")
        self._rotate()

    def _rotate(self) -> None:
        cipher = self.cipher
        self._send = _Keys(cipher, next_secret(self._send.secret))
        self._prev_recv = self._recv
        self._recv = self._next_recv
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret))
        self._recv_first_pn = None
        self.key_phase ^= 1
        self.generation += 1
        self.key_updates += 1
        self.packets_sent_in_phase = 0
        self.packets_received_in_phase = 0

    def discard_old_keys(self) -> None:
        """Drop the previous generation's receive keys (call ~3*PTO after an update)."""
        self._prev_recv = None

    # ------------------------------------------------------------------ sealing
    def _seal(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        if self.packets_sent_in_phase >= self.key_update_interval and self.can_update:
            self._rotate()
        limit = self.confidentiality_limit
        if limit is not None and self.packets_sent_in_phase >= limit:
            raise ProtocolError("confidentiality limit reached without a key update", ErrorCode.AEAD_LIMIT_REACHED)
        hdr = bytearray(plain_header)
        if not hdr:
            raise ValueError("empty header")
        first = hdr[0]
        pn_len = (first & 0x03) + 1
        pn_offset = len(hdr) - pn_len
        if pn_offset < 1:
            raise ValueError("header shorter than its packet number")
        if len(plain_payload) + pn_len < 4:
            raise ValueError("payload too short for a header-protection sample; pad it")
        if int.from_bytes(hdr[pn_offset:], "big") != packet_number & ((1 << (8 * pn_len)) - 1):
            raise ValueError("header packet number does not match packet_number")
        long_header = first & 0x80
        if not long_header:
            first = (first & ~KEY_PHASE_BIT) | (self.key_phase << 2)
            hdr[0] = first
        keys = self._send
        nonce = (keys.iv ^ packet_number).to_bytes(12, "big")
        ct = keys.aead.encrypt(nonce, plain_payload, bytes(hdr))
        self.packets_sent_in_phase += 1
        s = 4 - pn_len
        mask = self._hp_send.mask(ct[s:s + SAMPLE_SIZE])
        hdr[0] = first ^ (mask[0] & (0x0F if long_header else 0x1F))
        for i in range(pn_len):
            hdr[pn_offset + i] ^= mask[1 + i]
        hdr += ct
        return bytes(hdr)

    # ------------------------------------------------------------------ opening
    def _fail(self) -> DecryptionFailed:
        self.failed_decryptions += 1
        if self.failed_decryptions > self.integrity_limit:
            self.integrity_limit_reached = True
            return ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        return DecryptionFailed()

    def _open(self, packet, pn_offset: int, expected: int) -> Tuple[bytes, bytes, int]:
        if self.integrity_limit_reached:
            raise ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        try:
            data = bytes(packet)
        except TypeError:
            raise DecryptionFailed("not a bytes-like packet") from None
        if type(pn_offset) is not int or pn_offset < 1 or len(data) < pn_offset + 4 + SAMPLE_SIZE:
            raise DecryptionFailed("packet too short")
        mask = self._hp_recv.mask(data[pn_offset + 4:pn_offset + 4 + SAMPLE_SIZE])
        first = data[0]
        long_header = first & 0x80
        first ^= mask[0] & (0x0F if long_header else 0x1F)
        pn_len = (first & 0x03) + 1
        pn_end = pn_offset + pn_len
        hdr = bytearray(data[:pn_end])
        hdr[0] = first
        truncated = 0
        for i in range(pn_len):
            b = hdr[pn_offset + i] ^ mask[1 + i]
            hdr[pn_offset + i] = b
            truncated = (truncated << 8) | b
        if not 0 <= expected <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        pn = decode_packet_number(truncated, pn_len * 8, expected)
        if pn > _PN_MAX:
            raise DecryptionFailed("packet number out of range")

        # Choose the key generation (RFC 9001 §6.3, §6.5).
        which = 0  # 0 current, -1 previous, 1 next
        keys = self._recv
        if not long_header and ((first & KEY_PHASE_BIT) >> 2) != self.key_phase:
            first_pn = self._recv_first_pn
            if self._prev_recv is not None and (first_pn is None or pn < first_pn):
                keys, which = self._prev_recv, -1
            else:
                keys, which = self._next_recv, 1
        nonce = (keys.iv ^ pn).to_bytes(12, "big")
        try:
            payload = keys.aead.decrypt(nonce, data[pn_end:], bytes(hdr))
        except InvalidTag:
            raise self._fail() from None
        if which == 1:
            # The peer initiated a key update; follow it (RFC 9001 §6.2).
            self._rotate()
        if which >= 0:
            if self._recv_first_pn is None or pn < self._recv_first_pn:
                self._recv_first_pn = pn
            self.packets_received_in_phase += 1
        return bytes(hdr), payload, pn


class NullProtection:
    """The PacketProtection interface without cryptography (tag_size 0).

    ``encrypt_packet`` returns header + payload unchanged; ``decrypt_packet`` reads the
    packet-number length from byte 0 and decodes the full packet number.
    """

    tag_size = 0
    key_phase = 0
    keys = None

    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        """Return ``plain_header + plain_payload`` (after checking the header is sane)."""
        if not plain_header:
            raise ValueError("empty header")
        pn_len = (plain_header[0] & 3) + 1
        if len(plain_header) < pn_len + 1:
            raise ValueError("header shorter than its packet number")
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        if int.from_bytes(plain_header[-pn_len:], "big") != packet_number & ((1 << (8 * pn_len)) - 1):
            raise ValueError("header packet number does not match packet_number")
        return bytes(plain_header) + bytes(plain_payload)

    def decrypt_packet(
        self, packet: Union[bytes, bytearray, memoryview], pn_offset: int, expected_packet_number: int
    ) -> Tuple[bytes, bytes, int]:
        """Split an unprotected packet into (header incl. packet number, payload, full pn)."""
        try:
            data = bytes(packet)
        except TypeError:
            raise DecryptionFailed("not a bytes-like packet") from None
        if type(pn_offset) is not int or pn_offset < 1 or len(data) < pn_offset + 1:
            raise DecryptionFailed("packet too short")
        pn_len = (data[0] & 3) + 1
        pn_end = pn_offset + pn_len
        if len(data) < pn_end:
            raise DecryptionFailed("packet too short")
        if not 0 <= expected_packet_number <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        truncated = int.from_bytes(data[pn_offset:pn_end], "big")
        pn = decode_packet_number(truncated, pn_len * 8, expected_packet_number)
        if pn > _PN_MAX:
            raise DecryptionFailed("packet number out of range")
        return data[:pn_end], data[pn_end:], pn
