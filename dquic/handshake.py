"""dquic's handshake: Noise patterns, trust decisions and transport-parameter payloads.

The client picks one of four Noise patterns from what it knows (PROTOCOL.md "Handshake
and keys"):

=================  =======================  ===========================
                   client has no identity   client has an identity
=================  =======================  ===========================
server key pinned  NK   (2 messages)        IK   (2 messages)
server key not     NX   (2 messages)        XX   (3 messages)
pinned
=================  =======================  ===========================

A pre-shared key turns these into NKpsk2, IKpsk2, NXpsk2 and XXpsk3. ChaChaPoly is paired
with BLAKE2s and AESGCM with SHA256; the 25519 DH function is always used.

Wire format: the first handshake message is ``suite_id (1 byte) || Noise message 1``;
the others are bare Noise messages. ``suite_id`` = pattern (low 4 bits: 1 NK, 2 IK, 3 NX,
4 XX) | 0x10 if a psk is mixed | 0x20 for AESGCM_SHA256 (else ChaChaPoly_BLAKE2s). Every
message is at most 4096 bytes. The Noise prologue is ``b"dquic/1" || suite_id ||
len(caller prologue) (2 bytes) || caller prologue``; the caller's prologue carries the
connection IDs of the packet that opened the connection so the handshake cannot be
spliced onto another connection.

Payloads: the client's transport parameters travel in message 1 for NK/IK (encrypted to
the pinned server key) and NX (plaintext but bound into the handshake hash, so tampering
makes message 2 fail), and in message 3 for XX (encrypted, after the client identity).
The server's transport parameters travel in message 2 (always encrypted).

Usage (client)::

    hs = ClientHandshake(identity=None, server_key=pk, trusted_peers=None, psk=None,
                         transport_params=tp, prologue=cids)
    send(hs.start())
    reply = hs.receive(msg2)          # bytes for XX (send it), else None
    assert hs.complete
    send_prot, recv_prot = hs.protections()

Usage (server)::

    hs = ServerHandshake(identity=kp, trusted_peers=None, psk=None, transport_params=tp,
                         prologue=cids)
    send(hs.receive(msg1))            # message 2
    if not hs.complete: hs.receive(msg3)   # XX only; returns None

Errors raised by ``receive``: ``dquic.AuthenticationError`` when the peer's identity is
not trusted (or a policy such as "client identity required" is not met), and
``ProtocolError(..., ErrorCode.HANDSHAKE_FAILED)`` for anything malformed or failing
authentication. After either, the handshake object is dead; ``presented_key`` still names the
static key the peer revealed, if it got that far (``peer_static`` is set only for a trusted
key), so a refusal can be reported with the key that was refused.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from dquic._noise import HandshakeState, NoiseError, protocol_name
from dquic._protection import DEFAULT_KEY_UPDATE_INTERVAL, OneRttKeys, PacketProtection
from dquic.errors import AuthenticationError, ErrorCode, ProtocolError
from dquic.keys import KeyPair, load_public

__all__ = [
    "ClientHandshake",
    "ServerHandshake",
    "MAX_HANDSHAKE_MESSAGE",
    "MAX_TRANSPORT_PARAMS",
    "PATTERN_IDS",
    "PROLOGUE_LABEL",
    "suite_id",
    "parse_suite_id",
]

MAX_HANDSHAKE_MESSAGE = 4096
#: Largest local transport-parameter blob: what is left of 4096 bytes after the suite byte,
#: ephemeral and encrypted static keys and tags, rounded down.
MAX_TRANSPORT_PARAMS = 3840
PROLOGUE_LABEL = b"dquic/1"
PATTERN_IDS = {"NK": 1, "IK": 2, "NX": 3, "XX": 4}
_PATTERN_BY_ID = {v: k for k, v in PATTERN_IDS.items()}
_PSK_FLAG = 0x10
_AES_FLAG = 0x20
_PSK_POSITION = {"NK": 2, "IK": 2, "NX": 2, "XX": 3}
_MESSAGES = {"NK": 2, "IK": 2, "NX": 2, "XX": 3}
_HASH_FOR = {"ChaChaPoly": "BLAKE2s", "AESGCM": "SHA256"}
_CLIENT_IDENTIFIED = ("IK", "XX")


def suite_id(pattern: str, cipher: str, psk: bool) -> int:
    """The first-byte suite identifier for a base pattern, cipher and psk use."""
    if pattern not in PATTERN_IDS or cipher not in _HASH_FOR:
        raise ValueError("unsupported pattern or cipher")
    return PATTERN_IDS[pattern] | (_PSK_FLAG if psk else 0) | (_AES_FLAG if cipher == "AESGCM" else 0)


def parse_suite_id(value: int) -> Tuple[str, str, bool]:
    """(pattern, cipher, psk) for a suite id; ProtocolError(HANDSHAKE_FAILED) if unknown."""
    pattern = _PATTERN_BY_ID.get(value & 0x0F)
    if pattern is None or value & ~(0x0F | _PSK_FLAG | _AES_FLAG):
        raise ProtocolError("unknown handshake suite 0x%02x" % value, ErrorCode.HANDSHAKE_FAILED)
    return pattern, ("AESGCM" if value & _AES_FLAG else "ChaChaPoly"), bool(value & _PSK_FLAG)


def _noise_name(pattern: str, cipher: str, psk: bool) -> str:
    full = pattern + ("psk%d" % _PSK_POSITION[pattern] if psk else "")
    return protocol_name(full, cipher, _HASH_FOR[cipher])


# Every (pattern, cipher, psk) combination is known up front: name them once.
_NOISE_NAMES = {
    (pattern, cipher, psk): _noise_name(pattern, cipher, psk)
    for pattern in PATTERN_IDS for cipher in _HASH_FOR for psk in (False, True)
}


def _full_prologue(sid: int, prologue: bytes) -> bytes:
    if type(prologue) is not bytes:
        prologue = bytes(prologue)
    n = len(prologue)
    if n > 0xFFFF:
        raise ValueError("prologue too long")
    return b"".join((PROLOGUE_LABEL, bytes((sid, n >> 8, n & 0xFF)), prologue))


def _check_psk(psk: Optional[bytes]) -> Optional[bytes]:
    if psk is None:
        return None
    psk = bytes(psk)
    if len(psk) != 32:
        raise ValueError("pre-shared keys are 32 bytes")
    return psk


def _trusted(keys: Optional[Iterable]) -> Optional[frozenset]:
    if keys is None:
        return None
    return frozenset(load_public(k) for k in keys)


class _Handshake:
    """State shared by both roles; see the module docstring for the protocol."""

    is_client: bool

    def __init__(self, transport_params: bytes, prologue: bytes) -> None:
        self._transport_params = bytes(transport_params)
        if len(self._transport_params) > MAX_TRANSPORT_PARAMS:
            raise ValueError("transport parameters exceed %d bytes" % MAX_TRANSPORT_PARAMS)
        self._prologue = bytes(prologue)
        if len(self._prologue) > 0xFFFF:
            raise ValueError("prologue too long")
        self._hs: Optional[HandshakeState] = None
        self._failed = False
        self._keys: Optional[OneRttKeys] = None
        self._secrets: Optional[Tuple[bytes, bytes]] = None
        self.complete = False
        self.peer_static: Optional[bytes] = None
        # the static key the peer revealed, trusted or not (kept after a refusal, so whoever
        # reports it can say which key was refused); peer_static is set only once trusted
        self.presented_key: Optional[bytes] = None
        self.peer_transport_params: Optional[bytes] = None
        self.pattern: Optional[str] = None
        self.cipher: Optional[str] = None
        self.protocol_name: Optional[str] = None
        self._handshake_hash: Optional[bytes] = None

    # ------------------------------------------------------------------ info
    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash (a channel binding), available once complete."""
        if self._handshake_hash is None:
            raise RuntimeError("handshake not complete")
        return self._handshake_hash

    @property
    def handshake_messages_count(self) -> Optional[int]:
        """Total handshake messages for the chosen pattern (2 or 3), once chosen."""
        return _MESSAGES[self.pattern] if self.pattern else None

    @property
    def client_sends_last(self) -> Optional[bool]:
        """True for XX (the client sends message 3); False for the 2-message patterns."""
        return None if self.pattern is None else _MESSAGES[self.pattern] == 3

    # ------------------------------------------------------------------ helpers
    def _fail(self, exc: Exception) -> Exception:
        self._failed = True
        self._hs = None
        return exc

    def _check_incoming(self, message) -> bytes:
        if self._failed:
            raise ProtocolError("handshake already failed", ErrorCode.HANDSHAKE_FAILED)
        if self.complete:
            raise self._fail(ProtocolError("unexpected handshake message after completion", ErrorCode.HANDSHAKE_FAILED))
        try:
            data = message if type(message) is bytes else bytes(message)
        except TypeError:
            raise self._fail(ProtocolError("handshake message is not bytes", ErrorCode.HANDSHAKE_FAILED)) from None
        if not data or len(data) > MAX_HANDSHAKE_MESSAGE:
            raise self._fail(ProtocolError("handshake message size %d out of range" % len(data), ErrorCode.HANDSHAKE_FAILED))
        return data

    def _read(self, data: bytes) -> bytes:
        assert self._hs is not None
        try:
            return self._hs.read_message(data)
        except NoiseError as exc:
            raise self._fail(ProtocolError(str(exc), ErrorCode.HANDSHAKE_FAILED)) from None

    def _write(self, payload: bytes, prefix: bytes = b"") -> bytes:
        assert self._hs is not None
        out = prefix + self._hs.write_message(payload)
        if len(out) > MAX_HANDSHAKE_MESSAGE:
            raise self._fail(ValueError("handshake message would exceed 4096 bytes; transport parameters too large"))
        return out

    def _finish(self) -> None:
        hs = self._hs
        assert hs is not None
        self._handshake_hash = hs.get_handshake_hash()
        # Split's raw keys (the Noise state forgets them): they are our traffic secrets.
        k_i2r, k_r2i = hs.take_split_keys()
        self._secrets = (k_i2r, k_r2i) if self.is_client else (k_r2i, k_i2r)
        self._hs = None
        self.complete = True

    def protections(self, *, key_update_interval: int = DEFAULT_KEY_UPDATE_INTERVAL) -> Tuple[PacketProtection, PacketProtection]:
        """(send, receive) 1-RTT packet protection, once ``complete``.

        Both views share one ``OneRttKeys`` (``send.keys``) that handles key updates.
        The first call creates it and forgets the raw traffic secrets; later calls return
        the same pair.
        """
        if not self.complete:
            raise RuntimeError("handshake not complete")
        if self._keys is None:
            assert self._secrets is not None and self.cipher is not None  # set by completion
            send_secret, recv_secret = self._secrets
            self._keys = OneRttKeys(send_secret, recv_secret, self.cipher, key_update_interval=key_update_interval)
            self._secrets = None
        return self._keys.sender, self._keys.receiver

    @property
    def one_rtt_keys(self) -> OneRttKeys:
        """The shared key-update state behind ``protections()``."""
        self.protections()
        assert self._keys is not None
        return self._keys


class ClientHandshake(_Handshake):
    """The initiator. Call ``start()`` once, send its bytes, then feed replies to ``receive``."""

    is_client = True

    def __init__(
        self,
        *,
        identity: Optional[KeyPair],
        server_key: Optional[bytes],
        trusted_peers: Optional[List[bytes]],
        psk: Optional[bytes],
        transport_params: bytes,
        prologue: bytes,
        cipher: str = "AESGCM",
    ) -> None:
        """Choose the pattern: a pinned ``server_key`` (or a single ``trusted_peers``
        entry) gives NK/IK, otherwise NX/XX with the server key checked against
        ``trusted_peers`` (if given; with neither, any server key is accepted and left in
        ``peer_static`` for the application to judge). ``identity`` selects IK/XX."""
        super().__init__(transport_params, prologue)
        if cipher not in _HASH_FOR:
            raise ValueError("cipher must be 'ChaChaPoly' or 'AESGCM'")
        if identity is not None and not isinstance(identity, KeyPair):
            raise TypeError("identity must be a KeyPair")
        self._identity = identity
        self._psk = _check_psk(psk)
        self._trusted = _trusted(trusted_peers)
        pinned = load_public(server_key) if server_key is not None else None
        if pinned is None and self._trusted is not None and len(self._trusted) == 1:
            (pinned,) = tuple(self._trusted)
        if self._trusted is not None and not self._trusted and pinned is None:
            raise ValueError("trusted_peers is empty: no server could be accepted")
        self._pinned = pinned
        if pinned is not None:
            pattern = "IK" if identity is not None else "NK"
        else:
            pattern = "XX" if identity is not None else "NX"
        self.pattern = pattern
        self.cipher = cipher
        self.protocol_name = _NOISE_NAMES[pattern, cipher, self._psk is not None]
        self._suite = suite_id(pattern, cipher, self._psk is not None)
        self._started = False

    def start(self) -> bytes:
        """Build message 1 (suite id byte + Noise message). Call exactly once."""
        if self._started:
            raise RuntimeError("start() already called")
        self._started = True
        assert self.protocol_name is not None  # chosen in __init__
        self._hs = HandshakeState(
            self.protocol_name,
            True,
            _full_prologue(self._suite, self._prologue),
            s=self._identity,  # a KeyPair (or None): its key object is reused
            rs=self._pinned,
            psks=[self._psk] if self._psk is not None else (),
        )
        # XX: message 1 is sent before any key exists; keep the parameters for message 3.
        payload = b"" if self.pattern == "XX" else self._transport_params
        return self._write(payload, bytes([self._suite]))

    def receive(self, message: bytes) -> Optional[bytes]:
        """Process message 2. Returns message 3 for XX (send it), else None.

        Afterwards ``complete`` is true and ``peer_static``/``peer_transport_params`` set.
        """
        if not self._started and not self._failed:
            raise RuntimeError("call start() first")
        data = self._check_incoming(message)
        payload = self._read(data)
        assert self._hs is not None
        server_static = self._hs.remote_static
        self.presented_key = server_static
        if self._pinned is None and self._trusted is not None and server_static not in self._trusted:
            raise self._fail(AuthenticationError("server static key is not trusted"))
        self.peer_static = server_static
        self.peer_transport_params = payload
        reply = None
        if self.pattern == "XX":
            reply = self._write(self._transport_params)
        self._finish()
        return reply


class ServerHandshake(_Handshake):
    """The responder. Feed every handshake message to ``receive`` and send what it returns."""

    is_client = False

    def __init__(
        self,
        *,
        identity: KeyPair,
        trusted_peers: Optional[List[bytes]],
        psk: Optional[bytes],
        transport_params: bytes,
        prologue: bytes,
    ) -> None:
        """``trusted_peers`` (client public keys) makes client identity mandatory: NK/NX
        are refused and unknown client keys rejected. ``psk`` makes the psk patterns
        mandatory (and non-psk ones refused)."""
        super().__init__(transport_params, prologue)
        if not isinstance(identity, KeyPair):
            raise TypeError("the server needs a KeyPair identity")
        self._identity = identity
        self._psk = _check_psk(psk)
        self._trusted = _trusted(trusted_peers)

    def receive(self, message: bytes) -> Optional[bytes]:
        """Process message 1 (returns message 2) or, for XX, message 3 (returns None)."""
        data = self._check_incoming(message)
        if self._hs is None:
            return self._first(data)
        payload = self._read(data)
        # XX message 3: the client identity arrives now.
        client_static = self._hs.remote_static
        self.presented_key = client_static
        if self._trusted is not None and client_static not in self._trusted:
            raise self._fail(AuthenticationError("client static key is not trusted"))
        self.peer_static = client_static
        self.peer_transport_params = payload
        self._finish()
        return None

    def _first(self, data: bytes) -> bytes:
        try:
            pattern, cipher, uses_psk = parse_suite_id(data[0])
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if self._trusted is not None and pattern not in _CLIENT_IDENTIFIED:
            raise self._fail(AuthenticationError("client identity required but pattern %s has none" % pattern))
        if (self._psk is not None) != uses_psk:
            raise self._fail(AuthenticationError("pre-shared key %s" % ("required" if self._psk else "not configured")))
        self.pattern, self.cipher = pattern, cipher
        self.protocol_name = _NOISE_NAMES[pattern, cipher, uses_psk]
        self._hs = HandshakeState(
            self.protocol_name,
            False,
            _full_prologue(data[0], self._prologue),
            s=self._identity,
            psks=[self._psk] if self._psk is not None and uses_psk else (),
        )
        payload = self._read(data[1:])
        if pattern == "IK":
            client_static = self._hs.remote_static
            self.presented_key = client_static
            if self._trusted is not None and client_static not in self._trusted:
                raise self._fail(AuthenticationError("client static key is not trusted"))
            self.peer_static = client_static
        if pattern == "XX":
            if payload:
                raise self._fail(ProtocolError("unexpected payload in XX message 1", ErrorCode.HANDSHAKE_FAILED))
        else:
            self.peer_transport_params = payload
        reply = self._write(self._transport_params)
        if pattern != "XX":
            self._finish()
        return reply
