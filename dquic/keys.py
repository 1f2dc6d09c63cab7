"""Static identities: X25519 key pairs and public-key parsing.

A ``KeyPair`` is an endpoint's long-term identity in the Noise handshake. Create one with
``KeyPair.generate()``, persist it with ``save(path)`` (a small text file, mode 0600) and
read it back with ``KeyPair.load(path)``. Peers are identified by their 32-byte public
key; ``load_public()`` accepts it raw, as hex or as base64.
"""
from __future__ import annotations

import base64
import binascii
import os
from typing import Union

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = ["KeyPair", "load_public", "KEY_SIZE"]

KEY_SIZE = 32
_HEADER = "# dquic private key (X25519, base64). Keep this file secret."
_PRIVATE_PREFIX = "private: "
_STATIC_DH_CACHE_MAX = 64


class KeyPair:
    """An X25519 key pair: ``.private`` and ``.public`` are 32 raw bytes each.

    Instances compare equal when their keys are equal; ``repr`` never shows the private key.
    """

    __slots__ = ("_private", "_public", "_key", "_static_dh_cache")

    def __init__(self, private: bytes) -> None:
        """Prefer ``generate()``/``from_private()``; ``private`` is 32 raw bytes."""
        if not isinstance(private, (bytes, bytearray, memoryview)):
            raise TypeError("private key must be bytes")
        private = bytes(private)
        if len(private) != KEY_SIZE:
            raise ValueError("X25519 private keys are 32 bytes")
        key = X25519PrivateKey.from_private_bytes(private)
        # Store the clamped-equivalent raw form that cryptography reports back.
        self._private = key.private_bytes_raw()
        self._public = key.public_key().public_bytes_raw()
        # The key object itself, so handshakes need not rebuild it from raw bytes.
        self._key = key
        self._static_dh_cache: dict = {}

    @classmethod
    def generate(cls) -> "KeyPair":
        """A fresh random key pair from the OS CSPRNG."""
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private(cls, raw32: bytes) -> "KeyPair":
        """The key pair whose private key is ``raw32`` (32 bytes)."""
        return cls(raw32)

    @property
    def private(self) -> bytes:
        return self._private

    @property
    def public(self) -> bytes:
        return self._public

    @property
    def private_key(self) -> X25519PrivateKey:
        """The private key as a ``cryptography`` X25519PrivateKey (built once, reused)."""
        return self._key

    def static_dh(self, peer_public: bytes) -> bytes:
        """X25519(our private key, ``peer_public``) for a peer's *static* key, memoised.

        Both inputs are long-term keys, so the result never changes; an initiator that
        reconnects to a pinned server (Noise IK's ``ss``) skips one scalar multiplication.
        Holds at most ``_STATIC_DH_CACHE_MAX`` results (none is more secret than the
        private key this object already holds). Only an initiator should call it: a
        responder's hit/miss timing would tell a prober which client keys connected.
        Raises ``ValueError`` for a peer key of small order (the result would be zero).
        """
        cache = self._static_dh_cache
        shared = cache.get(peer_public)
        if shared is None:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
            if len(cache) >= _STATIC_DH_CACHE_MAX:
                cache.clear()
            cache[bytes(peer_public)] = shared
        return shared

    @property
    def public_b64(self) -> str:
        """The public key as base64 text, the form ``load_public`` and configs accept."""
        return base64.b64encode(self._public).decode("ascii")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyPair):
            return NotImplemented
        return self._private == other._private

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return "KeyPair(public=%s)" % self.public_b64

    def __reduce__(self):
        raise TypeError("KeyPair objects are not picklable; use save()/load()")

    # ------------------------------------------------------------------ files
    def save(self, path: Union[str, "os.PathLike[str]"], overwrite: bool = False) -> None:
        """Write the key pair to ``path`` with mode 0600. An existing file is an error
        (``FileExistsError``: a key file is an identity, not a cache) unless ``overwrite``.

        Format: a comment line, ``private: <base64>``, and ``public: <base64>`` for
        reference (the public line is recomputed and checked on load).
        """
        text = "%s\n%s%s\npublic: %s\n" % (
            _HEADER,
            _PRIVATE_PREFIX,
            base64.b64encode(self._private).decode("ascii"),
            self.public_b64,
        )
        path = os.fspath(path)
        tmp = path + ".tmp%d" % os.getpid()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if path exists, with no window for a race
        finally:
            os.unlink(tmp)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "KeyPair":
        """Read a key pair written by ``save()``. Raises ``ValueError`` if malformed."""
        with open(path, "rb") as f:
            data = f.read(4096 + 1)
        if len(data) > 4096:
            raise ValueError("key file too large")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("key file is not ASCII text") from None
        private = None
        public = None
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(_PRIVATE_PREFIX):
                private = _b64_32(line[len(_PRIVATE_PREFIX):])
            elif line.startswith("public: "):
                public = _b64_32(line[len("public: "):])
            else:
                raise ValueError("unexpected line in key file")
        if private is None:
            raise ValueError("key file has no private key")
        pair = cls(private)
        if public is not None and public != pair.public:
            raise ValueError("key file public key does not match its private key")
        return pair


def _b64_32(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64 key") from None
    if len(raw) != KEY_SIZE:
        raise ValueError("keys are 32 bytes")
    return raw


def load_public(key: Union[str, bytes, bytearray, memoryview, KeyPair]) -> bytes:
    """Parse a peer public key: 32 raw bytes, 64 hex digits or base64 (std or urlsafe).

    A ``KeyPair`` yields its public key. Raises ``ValueError`` for anything else.
    """
    if isinstance(key, KeyPair):
        return key.public
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        if len(raw) == KEY_SIZE:
            return raw
        try:
            key = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("public key must be 32 raw bytes, hex or base64") from None
    if not isinstance(key, str):
        raise TypeError("public key must be str or bytes")
    text = key.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        else:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key must be 32 raw bytes, hex or base64") from None
    if len(raw) != KEY_SIZE:
        raise ValueError("public keys are 32 bytes")
    return raw
