"""QUIC-LB connection IDs: a server ID inside every connection ID a server issues.

A load balancer in front of a fleet of servers has to send every packet of a connection to the
server that holds it, also after the client's address changed (migration, NAT rebinding), when
the 4-tuple says nothing. QUIC-LB (draft-ietf-quic-load-balancers) lets it read the server out
of the destination connection ID instead: each server writes its *server ID* into the
connection IDs it chooses, and the balancer, configured with the same parameters, decodes it.
PROTOCOL.md §17.1 gives the format; this module implements it:

* the **first octet**: 3 config-rotation bits (``config_id`` 0..6; 0b111 marks an unroutable
  connection ID), then either the length of the rest of the ID (``length_self_encoding``) or
  random bits;
* then the server ID and a nonce, either in the clear (no key), or encrypted under a 16-byte
  AES-128 key: one AES-ECB block when server ID and nonce are exactly 16 bytes together
  (single pass), otherwise a four-round Feistel network whose round function is AES-ECB
  (four passes), so the ciphertext is as long as the plaintext.

``LoadBalancerConfig`` encodes and decodes; ``ConnectionIdGenerator`` makes the connection IDs
of one server (random nonces in the clear, a counter from a random start under a key, so an
encrypted nonce never repeats). ``Configuration(server_id=..., lb_key=..., lb_config_id=...)``
makes every connection of an endpoint issue them (``Configuration.new_connection_id``).

AES comes from the ``cryptography`` package. Decoding is for load balancers, tests and
diagnostics: a server never needs to decode its own connection IDs (it looks them up).
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Dict, Optional, Tuple

__all__ = ["LoadBalancerConfig", "ConnectionIdGenerator", "UNROUTABLE_CONFIG_ID",
           "config_id_of", "generator_for"]

#: The config-rotation codepoint of connection IDs no load balancer configuration decodes.
UNROUTABLE_CONFIG_ID = 7
#: The longest connection ID (QUIC version 1 and dquic): first octet + server ID + nonce.
MAX_CID_LENGTH = 20


def config_id_of(cid: bytes) -> int:
    """The config-rotation bits (0..7) of a connection ID (its first octet's top 3 bits)."""
    if not cid:
        raise ValueError("empty connection ID")
    return cid[0] >> 5


class LoadBalancerConfig:
    """One QUIC-LB configuration: what a server and its load balancer agree on.

    ``config_id`` 0..6 (the config-rotation bits), ``server_id_length`` >= 1 and
    ``nonce_length`` >= 4 bytes with a sum of at most 19 (so a connection ID is
    ``1 + server_id_length + nonce_length`` <= 20 bytes), ``key``: 16 bytes for the encrypted
    modes or None for the plaintext mode, ``length_self_encoding``: the first octet's low 5
    bits carry the length of the rest of the ID (else they are random).
    """

    def __init__(self, config_id: int, server_id_length: int, nonce_length: int,
                 key: Optional[bytes] = None, length_self_encoding: bool = False) -> None:
        if not 0 <= config_id <= 6:
            raise ValueError("config_id must be 0..6 (7 marks unroutable connection IDs)")
        if server_id_length < 1:
            raise ValueError("server_id_length must be at least 1")
        if nonce_length < 4:
            raise ValueError("nonce_length must be at least 4")
        if server_id_length + nonce_length > MAX_CID_LENGTH - 1:
            raise ValueError("server_id_length + nonce_length must be at most 19")
        self.config_id = config_id
        self.server_id_length = server_id_length
        self.nonce_length = nonce_length
        self.length_self_encoding = bool(length_self_encoding)
        self.plaintext_length = server_id_length + nonce_length
        #: bytes of a connection ID in this configuration, first octet included
        self.cid_length = 1 + self.plaintext_length
        self.key = None if key is None else bytes(key)
        self._enc = self._dec = None
        if self.key is not None:
            if len(self.key) != 16:
                raise ValueError("the QUIC-LB key must be 16 bytes (AES-128)")
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            cipher = Cipher(algorithms.AES(self.key), modes.ECB())
            # ECB keeps no state between blocks: one context serves every call
            self._enc = cipher.encryptor()
            self._dec = cipher.decryptor()
        self._lock = threading.Lock()  # the contexts are not for concurrent use

    def __repr__(self) -> str:
        return ("LoadBalancerConfig(config_id=%d, server_id_length=%d, nonce_length=%d, %s%s)"
                % (self.config_id, self.server_id_length, self.nonce_length,
                   "encrypted" if self.key else "plaintext",
                   ", length_self_encoding=True" if self.length_self_encoding else ""))

    # ----------------------------------------------------------------------------------------
    def first_octet(self, random_bits: int = 0) -> int:
        """The first octet: config rotation, then the length of the rest or ``random_bits``."""
        low = self.plaintext_length if self.length_self_encoding else random_bits & 0x1F
        return (self.config_id << 5) | low

    def encode(self, server_id: bytes, nonce: bytes, random_bits: int = 0) -> bytes:
        """The connection ID carrying ``server_id`` with ``nonce`` (``random_bits``: the first
        octet's low bits when the length is not self-encoded)."""
        if len(server_id) != self.server_id_length:
            raise ValueError("server_id must be %d bytes" % self.server_id_length)
        if len(nonce) != self.nonce_length:
            raise ValueError("nonce must be %d bytes" % self.nonce_length)
        plain = bytes(server_id) + bytes(nonce)
        if self.key is not None:
            plain = self._encrypt(plain)
        return bytes((self.first_octet(random_bits),)) + plain

    def decode(self, cid: bytes) -> Tuple[bytes, bytes]:
        """``(server_id, nonce)`` of a connection ID of this configuration. ValueError if it
        is shorter than the configuration's length or carries another config ID (longer IDs
        are allowed: a server may append bytes of its own)."""
        cid = bytes(cid)
        if len(cid) < self.cid_length:
            raise ValueError("connection ID too short for this configuration")
        if cid[0] >> 5 != self.config_id:
            raise ValueError("connection ID of config %d, not %d" % (cid[0] >> 5, self.config_id))
        body = cid[1:self.cid_length]
        if self.key is not None:
            body = self._decrypt(body)
        return body[:self.server_id_length], body[self.server_id_length:]

    def server_id_of(self, cid: bytes) -> bytes:
        """The server ID a load balancer reads from ``cid`` (see ``decode``)."""
        return self.decode(cid)[0]

    # ----------------------------------------------------------------------------------------
    def _aes(self, block: bytes) -> bytes:
        with self._lock:
            return self._enc.update(block)  # type: ignore[union-attr]

    def _expand(self, half: bytes, pass_: int) -> bytes:
        # the half, zero padding, then the plaintext length and the pass number: 16 bytes
        return half + bytes(14 - len(half)) + bytes((self.plaintext_length, pass_))

    def _round(self, target: bytes, source: bytes, pass_: int, mask_first: bool) -> bytes:
        """``target`` XOR the first bytes of AES(expand(``source``, ``pass_``)), with the
        half-octet that belongs to the other half cleared when the length is odd."""
        pad = self._aes(self._expand(source, pass_))
        out = bytearray(a ^ b for a, b in zip(target, pad))
        if self.plaintext_length & 1:
            if mask_first:
                out[0] &= 0x0F
            else:
                out[-1] &= 0xF0
        return bytes(out)

    def _split(self, data: bytes) -> Tuple[bytes, bytes]:
        n = len(data)
        half = (n + 1) // 2
        left, right = bytearray(data[:half]), bytearray(data[n - half:])
        if n & 1:  # the middle octet: its high nibble goes left, its low nibble right
            left[-1] &= 0xF0
            right[0] &= 0x0F
        return bytes(left), bytes(right)

    def _join(self, left: bytes, right: bytes) -> bytes:
        if self.plaintext_length & 1:
            return left[:-1] + bytes((left[-1] | right[0],)) + right[1:]
        return left + right

    # the four passes: (pass number, whether it changes the right half); decryption runs them
    # backwards (each pass XORs, so it undoes itself)
    _PASSES = ((1, True), (2, False), (3, True), (4, False))

    def _four_pass(self, data: bytes, passes: Tuple[Tuple[int, bool], ...]) -> bytes:
        left, right = self._split(data)
        for n, on_right in passes:
            if on_right:
                right = self._round(right, left, n, True)
            else:
                left = self._round(left, right, n, False)
        return self._join(left, right)

    def _encrypt(self, plain: bytes) -> bytes:
        if self.plaintext_length == 16:  # single pass: the whole block at once
            return self._aes(plain)
        return self._four_pass(plain, self._PASSES)

    def _decrypt(self, cipher: bytes) -> bytes:
        if self.plaintext_length == 16:
            with self._lock:
                return self._dec.update(cipher)  # type: ignore[union-attr]
        return self._four_pass(cipher, self._PASSES[::-1])


class ConnectionIdGenerator:
    """Makes the connection IDs of one server: ``generator(length)`` returns a new one.

    In the clear, each nonce is random (the draft forbids nonces linkable to earlier ones).
    Under a key, nonces count up from a random start, so none repeats until the counter comes
    back round; then the generator issues unroutable IDs (config 0b111, length self-encoded,
    random) as the draft requires of a server that exhausted its nonces, until given a new
    configuration. ``length`` must be the configuration's ``cid_length``.
    """

    def __init__(self, config: LoadBalancerConfig, server_id: bytes,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if len(server_id) != config.server_id_length:
            raise ValueError("server_id must be %d bytes" % config.server_id_length)
        self.config = config
        self.server_id = bytes(server_id)
        self._random = random_bytes
        self._lock = threading.Lock()
        self.exhausted = False
        if config.key is not None:
            n = config.nonce_length
            self._modulus = 1 << (8 * n)
            self._start = int.from_bytes(random_bytes(n), "big")
            self._next = self._start

    def __call__(self, length: int) -> bytes:
        cfg = self.config
        if length != cfg.cid_length:
            raise ValueError("this QUIC-LB configuration makes %d-byte connection IDs, not %d"
                             % (cfg.cid_length, length))
        if cfg.key is None:
            rnd = self._random(cfg.nonce_length + 1)
            return cfg.encode(self.server_id, rnd[1:], rnd[0])
        with self._lock:
            if self.exhausted:
                return self._unroutable(length)
            counter = self._next
            self._next = (counter + 1) % self._modulus
            if self._next == self._start:
                self.exhausted = True
        return cfg.encode(self.server_id, counter.to_bytes(cfg.nonce_length, "big"),
                          self._random(1)[0])

    def _unroutable(self, length: int) -> bytes:
        return bytes(((UNROUTABLE_CONFIG_ID << 5) | (length - 1),)) + self._random(length - 1)


# one generator per (parameters, server ID) in the process: connections of one endpoint (and
# of several endpoints with the same settings) draw nonces from one counter
_generators: Dict[tuple, ConnectionIdGenerator] = {}
_generators_lock = threading.Lock()


def generator_for(cid_length: int, server_id: bytes, config_id: int = 0,
                  key: Optional[bytes] = None, length_self_encoding: bool = False,
                  random_bytes: Callable[[int], bytes] = os.urandom) -> ConnectionIdGenerator:
    """The process's generator of ``cid_length``-byte QUIC-LB connection IDs carrying
    ``server_id`` (nonce length: what is left after the first octet and the server ID)."""
    k = (cid_length, bytes(server_id), config_id, None if key is None else bytes(key),
         bool(length_self_encoding), random_bytes)
    gen = _generators.get(k)
    if gen is None:
        with _generators_lock:
            gen = _generators.get(k)
            if gen is None:
                if len(_generators) >= 64:  # a bound, for processes that make many settings
                    _generators.clear()
                cfg = LoadBalancerConfig(config_id, len(server_id),
                                         cid_length - 1 - len(server_id), key,
                                         length_self_encoding)
                gen = _generators[k] = ConnectionIdGenerator(cfg, server_id, random_bytes)
    return gen
