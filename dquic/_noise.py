"""The Noise Protocol Framework (revision 34) state machine.

This module implements the three objects of the Noise specification §5 —
``CipherState``, ``SymmetricState`` and ``HandshakeState`` — for the handshake
patterns dquic uses (NN, NK, NX, XX, IK and their ``pskN`` variants) with DH
function 25519, ciphers ChaChaPoly and AESGCM, and hashes BLAKE2s and SHA256.

Every primitive comes from a library: X25519, ChaCha20-Poly1305 and AES-256-GCM from
the ``cryptography`` package, SHA-256, BLAKE2s-256 and HMAC from Python's ``hashlib``/
``hmac`` (one-shot calls, cheaper per call than building ``cryptography`` hash objects);
the only thing written here is the protocol logic that the specification defines in
terms of those primitives, including Noise's own HMAC-based HKDF (§4.3).

Typical use::

    hs = HandshakeState("Noise_XX_25519_ChaChaPoly_BLAKE2s", initiator=True,
                        prologue=b"...", s=my_private_key)
    msg1 = hs.write_message(b"payload")
    payload2 = hs.read_message(msg2)
    msg3 = hs.write_message(b"")
    assert hs.complete
    c_i2r, c_r2i = hs.split_result      # CipherStates for the two directions

Errors: bad bytes from the peer raise ``NoiseError`` (a ``ProtocolError`` with
``ErrorCode.HANDSHAKE_FAILED``); local misuse raises ``RuntimeError``/``ValueError``;
exhausting a nonce raises ``NonceExhausted``.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from dquic._protection import hmac_sha256
from dquic.errors import ErrorCode, ProtocolError
from dquic.keys import KeyPair

__all__ = [
    "NoiseError",
    "NonceExhausted",
    "CipherState",
    "SymmetricState",
    "HandshakeState",
    "PATTERNS",
    "CIPHERS",
    "HASHES",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "DHLEN",
    "protocol_name",
    "parse_protocol_name",
]

#: Noise §3: every Noise message is at most 65535 bytes.
MAX_MESSAGE_LEN = 65535
#: Noise §5.1: nonce 2**64-1 is reserved (used by Rekey) and never used for encryption.
MAX_NONCE = 2**64 - 1
#: Noise §12.1: DHLEN for 25519.
DHLEN = 32
_TAGLEN = 16
_ZEROS32 = bytes(32)


class NoiseError(ProtocolError):
    """A handshake message from the peer was malformed or failed authentication."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.HANDSHAKE_FAILED)


class NonceExhausted(RuntimeError):
    """A CipherState reached nonce 2**64-1; the key must not be used any more (Noise §5.1)."""


# --------------------------------------------------------------------------- functions
# Noise §12: cipher functions. Each entry builds an AEAD object from a 32-byte key and
# formats the 64-bit counter into the 96-bit nonce the cipher expects.


def _chacha_nonce(n: int) -> bytes:
    # Noise §12.3: 32 bits of zeros followed by the little-endian encoding of n.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _aesgcm_nonce(n: int) -> bytes:
    # Noise §12.4: 32 bits of zeros followed by the big-endian encoding of n.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "big")


_NONCE_ZERO = bytes(12)  # nonce 0 in both formats

#: cipher name -> (AEAD class, nonce formatter)
_Aead = Union[ChaCha20Poly1305, AESGCM]

CIPHERS: Dict[str, Tuple[Callable[[bytes], _Aead], Callable[[int], bytes]]] = {
    "ChaChaPoly": (ChaCha20Poly1305, _chacha_nonce),
    "AESGCM": (AESGCM, _aesgcm_nonce),
}

def _hmac_blake2s(key, data: bytes) -> bytes:
    # The standard library's HMAC over its built-in BLAKE2s (faster here than OpenSSL's
    # BLAKE2S-256 HMAC, which pays an algorithm lookup per call).
    return hmac.digest(key, data, hashlib.blake2s)


#: hash name -> (one-shot hash ``data -> digest``, one-shot HMAC ``(key, data) -> digest``,
#: HASHLEN). Both have HASHLEN 32 (BLAKE2s's default digest size is 32).
HASHES: Dict[str, Tuple[Callable[[bytes], bytes], Callable[[Any, bytes], bytes], int]] = {
    # (HMAC-SHA256 through one libcrypto context kept for the process: _protection)
    "SHA256": (lambda data: hashlib.sha256(data).digest(), hmac_sha256, 32),
    "BLAKE2s": (lambda data: hashlib.blake2s(data).digest(), _hmac_blake2s, 32),
}
#: hash name -> the hashlib constructor behind HASHES' one-shot hash (the hot paths call
#: ``new(data).digest()`` directly).
_HASH_NEW: Dict[str, Callable[[bytes], Any]] = {"SHA256": hashlib.sha256, "BLAKE2s": hashlib.blake2s}

#: Handshake patterns (Noise §7.4, §7.5): name -> (initiator pre-message tokens,
#: responder pre-message tokens, message patterns). Messages alternate starting with
#: the initiator.
PATTERNS = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


def protocol_name(pattern: str, cipher: str = "ChaChaPoly", hash_name: str = "BLAKE2s") -> str:
    """Return the Noise protocol name (§8), e.g. ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s``."""
    return "Noise_%s_25519_%s_%s" % (pattern, cipher, hash_name)


def _split_pattern(full: str) -> Tuple[str, Tuple[int, ...]]:
    """Split ``XXpsk3`` / ``NNpsk0+psk2`` into the base pattern and the psk positions."""
    base = full
    mods = ""
    for i, ch in enumerate(full):
        if ch.islower():
            base, mods = full[:i], full[i:]
            break
    positions = []
    if mods:
        for mod in mods.split("+"):
            if not mod.startswith("psk") or not mod[3:].isdigit():
                raise ValueError("unsupported pattern modifier %r" % mod)
            positions.append(int(mod[3:]))
    if base not in PATTERNS:
        raise ValueError("unsupported handshake pattern %r" % base)
    return base, tuple(positions)


def parse_protocol_name(name: str):
    """Parse a protocol name into (pattern tokens tuple, psk count, cipher name, hash name).

    Raises ``ValueError`` for anything this module does not support.
    """
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise ValueError("malformed Noise protocol name %r" % name)
    _, pattern, dh, cipher, hash_name = parts
    if dh != "25519":
        raise ValueError("unsupported DH function %r" % dh)
    if cipher not in CIPHERS:
        raise ValueError("unsupported cipher %r" % cipher)
    if hash_name not in HASHES:
        raise ValueError("unsupported hash %r" % hash_name)
    base, psk_positions = _split_pattern(pattern)
    pre_i, pre_r, messages = PATTERNS[base]
    msgs = [list(m) for m in messages]
    # Noise §9.2: psk0 goes at the start of the first message, pskN (N>0) at the end of
    # message N.
    for pos in psk_positions:
        if pos == 0:
            msgs[0].insert(0, "psk")
        elif pos <= len(msgs):
            msgs[pos - 1].append("psk")
        else:
            raise ValueError("psk modifier %d beyond the last message" % pos)
    return (tuple(pre_i), tuple(pre_r), tuple(tuple(m) for m in msgs)), len(psk_positions), cipher, hash_name


_PROTOCOL_CACHE: Dict[str, tuple] = {}
_PROTOCOL_CACHE_MAX = 64


def _protocol_info(name: str) -> tuple:
    """Everything a handshake needs from its protocol name, computed once per name.

    Returns ``(pre_i, pre_r, messages, psk_count, cipher, hash_name, initial_h,
    needs_static)`` where ``initial_h`` is the ``h`` (= ``ck``) that InitializeSymmetric
    derives from the name (§5.2) and ``needs_static`` is ``(initiator, responder)``:
    whether each role must have a local static key. The cache holds at most
    ``_PROTOCOL_CACHE_MAX`` names; further names are parsed every time.
    """
    info = _PROTOCOL_CACHE.get(name)
    if info is not None:
        return info
    (pre_i, pre_r, messages), psk_count, cipher, hash_name = parse_protocol_name(name)
    hash_fn, _, hashlen = HASHES[hash_name]
    raw = name.encode("ascii")
    initial_h = raw.ljust(hashlen, b"\x00") if len(raw) <= hashlen else hash_fn(raw)
    needs_static = tuple(
        any("s" in m for i, m in enumerate(messages) if (i % 2 == 0) == role) or ("s" in (pre_i if role else pre_r))
        for role in (True, False)
    )
    info = (pre_i, pre_r, messages, psk_count, cipher, hash_name, initial_h, needs_static)
    if len(_PROTOCOL_CACHE) < _PROTOCOL_CACHE_MAX:
        _PROTOCOL_CACHE[name] = info
    return info


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    """DH(key_pair, public_key) for 25519 (Noise §12.1).

    A peer public key of small order yields an all-zero result; cryptography rejects
    it and we abort the handshake (Noise §12.1 permits aborting).
    """
    try:
        return private.exchange(public)
    except ValueError:
        raise NoiseError("invalid peer public key") from None


# X25519 through cryptography's public classmethods only (its private native constructors are
# ~3 us faster per key but belong to no public interface)
_generate_private = X25519PrivateKey.generate
_load_public = X25519PublicKey.from_public_bytes


def _public_key(raw: bytes) -> X25519PublicKey:
    try:
        return _load_public(raw)
    except ValueError:  # pragma: no cover - any 32 bytes parse as an X25519 public key
        raise NoiseError("invalid peer public key") from None


# Ephemeral keys made ahead of the handshake that uses them (``prepare_ephemeral``), so that
# writing a handshake's first message does not wait for a key generation (an X25519 scalar
# multiplication): each is taken once (``list.pop`` is atomic, so two threads never take the
# same one) and a forked child forgets what its parent made (the parent may use it).
_SPARES_MAX = 1
_spares: list = []
if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_spares.clear)


def prepare_ephemeral() -> bool:
    """Make the ephemeral key of a coming handshake now, unless one waits already; True if
    one was made. The drivers call it after sending, when waiting costs nothing."""
    if len(_spares) >= _SPARES_MAX:
        return False
    key = _generate_private()
    _spares.append((key, key.public_key().public_bytes_raw()))
    return True


def _new_ephemeral() -> Tuple[X25519PrivateKey, bytes]:
    # a waiting key made ahead (never twice), else a new one
    try:
        return _spares.pop()
    except IndexError:
        key = _generate_private()
        return key, key.public_key().public_bytes_raw()


def _public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


# --------------------------------------------------------------------------- CipherState


class CipherState:
    """Noise §5.1: an AEAD key ``k`` and a 64-bit nonce counter ``n``.

    ``encrypt_with_ad``/``decrypt_with_ad`` use and then increment ``n``; with no key
    they return their input unchanged. A nonce is never reused: once ``n`` reaches
    2**64-1 both raise ``NonceExhausted``. ``rekey()`` replaces the key per §4.2.
    """

    __slots__ = ("_cipher_name", "_aead_cls", "_nonce", "_k", "_aead", "n")

    def __init__(self, cipher: str = "ChaChaPoly", key: Optional[bytes] = None) -> None:
        self._cipher_name = cipher
        self._aead_cls, self._nonce = CIPHERS[cipher]
        self._k: Optional[bytes] = None
        self._aead: Optional[_Aead] = None
        self.n = 0
        self.initialize_key(key)

    @property
    def cipher(self) -> str:
        return self._cipher_name

    @property
    def key(self) -> Optional[bytes]:
        """The current key (32 bytes) or None. Only for deriving dquic's packet keys."""
        return self._k

    def initialize_key(self, key: Optional[bytes]) -> None:
        """InitializeKey(key): set ``k`` (None means empty) and reset ``n`` to zero."""
        if key is not None:
            if len(key) != 32:
                raise ValueError("cipher keys are 32 bytes")
            key = bytes(key)
        # The AEAD object is built on first use (_cipher): Split's keys and keys that
        # a following MixKey replaces are never used for encryption here.
        self._aead = None
        self._k = key
        self.n = 0

    def has_key(self) -> bool:
        """HasKey(): True once a key is set."""
        return self._k is not None

    def set_nonce(self, nonce: int) -> None:
        """SetNonce(nonce): for out-of-order transport use; the caller owns uniqueness."""
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError("nonce out of range")
        self.n = nonce

    def _cipher(self):
        """The AEAD object for ``k`` (built once per key), or None without a key."""
        aead = self._aead
        if aead is None and self._k is not None:
            aead = self._aead = self._aead_cls(self._k)
        return aead

    def _cipher_and_nonce(self):
        """The AEAD object and the nonce ``n`` in its wire form, or (None, None) without a
        key; raises NonceExhausted once ``n`` reached the reserved maximum."""
        aead = self._cipher()
        if aead is None:
            return None, None
        n = self.n
        if n >= MAX_NONCE:
            raise NonceExhausted("nonce space exhausted; rekey or start a new session")
        # Handshake keys are mostly used once: nonce 0 is 12 zero bytes in both formats.
        return aead, (self._nonce(n) if n else _NONCE_ZERO)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext); plaintext unchanged when there is no key."""
        aead, nonce = self._cipher_and_nonce()
        if aead is None:
            return bytes(plaintext)
        out = aead.encrypt(nonce, bytes(plaintext), ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, n++, ad, ciphertext); raises NoiseError on authentication failure.

        On failure ``n`` is not incremented (Noise §5.1).
        """
        aead, nonce = self._cipher_and_nonce()
        if aead is None:
            return bytes(ciphertext)
        try:
            out = aead.decrypt(nonce, bytes(ciphertext), ad)
        except InvalidTag:
            raise NoiseError("handshake message failed authentication") from None
        self.n += 1
        return out

    def rekey(self) -> None:
        """Rekey(): k = first 32 bytes of ENCRYPT(k, 2**64-1, zerolen, 32 zero bytes) (§4.2)."""
        aead = self._cipher()
        if aead is None:
            raise RuntimeError("no key to rekey")
        n = self.n
        new_key = aead.encrypt(self._nonce(MAX_NONCE), _ZEROS32, b"")[:32]
        self.initialize_key(new_key)
        self.n = n  # Rekey does not reset the nonce

    def clear(self) -> None:
        """Forget the key (best effort: Python bytes cannot be overwritten)."""
        self._k = None
        self._aead = None


# --------------------------------------------------------------------------- SymmetricState


class SymmetricState:
    """Noise §5.2: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    __slots__ = ("_hash_fn", "_hash_new", "_hmac_fn", "hashlen", "ck", "h", "cipher_state",
                 "_cipher_name")

    def __init__(self, protocol_name_bytes: bytes, cipher: str, hash_name: str,
                 initial_h: Optional[bytes] = None) -> None:
        """InitializeSymmetric(protocol_name).

        ``initial_h`` may carry the value this derives from ``protocol_name_bytes``
        when the caller already computed it (HandshakeState caches it per name).
        """
        self._hash_fn, self._hmac_fn, self.hashlen = HASHES[hash_name]
        self._hash_new = _HASH_NEW[hash_name]
        self._cipher_name = cipher
        if initial_h is not None:
            h = initial_h
        elif len(protocol_name_bytes) <= self.hashlen:
            h = protocol_name_bytes.ljust(self.hashlen, b"\x00")
        else:
            h = self._hash_fn(protocol_name_bytes)
        self.h = h
        # ck is secret once keys are mixed in; keep it in a bytearray we can overwrite.
        self.ck = bytearray(h)
        self.cipher_state = CipherState(cipher)

    def _hash(self, data: bytes) -> bytes:
        return self._hash_new(data).digest()

    def _hmac(self, key, data: bytes) -> bytes:
        return self._hmac_fn(key, data)

    def hkdf(self, chaining_key, ikm: bytes, num_outputs: int):
        """HKDF(chaining_key, input_key_material, num_outputs) as Noise §4.3 defines it."""
        digest = self._hmac_fn
        temp_key = digest(chaining_key, ikm)
        out1 = digest(temp_key, b"\x01")
        out2 = digest(temp_key, out1 + b"\x02")
        if num_outputs == 2:
            return out1, out2
        out3 = digest(temp_key, out2 + b"\x03")
        return out1, out2, out3

    def _set_ck(self, value: bytes) -> None:
        self.ck[:] = value

    def mix_key(self, ikm: bytes) -> None:
        """MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k)."""
        # HKDF with two outputs, written out: this runs for every DH token.
        digest = self._hmac_fn
        temp_key = digest(self.ck, ikm)
        ck = digest(temp_key, b"\x01")
        self.ck[:] = ck
        # HASHLEN is 32 for both hashes, so temp_k needs no truncation (§5.2).
        cs = self.cipher_state
        cs._k = digest(temp_key, ck + b"\x02")
        cs._aead = None  # built on first use
        cs.n = 0

    def mix_hash(self, data: bytes) -> None:
        """MixHash(data): h = HASH(h || data)."""
        self.h = self._hash_new(self.h + data).digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """MixKeyAndHash(ikm): used for pre-shared keys (§9)."""
        ck, temp_h, temp_k = self.hkdf(self.ck, ikm, 3)
        self._set_ck(ck)
        self.mix_hash(temp_h)
        self.cipher_state.initialize_key(temp_k[:32])

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext)."""
        ciphertext = self.cipher_state.encrypt_with_ad(self.h, plaintext)
        self.h = self._hash_new(self.h + ciphertext).digest()
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext)."""
        plaintext = self.cipher_state.decrypt_with_ad(self.h, ciphertext)
        self.h = self._hash_new(self.h + ciphertext).digest()
        return plaintext

    def split_keys(self) -> Tuple[bytes, bytes]:
        """Split() for a caller that only wants the two keys (initiator→responder,
        responder→initiator), not CipherStates.

        Afterwards the chaining key is overwritten with zeros and the handshake
        CipherState forgets its key.
        """
        digest = self._hmac_fn
        temp_key = digest(self.ck, b"")
        k1 = digest(temp_key, b"\x01")
        k2 = digest(temp_key, k1 + b"\x02")
        self.ck[:] = bytes(len(self.ck))
        self.cipher_state.clear()
        return k1, k2

    def split(self) -> Tuple[CipherState, CipherState]:
        """Split(): two CipherStates (initiator→responder, responder→initiator).

        Afterwards the chaining key is overwritten with zeros and the handshake
        CipherState forgets its key.
        """
        k1, k2 = self.split_keys()
        return CipherState(self._cipher_name, k1), CipherState(self._cipher_name, k2)


# --------------------------------------------------------------------------- HandshakeState


class HandshakeState:
    """Noise §5.3: runs one handshake for one party.

    Construct with the full protocol name, the role, the prologue and whatever keys
    the pattern requires: ``s`` (our static private key: 32 raw bytes, or a ``KeyPair``
    whose key object is then reused), ``rs`` (peer static public key known in advance,
    32 raw bytes), ``psks`` (one 32-byte key per ``pskN`` modifier). ``e`` injects a fixed ephemeral private key — for tests and
    test vectors only; never pass it in production.

    Then alternate ``write_message``/``read_message`` as the pattern dictates
    (``is_my_turn`` says which). When ``complete`` becomes true, take the transport
    keys: ``split_result`` gives CipherStates, ``take_split_keys()`` the raw keys; the
    channel binding comes from ``get_handshake_hash()``.
    """

    def __init__(
        self,
        protocol_name: str,
        initiator: bool,
        prologue: bytes = b"",
        s: Optional[Union[bytes, KeyPair]] = None,
        rs: Optional[bytes] = None,
        psks: Sequence[bytes] = (),
        e: Optional[bytes] = None,
    ) -> None:
        (pre_i, pre_r, messages, psk_count, cipher, hash_name, initial_h,
         needs_static) = _protocol_info(protocol_name)
        self.protocol_name = protocol_name
        self.cipher_name = cipher
        self.hash_name = hash_name
        self.initiator = initiator = bool(initiator)
        self._messages = messages
        self._index = 0
        if len(psks) != psk_count:
            raise ValueError("pattern needs %d psk(s), got %d" % (psk_count, len(psks)))
        for psk in psks:
            if len(psk) != 32:
                raise ValueError("pre-shared keys are 32 bytes")
        self._psks = [bytes(p) for p in psks]
        self._is_psk = psk_count > 0
        self._s_pair: Optional[KeyPair] = None
        self._s: Optional[X25519PrivateKey]
        self._s_pub: Optional[bytes]
        if s is None:
            self._s = self._s_pub = None
        elif isinstance(s, KeyPair):  # a plain class: a cheap check, not an ABC one
            # A KeyPair keeps its key object: no per-handshake rebuild from raw bytes.
            self._s_pair = s
            self._s = s.private_key
            self._s_pub = s.public
        else:
            self._s = X25519PrivateKey.from_private_bytes(bytes(s))
            self._s_pub = _public_bytes(self._s)
        self._e = X25519PrivateKey.from_private_bytes(bytes(e)) if e is not None else None
        self._e_pub: Optional[bytes] = None
        self._rs: Optional[bytes] = None
        self._re: Optional[bytes] = None
        # X25519PublicKey objects for rs/re, built on first DH use.
        self._rs_obj: Optional[X25519PublicKey] = None
        self._re_obj: Optional[X25519PublicKey] = None
        if rs is not None:
            if len(rs) != DHLEN:
                raise ValueError("static public keys are 32 bytes")
            self._rs = bytes(rs)

        self._ss = ss = SymmetricState(b"", cipher, hash_name, initial_h)
        ss.mix_hash(prologue if type(prologue) is bytes else bytes(prologue))
        # Pre-messages (§7.1): initiator's keys first, then the responder's.
        for side_tokens, is_local in ((pre_i, initiator), (pre_r, not initiator)):
            for token in side_tokens:
                if token == "s":
                    key = self._s_pub if is_local else self._rs
                else:  # pragma: no cover - no supported pattern has a pre-message "e"
                    raise ValueError("unsupported pre-message token %r" % token)
                if key is None:
                    raise ValueError("pattern requires a %s static key in advance" % ("local" if is_local else "remote"))
                ss.mix_hash(key)
        self._needs_local_static = needs_static[0] if initiator else needs_static[1]
        if self._needs_local_static and self._s is None:
            raise ValueError("pattern requires a local static key")
        self._done = False
        # Split()'s keys until taken (take_split_keys) or wrapped (split_result).
        self._split_keys: Optional[Tuple[bytes, bytes]] = None
        self._split: Optional[Tuple[CipherState, CipherState]] = None
        self._hash_at_split: Optional[bytes] = None

    # ---------------------------------------------------------------- properties
    @property
    def complete(self) -> bool:
        """True once every message pattern has been processed (Split has run)."""
        return self._done

    @property
    def message_count(self) -> int:
        """Total number of handshake messages in this pattern."""
        return len(self._messages)

    @property
    def messages_done(self) -> int:
        return self._index

    @property
    def is_my_turn(self) -> bool:
        """True when the next call must be ``write_message``."""
        if self._done:
            return False
        return (self._index % 2 == 0) == self.initiator

    @property
    def remote_static(self) -> Optional[bytes]:
        """The peer's static public key once known (pre-message or received), else None."""
        return self._rs

    @property
    def remote_ephemeral(self) -> Optional[bytes]:
        return self._re

    @property
    def local_ephemeral(self) -> Optional[bytes]:
        return self._e_pub

    @property
    def split_result(self) -> Tuple[CipherState, CipherState]:
        """(initiator→responder, responder→initiator) CipherStates, once complete.

        Not available after ``take_split_keys()``.
        """
        if self._split is None:
            if not self._done:
                raise RuntimeError("handshake not complete")
            if self._split_keys is None:
                raise RuntimeError("the transport keys were already taken")
            k1, k2 = self._split_keys
            self._split_keys = None
            self._split = (CipherState(self.cipher_name, k1), CipherState(self.cipher_name, k2))
        return self._split

    def take_split_keys(self) -> Tuple[bytes, bytes]:
        """The two transport keys (initiator→responder, responder→initiator), once complete.

        For a caller that derives its own transport protection from them (dquic's packet
        keys): this object forgets them, so ``split_result`` is not available afterwards
        (and is the way to get them when ``split_result`` was used first).
        """
        if not self._done:
            raise RuntimeError("handshake not complete")
        if self._split is not None:
            c1, c2 = self._split
            assert c1.key is not None and c2.key is not None  # Split() keys both
            return c1.key, c2.key
        keys = self._split_keys
        if keys is None:
            raise RuntimeError("the transport keys were already taken")
        self._split_keys = None
        return keys

    def get_handshake_hash(self) -> bytes:
        """The handshake hash ``h`` (final value once complete); a channel binding (§11.2)."""
        if self._hash_at_split is not None:
            return self._hash_at_split
        return self._ss.get_handshake_hash()

    # ---------------------------------------------------------------- tokens
    def _dh_for(self, token: str) -> bytes:
        """The DH result for a DH token (§5.3): ``ee``, ``es``, ``se`` or ``ss``."""
        if token == "ee":
            private, public = self._e, self._re_obj or self._re_key()
        elif token == "es":
            if self.initiator:
                private, public = self._e, self._rs_obj or self._rs_key()
            else:
                private, public = self._s, self._re_obj or self._re_key()
        elif token == "se":
            if self.initiator:
                private, public = self._s, self._re_obj or self._re_key()
            else:
                private, public = self._e, self._rs_obj or self._rs_key()
        else:  # "ss"
            if self.initiator and self._s_pair is not None:
                # Static-static: the same value on every reconnection to this peer.
                assert self._rs is not None  # the patterns with ss all know rs by then
                try:
                    return self._s_pair.static_dh(self._rs)
                except ValueError:
                    raise NoiseError("invalid peer public key") from None
            private, public = self._s, self._rs_obj or self._rs_key()
        # A peer public key of small order yields an all-zero result; cryptography
        # rejects it and we abort the handshake (§12.1 permits aborting).
        assert private is not None  # the pattern's tokens come after the keys they use
        try:
            return private.exchange(public)
        except ValueError:
            raise NoiseError("invalid peer public key") from None

    def _rs_key(self) -> X25519PublicKey:
        key = self._rs_obj
        if key is None:
            assert self._rs is not None
            key = self._rs_obj = _public_key(self._rs)
        return key

    def _re_key(self) -> X25519PublicKey:
        key = self._re_obj
        if key is None:
            assert self._re is not None
            key = self._re_obj = _public_key(self._re)
        return key

    def _finish_if_done(self) -> None:
        self._index += 1
        if self._index == len(self._messages):
            ss = self._ss
            self._hash_at_split = ss.h
            self._split_keys = ss.split_keys()
            self._done = True
            # Discard handshake secrets (best effort; key objects cannot be wiped).
            self._e = None
            self._s_pair = None
            self._rs_obj = self._re_obj = None
            self._psks = []

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage(payload): produce the next handshake message.

        Call only when ``is_my_turn``. Returns the message bytes to send.
        """
        if self._done or (self._index % 2 == 0) != self.initiator:
            raise RuntimeError("not our turn to write a handshake message")
        ss = self._ss
        out = []
        for token in self._messages[self._index]:
            if token == "e":
                e = self._e
                if e is None:
                    e, pub = _new_ephemeral()
                    self._e = e
                else:  # (a fixed key given for test vectors)
                    pub = e.public_key().public_bytes_raw()
                self._e_pub = pub
                out.append(pub)
                ss.mix_hash(pub)
                if self._is_psk:  # §9.2: psk handshakes also MixKey(e.public_key)
                    ss.mix_key(pub)
            elif token == "s":
                assert self._s_pub is not None  # checked in __init__ (_needs_local_static)
                out.append(ss.encrypt_and_hash(self._s_pub))
            elif token == "psk":
                ss.mix_key_and_hash(self._psks.pop(0))
            else:
                ss.mix_key(self._dh_for(token))
        out.append(ss.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE_LEN:
            raise ValueError("handshake message exceeds 65535 bytes")
        self._finish_if_done()
        return message

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage(message): process the peer's next handshake message; return its payload.

        Raises ``NoiseError`` if the message is truncated, oversized, carries an invalid
        key or fails authentication. After a failure the state must be abandoned.
        """
        if self._done or (self._index % 2 == 0) == self.initiator:
            raise NoiseError("unexpected handshake message")
        if type(message) is not bytes:
            message = bytes(message)
        end = len(message)
        if end > MAX_MESSAGE_LEN:
            raise NoiseError("handshake message exceeds 65535 bytes")
        ss = self._ss
        cs = ss.cipher_state
        pos = 0
        for token in self._messages[self._index]:
            if token == "e":
                if end - pos < DHLEN:
                    raise NoiseError("truncated handshake message")
                re = self._re = message[pos:pos + DHLEN]
                self._re_obj = None
                pos += DHLEN
                ss.mix_hash(re)
                if self._is_psk:
                    ss.mix_key(re)
            elif token == "s":
                n = DHLEN + _TAGLEN if cs._k is not None else DHLEN
                if end - pos < n:
                    raise NoiseError("truncated handshake message")
                self._rs = ss.decrypt_and_hash(message[pos:pos + n])
                self._rs_obj = None
                pos += n
            elif token == "psk":
                ss.mix_key_and_hash(self._psks.pop(0))
            else:
                ss.mix_key(self._dh_for(token))
        if cs._k is not None and end - pos < _TAGLEN:
            raise NoiseError("truncated handshake message")
        payload = ss.decrypt_and_hash(message[pos:] if pos else message)
        self._finish_if_done()
        return payload
