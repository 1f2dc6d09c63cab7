from typing import Dict, Optional, Tuple, Union
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic.errors import ProtocolError

__all__ = ["DecryptionFailed", "PacketProtection", "NullProtection", "OneRttKeys", "derive_packet_keys", "hmac_sha256", "next_secret", "decode_packet_number", "use_backend", "BACKEND", "AVAILABLE_BACKENDS", "OPENSSL_VERSION", "OPENSSL_LIBRARY", "TAG_SIZE", "SAMPLE_SIZE", "KEY_PHASE_BIT", "CONFIDENTIALITY_LIMITS", "INTEGRITY_LIMITS", "DEFAULT_KEY_UPDATE_INTERVAL"]

TAG_SIZE: int
SAMPLE_SIZE: int
KEY_PHASE_BIT: int
CONFIDENTIALITY_LIMITS: Dict[str, Optional[int]]
INTEGRITY_LIMITS: Dict[str, int]
DEFAULT_KEY_UPDATE_INTERVAL: int
#: "openssl" (libcrypto called directly) or "cryptography": the default backend of new keys.
BACKEND: str
#: Backends this build can use, the preferred first ("cryptography" is always last).
AVAILABLE_BACKENDS: Tuple[str, ...]
#: Version string of the libcrypto called directly, None without the openssl backend.
OPENSSL_VERSION: Optional[str]
#: The file that libcrypto was loaded from (as the dynamic linker resolved it), None without
#: the openssl backend or where the platform cannot say.
OPENSSL_LIBRARY: Optional[str]

_Buffer = Union[bytes, bytearray, memoryview]

class DecryptionFailed(ProtocolError):
    def __init__(self, message: str = ...) -> None: ...

def derive_packet_keys(secret: bytes) -> Tuple[bytes, bytes, bytes]: ...
def next_secret(secret: bytes) -> bytes: ...
def hmac_sha256(key: _Buffer, data: _Buffer) -> bytes: ...
def decode_packet_number(truncated: int, pn_nbits: int, expected: int) -> int: ...
def use_backend(name: str) -> str: ...

@disjoint_base
class _HeaderProtection:
    def __init__(self, cipher: str, hp_key: bytes, backend: Optional[str] = None) -> None: ...
    @property
    def backend(self) -> str: ...
    def mask(self, sample: _Buffer) -> bytes: ...

@disjoint_base
class _Keys:
    secret: bytes
    aead: object
    def __init__(self, cipher: str, secret: bytes, backend: Optional[str] = None) -> None: ...
    @staticmethod
    def from_key_iv(cipher: str, key: bytes, iv: bytes, backend: Optional[str] = None) -> "_Keys": ...
    @property
    def backend(self) -> str: ...
    def seal(self, packet_number: int, ad: _Buffer, payload: _Buffer) -> bytes: ...
    def open(self, packet_number: int, ad: _Buffer, ciphertext: _Buffer) -> bytes: ...

@disjoint_base
class PacketProtection:
    keys: "OneRttKeys"
    sending: bool
    tag_size: int
    def __init__(self, keys: "OneRttKeys", sending: bool) -> None: ...
    @property
    def key_phase(self) -> int: ...
    def encrypt_packet(self, plain_header: _Buffer, plain_payload: _Buffer, packet_number: int) -> bytes: ...
    def decrypt_packet(
        self, packet: _Buffer, pn_offset: int, expected_packet_number: int
    ) -> Tuple[bytes, bytes, int]: ...
    def request_key_update(self) -> None: ...
    def discard_old_keys(self) -> None: ...

@disjoint_base
class OneRttKeys:
    cipher: str
    backend: str
    confidentiality_limit: Optional[int]
    integrity_limit: int
    key_update_interval: int
    key_phase: int
    generation: int
    key_updates: int
    packets_sent_in_phase: int
    packets_received_in_phase: int
    failed_decryptions: int
    integrity_limit_reached: bool
    sender: PacketProtection
    receiver: PacketProtection
    _hp_send: _HeaderProtection
    _hp_recv: _HeaderProtection
    _send: _Keys
    _recv: _Keys
    _prev_recv: Optional[_Keys]
    _next_recv: _Keys
    def __init__(
        self,
        send_secret: bytes,
        recv_secret: bytes,
        cipher: str = "ChaChaPoly",
        *,
        key_update_interval: int = ...,
        confidentiality_limit: Optional[int] = ...,
        integrity_limit: Optional[int] = None,
        backend: Optional[str] = None,
    ) -> None: ...
    @property
    def can_update(self) -> bool: ...
    @property
    def has_old_keys(self) -> bool: ...
    def update_keys(self) -> None: ...
    def discard_old_keys(self) -> None: ...
    def release_contexts(self) -> None: ...
    @property
    def contexts(self) -> int: ...

class NullProtection:
    tag_size: int
    key_phase: int
    keys: None
    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes: ...
    def decrypt_packet(
        self, packet: _Buffer, pn_offset: int, expected_packet_number: int
    ) -> Tuple[bytes, bytes, int]: ...
