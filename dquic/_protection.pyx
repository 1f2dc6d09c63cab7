# cython: language_level=3
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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

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
cdef enum:
    _TAG = 16
    _SAMPLE = 16
    _KP = 0x04
cdef int64_t _PN_MAX = (<int64_t>1 << 62) - 1
cdef bytes _ZERO5 = bytes(5)

#: RFC 9001 §6.6: packets that may be protected with one key (None: no practical limit).
CONFIDENTIALITY_LIMITS = {"AESGCM": 1 << 23, "ChaChaPoly": None}
#: RFC 9001 §6.6: packets failing authentication tolerated over the connection lifetime.
INTEGRITY_LIMITS = {"AESGCM": 1 << 52, "ChaChaPoly": 1 << 36}
DEFAULT_KEY_UPDATE_INTERVAL = 1 << 23

_AEADS = {"ChaChaPoly": ChaCha20Poly1305, "AESGCM": AESGCM}


class DecryptionFailed(ProtocolError):
    """A packet did not authenticate (or was too short to try). Drop it silently."""

    def __init__(self, message="packet decryption failed"):
        super().__init__(message, ErrorCode.PROTOCOL_VIOLATION)


# ----------------------------------------------------------------------------- helpers


def _expand(secret, label, length):
    return HKDFExpand(hashes.SHA256(), length, label).derive(secret)


def derive_packet_keys(secret):
    """(aead key 32 bytes, iv 12 bytes, header-protection key 32 bytes) for a traffic secret."""
    if len(secret) != 32:
        raise ValueError("traffic secrets are 32 bytes")
    secret = bytes(secret)
    return _expand(secret, b"dquic key", 32), _expand(secret, b"dquic iv", 12), _expand(secret, b"dquic hp", 32)


def next_secret(secret):
    """The next key-update generation's traffic secret (RFC 9001 §6.1, label "dquic ku")."""
    return _expand(bytes(secret), b"dquic ku", 32)


cdef inline int64_t _decode_pn(int64_t truncated, int pn_nbits, int64_t expected):
    # RFC 9000 Appendix A.3
    cdef int64_t win = (<int64_t>1) << pn_nbits
    cdef int64_t hwin = win >> 1
    cdef int64_t mask = win - 1
    cdef int64_t candidate = (expected & ~mask) | truncated
    if candidate <= expected - hwin and candidate < ((<int64_t>1) << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def decode_packet_number(truncated, pn_nbits, expected):
    """RFC 9000 Appendix A.3: recover a full packet number.

    ``expected`` is the largest packet number received so far in this space plus one.
    """
    if not (pn_nbits in (8, 16, 24, 32) and 0 <= truncated < (1 << pn_nbits) and 0 <= expected <= (1 << 62)):
        raise ValueError("packet number arguments out of range")
    return _decode_pn(truncated, pn_nbits, expected)


cdef class _HeaderProtection:
    """Computes the header-protection mask from a 16-byte sample (RFC 9001 §5.4).

    ``mask(sample)`` returns at least 5 bytes; only the first 5 are used.
    """


    def __init__(self, cipher, hp_key):
        self._key = bytes(hp_key)
        if cipher == "AESGCM":
            # §5.4.3: AES in ECB mode over the sample; one long-lived context suffices
            # because ECB has no chaining state between blocks.
            self._chacha = False
            self._ctx = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()
        else:
            # §5.4.4: counter = sample[0:4] (little endian), nonce = sample[4:16]; this is
            # exactly the 16-byte "nonce" layout cryptography's ChaCha20 takes. Re-seeding
            # one context (cryptography >= 43) is ~4x cheaper than building a new one.
            self._chacha = True
            self._ctx = Cipher(algorithms.ChaCha20(self._key, bytes(16)), None).encryptor()
            self._reset = hasattr(self._ctx, "reset_nonce")

    cpdef bytes mask(self, sample):
        if not self._chacha:
            return self._ctx.update(sample)
        if self._reset:
            self._ctx.reset_nonce(sample)
            return self._ctx.update(_ZERO5)
        return Cipher(algorithms.ChaCha20(self._key, sample), None).encryptor().update(_ZERO5)


cdef class _Keys:
    """AEAD state for one direction and one key-update generation."""


    def __init__(self, cipher, secret):
        key, iv, _ = derive_packet_keys(secret)
        self.secret = bytes(secret)
        self.aead = _AEADS[cipher](key)
        memcpy(self.iv, <char*>iv, 12)

    @staticmethod
    def from_key_iv(cipher, key, iv):
        """Keys from raw material instead of a secret (for published test vectors)."""
        cdef _Keys k = _Keys.__new__(_Keys)
        k.secret = b""
        k.aead = _AEADS[cipher](bytes(key))
        iv = bytes(iv)
        if len(iv) != 12:
            raise ValueError("iv is 12 bytes")
        memcpy(k.iv, <char*>iv, 12)
        return k

    cdef bytes nonce(self, uint64_t pn):
        # RFC 9001 §5.3: iv XOR the packet number left-padded to 12 bytes.
        cdef unsigned char n[12]
        cdef int i
        memcpy(n, self.iv, 12)
        for i in range(8):
            n[11 - i] ^= <unsigned char>((pn >> (8 * i)) & 0xFF)
        return PyBytes_FromStringAndSize(<char*>n, 12)


# ----------------------------------------------------------------------------- views


cdef class PacketProtection:
    """One direction of 1-RTT protection, a view onto a shared ``OneRttKeys``.

    The sending view offers ``encrypt_packet``; the receiving view ``decrypt_packet``.
    Both expose ``tag_size`` (16: reserve this many bytes after the payload when sizing
    packets and long-header Length fields) and ``keys`` (the shared ``OneRttKeys``).
    """


    def __init__(self, OneRttKeys keys, bint sending):
        self.keys = keys
        self.sending = sending
        self.tag_size = _TAG

    @property
    def key_phase(self):
        return self.keys.key_phase

    def encrypt_packet(self, plain_header, plain_payload, packet_number):
        """Protect one packet; returns header (with header protection) + ciphertext + tag.

        ``plain_header`` ends with the truncated packet number, whose length is taken from
        the low 2 bits of byte 0. For short headers the key-phase bit is set here. The
        truncated packet number plus payload must be at least 4 bytes so a full sample
        exists (RFC 9001 §5.4.2): pad the payload (PADDING frames) if needed.
        """
        if not self.sending:
            raise TypeError("this is the receiving half; use keys.sender")
        return self.keys._seal(plain_header, plain_payload, packet_number)

    def decrypt_packet(self, packet, pn_offset, expected_packet_number):
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

    def request_key_update(self):
        """Initiate a key update now (``OneRttKeys.update_keys``)."""
        self.keys.update_keys()

    def discard_old_keys(self):
        """Drop retained previous-generation receive keys (``OneRttKeys.discard_old_keys``)."""
        self.keys.discard_old_keys()


cdef class OneRttKeys:
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


    def __init__(self, send_secret, recv_secret, cipher="ChaChaPoly", *,
                 key_update_interval=DEFAULT_KEY_UPDATE_INTERVAL, confidentiality_limit=-1,
                 integrity_limit=None):
        if cipher not in _AEADS:
            raise ValueError("unknown cipher %r" % (cipher,))
        if key_update_interval < 1:
            raise ValueError("key_update_interval must be positive")
        self.cipher = cipher
        if confidentiality_limit == -1:
            confidentiality_limit = CONFIDENTIALITY_LIMITS[cipher]
        self.confidentiality_limit = confidentiality_limit
        self._conf_limit = -1 if confidentiality_limit is None else confidentiality_limit
        self.integrity_limit = INTEGRITY_LIMITS[cipher] if integrity_limit is None else integrity_limit
        if confidentiality_limit is not None:
            key_update_interval = min(key_update_interval, confidentiality_limit)
        self.key_update_interval = key_update_interval

        _, _, send_hp = derive_packet_keys(send_secret)
        _, _, recv_hp = derive_packet_keys(recv_secret)
        self._hp_send = _HeaderProtection(cipher, send_hp)
        self._hp_recv = _HeaderProtection(cipher, recv_hp)
        self._send = _Keys(cipher, send_secret)
        self._recv = _Keys(cipher, recv_secret)
        self._prev_recv = None
        # Precomputed so that trying the next generation costs the same as any other
        # decryption (RFC 9001 §6.3, timing side channels).
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret))
        self._recv_first_pn = -1
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
    def can_update(self):
        """True when we may initiate a key update (RFC 9001 §6.1 precondition, simplified:
        the peer has already sent a packet that authenticated with the current keys)."""
        return self._recv_first_pn >= 0

    @property
    def has_old_keys(self):
        """True while previous-generation receive keys are retained."""
        return self._prev_recv is not None

    def update_keys(self):
        """Initiate a key update now. Raises ``RuntimeError`` if ``can_update`` is false."""
        if self._recv_first_pn < 0:
            raise RuntimeError("cannot initiate a key update before the peer confirms the current keys")
        self._rotate()

    cdef _rotate(self):
        cipher = self.cipher
        self._send = _Keys(cipher, next_secret(self._send.secret))
        self._prev_recv = self._recv
        self._recv = self._next_recv
        self._next_recv = _Keys(cipher, next_secret(self._recv.secret))
        self._recv_first_pn = -1
        self.key_phase ^= 1
        self.generation += 1
        self.key_updates += 1
        self.packets_sent_in_phase = 0
        self.packets_received_in_phase = 0

    def discard_old_keys(self):
        """Drop the previous generation's receive keys (call ~3*PTO after an update)."""
        self._prev_recv = None

    # ------------------------------------------------------------------ sealing
    cdef bytes _seal(self, plain_header, plain_payload, packet_number):
        if not 0 <= packet_number <= _PN_MAX:
            raise ValueError("packet number out of range")
        cdef uint64_t pn = packet_number
        if self.packets_sent_in_phase >= self.key_update_interval and self._recv_first_pn >= 0:
            self._rotate()
        if self._conf_limit >= 0 and self.packets_sent_in_phase >= self._conf_limit:
            raise ProtocolError("confidentiality limit reached without a key update", ErrorCode.AEAD_LIMIT_REACHED)
        cdef bytes hb = plain_header if type(plain_header) is bytes else bytes(plain_header)
        cdef Py_ssize_t hlen = PyBytes_GET_SIZE(hb)
        if hlen == 0:
            raise ValueError("empty header")
        cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(hb)
        cdef unsigned char first = h[0]
        cdef int pn_len = (first & 0x03) + 1
        cdef Py_ssize_t pn_offset = hlen - pn_len
        cdef int i
        cdef uint64_t trunc = 0
        if pn_offset < 1:
            raise ValueError("header shorter than its packet number")
        if len(plain_payload) + pn_len < 4:
            raise ValueError("payload too short for a header-protection sample; pad it")
        for i in range(pn_len):
            trunc = (trunc << 8) | h[pn_offset + i]
        if trunc != (pn & ((<uint64_t>1 << (8 * pn_len)) - 1)):
            raise ValueError("header packet number does not match packet_number")
        cdef bint long_header = (first & 0x80) != 0
        cdef unsigned char new_first
        cdef bytes ad = hb
        if not long_header:
            new_first = (first & 0xFB) | (self.key_phase << 2)
            if new_first != first:
                ad = PyBytes_FromStringAndSize(<char*>h, hlen)
                (<unsigned char*>PyBytes_AS_STRING(ad))[0] = new_first
                first = new_first
        cdef _Keys keys = self._send
        cdef bytes ct = keys.aead.encrypt(keys.nonce(pn), plain_payload, ad)
        self.packets_sent_in_phase += 1
        cdef Py_ssize_t clen = PyBytes_GET_SIZE(ct)
        cdef Py_ssize_t s = 4 - pn_len
        cdef bytes mask_b = self._hp_send.mask(ct[s:s + _SAMPLE])
        cdef const unsigned char* mask = <const unsigned char*>PyBytes_AS_STRING(mask_b)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + clen)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(o, PyBytes_AS_STRING(ad), hlen)
        memcpy(o + hlen, PyBytes_AS_STRING(ct), clen)
        o[0] = first ^ (mask[0] & (0x0F if long_header else 0x1F))
        for i in range(pn_len):
            o[pn_offset + i] ^= mask[1 + i]
        return out

    # ------------------------------------------------------------------ opening
    cdef _fail(self):
        self.failed_decryptions += 1
        if self.failed_decryptions > self.integrity_limit:
            self.integrity_limit_reached = True
            return ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        return DecryptionFailed()

    cdef tuple _open(self, packet, pn_offset_obj, expected_obj):
        if self.integrity_limit_reached:
            raise ProtocolError("integrity limit of failed decryptions exceeded", ErrorCode.AEAD_LIMIT_REACHED)
        cdef bytes data
        if type(packet) is bytes:
            data = packet
        else:
            try:
                data = bytes(packet)
            except TypeError:
                raise DecryptionFailed("not a bytes-like packet") from None
        cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
        if type(pn_offset_obj) is not int or not 1 <= pn_offset_obj <= dlen:
            raise DecryptionFailed("bad packet-number offset")
        cdef Py_ssize_t pn_offset = pn_offset_obj
        if dlen < pn_offset + 4 + _SAMPLE:
            raise DecryptionFailed("packet too short")
        if not 0 <= expected_obj <= _PN_MAX + 1:
            raise DecryptionFailed("expected packet number out of range")
        cdef int64_t expected = expected_obj
        cdef bytes mask_b = self._hp_recv.mask(data[pn_offset + 4:pn_offset + 4 + _SAMPLE])
        cdef const unsigned char* mask = <const unsigned char*>PyBytes_AS_STRING(mask_b)
        cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef unsigned char first = d[0]
        cdef bint long_header = (first & 0x80) != 0
        first ^= mask[0] & (0x0F if long_header else 0x1F)
        cdef int pn_len = (first & 0x03) + 1
        cdef Py_ssize_t pn_end = pn_offset + pn_len
        cdef bytes hdr = PyBytes_FromStringAndSize(<char*>d, pn_end)
        cdef unsigned char* hp = <unsigned char*>PyBytes_AS_STRING(hdr)
        hp[0] = first
        cdef int64_t truncated = 0
        cdef int i
        for i in range(pn_len):
            hp[pn_offset + i] ^= mask[1 + i]
            truncated = (truncated << 8) | hp[pn_offset + i]
        cdef int64_t pn = _decode_pn(truncated, pn_len * 8, expected)
        if pn > _PN_MAX or pn < 0:
            raise DecryptionFailed("packet number out of range")

        # Choose the key generation (RFC 9001 §6.3, §6.5).
        cdef int which = 0  # 0 current, -1 previous, 1 next
        cdef _Keys keys = self._recv
        if not long_header and ((first & _KP) >> 2) != self.key_phase:
            if self._prev_recv is not None and (self._recv_first_pn < 0 or pn < self._recv_first_pn):
                keys, which = self._prev_recv, -1
            else:
                keys, which = self._next_recv, 1
        try:
            payload = keys.aead.decrypt(keys.nonce(<uint64_t>pn), data[pn_end:], hdr)
        except InvalidTag:
            raise self._fail() from None
        if which == 1:
            # The peer initiated a key update; follow it (RFC 9001 §6.2).
            self._rotate()
        if which >= 0:
            if self._recv_first_pn < 0 or pn < self._recv_first_pn:
                self._recv_first_pn = pn
            self.packets_received_in_phase += 1
        return hdr, payload, pn


class NullProtection:
    """The PacketProtection interface without cryptography (tag_size 0).

    ``encrypt_packet`` returns header + payload unchanged; ``decrypt_packet`` reads the
    packet-number length from byte 0 and decodes the full packet number.
    """

    tag_size = 0
    key_phase = 0
    keys = None

    def encrypt_packet(self, plain_header, plain_payload, packet_number):
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

    def decrypt_packet(self, packet, pn_offset, expected_packet_number):
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
        pn = _decode_pn(truncated, pn_len * 8, expected_packet_number)
        if pn > _PN_MAX:
            raise DecryptionFailed("packet number out of range")
        return data[:pn_end], data[pn_end:], pn
