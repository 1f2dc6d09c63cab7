"""PROTOCOL.md Appendix A, recomputed from the document's own text with ``cryptography``'s
primitives (HKDF-Expand, AES-256-GCM, ChaCha20-Poly1305, AES-ECB, ChaCha20) and ``hmac``, none
of dquic's code: what a second implementation would compute. ``tests/test_protocol_vectors.py``
checks that the appendix shows exactly these values and that dquic produces them too.

``python tests/protocol_vectors.py`` prints the values (used to write the appendix).
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

SECRET = bytes(range(32))
DCID = bytes.fromhex("8394c8f03e515708")
PACKET_NUMBER = 0x1234  # sent with a 2-byte packet number field
# a STREAM frame (type 0x0b: OFF clear, LEN and FIN set) on stream 4 carrying one message
# "hello" (length prefix 0x05), then a PING frame
PAYLOAD = bytes([0x0B, 0x04, 0x06, 0x05]) + b"hello" + bytes([0x01])
RETRY_ORIGINAL_DCID = bytes.fromhex("8394c8f03e515708")
RETRY_DCID = bytes.fromhex("f067a5502a4262b5")   # the client's source connection ID
RETRY_SCID = bytes.fromhex("5300d1e3")           # the server's new connection ID (4 bytes here)
RETRY_TOKEN = b"retry token example"
RESET_KEY = bytes(range(0x20, 0x40))
RESET_CID = DCID
STATIC_PRIVATE = bytes(range(0x40, 0x60))
PROLOGUE_ORIGINAL_DCID = bytes.fromhex("8394c8f03e515708")
PROLOGUE_CLIENT_SCID = bytes.fromhex("f067a5502a4262b5")
PROLOGUE_SUITE = 0x21  # NK (1) with the AES suite (0x20)
# the NK handshake of A.7: fixed keys (real ephemeral keys are fresh random ones)
NK_SERVER_STATIC = bytes(range(0x60, 0x80))
NK_CLIENT_EPHEMERAL = bytes(range(0x80, 0xA0))
NK_SERVER_EPHEMERAL = bytes(range(0xA0, 0xC0))
# transport parameters (§12.2): initial_max_data (0x04) = 1048576, initial_max_streams (0x08) = 16
NK_CLIENT_PARAMS = bytes.fromhex("0404801000000801" "10")
NK_SERVER_PARAMS = bytes.fromhex("0404801000000801" "10")


def expand(secret: bytes, label: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), n, label).derive(secret)


def key_schedule(secret: bytes = SECRET) -> dict:
    return {"key": expand(secret, b"dquic key", 32), "iv": expand(secret, b"dquic iv", 12),
            "hp": expand(secret, b"dquic hp", 32), "next_secret": expand(secret, b"dquic ku", 32)}


def protect(cipher: str, secret: bytes = SECRET) -> dict:
    ks = key_schedule(secret)
    pn_len = 2
    header = bytes([0x40 | (pn_len - 1)]) + DCID + PACKET_NUMBER.to_bytes(pn_len, "big")
    nonce = bytes(a ^ b for a, b in zip(ks["iv"], PACKET_NUMBER.to_bytes(12, "big")))
    aead = AESGCM(ks["key"]) if cipher == "AES-256-GCM" else ChaCha20Poly1305(ks["key"])
    sealed = aead.encrypt(nonce, PAYLOAD, header)
    pn_offset = 1 + len(DCID)
    sample = sealed[4 - pn_len:4 - pn_len + 16]  # 16 bytes from 4 bytes after the pn field starts
    if cipher == "AES-256-GCM":
        enc = Cipher(algorithms.AES(ks["hp"]), modes.ECB()).encryptor()
        mask = enc.update(sample) + enc.finalize()
    else:
        # ChaCha20 with the sample's first 4 bytes (little endian) as counter, the rest as nonce;
        # cryptography takes the 16-byte counter||nonce block as its "nonce"
        enc = Cipher(algorithms.ChaCha20(ks["hp"], sample), mode=None).encryptor()
        mask = enc.update(bytes(5))
    first = header[0] ^ (mask[0] & 0x1F)
    pn_bytes = bytes(b ^ m for b, m in zip(header[pn_offset:], mask[1:1 + pn_len]))
    packet = bytes([first]) + DCID + pn_bytes + sealed
    return {"header": header, "nonce": nonce, "sealed": sealed, "sample": sample, "mask": mask[:5],
            "packet": packet}


def retry() -> dict:
    body = (bytes([0xF0]) + struct.pack("!I", 0x44510001) + bytes([len(RETRY_DCID)]) + RETRY_DCID
            + bytes([len(RETRY_SCID)]) + RETRY_SCID + RETRY_TOKEN)
    msg = bytes([len(RETRY_ORIGINAL_DCID)]) + RETRY_ORIGINAL_DCID + body
    tag = hmac.new(b"dquic/1 retry integrity", msg, "sha256").digest()[:16]
    return {"retry_without_tag": body, "tag": tag}


def reset() -> dict:
    derived = hmac.new(STATIC_PRIVATE, b"dquic/1 stateless reset key", "sha256").digest()
    return {"token": hmac.new(RESET_KEY, RESET_CID, "sha256").digest()[:16],
            "key_from_static": derived,
            "token_from_static": hmac.new(derived, RESET_CID, "sha256").digest()[:16]}


def prologue() -> dict:
    ctx = (b"dquic/1" + struct.pack("!I", 0x44510001) + bytes([len(PROLOGUE_ORIGINAL_DCID)])
           + PROLOGUE_ORIGINAL_DCID + bytes([len(PROLOGUE_CLIENT_SCID)]) + PROLOGUE_CLIENT_SCID)
    return {"ctx": ctx, "prologue": b"dquic/1" + bytes([PROLOGUE_SUITE]) + struct.pack("!H", len(ctx)) + ctx}


def _public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "sha256").digest()


def _noise_hkdf(ck: bytes, ikm: bytes):
    temp = _hmac(ck, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


class SymmetricState:
    """Noise's SymmetricState and CipherState (revision 34, §5.1-§5.2) for AESGCM_SHA256."""

    def __init__(self, protocol_name: bytes) -> None:
        self.h = protocol_name + bytes(32 - len(protocol_name))  # HASHLEN 32, zero-padded
        self.ck = self.h
        self.k = None
        self.n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _noise_hkdf(self.ck, ikm)
        self.n = 0

    def _nonce(self) -> bytes:
        return bytes(4) + self.n.to_bytes(8, "big")

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = AESGCM(self.k).encrypt(self._nonce(), plaintext, self.h)
        self.n += 1
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        out = AESGCM(self.k).decrypt(self._nonce(), ciphertext, self.h)
        self.n += 1
        self.mix_hash(ciphertext)
        return out

    def split(self):
        return _noise_hkdf(self.ck, b"")


def nk_start(prologue_bytes: bytes, server_public: bytes, ephemeral: bytes, params: bytes):
    """The client's side of Noise_NK_25519_AESGCM_SHA256 up to message 1 (without the suite id):
    (state, message 1)."""
    ss = SymmetricState(b"Noise_NK_25519_AESGCM_SHA256")
    ss.mix_hash(prologue_bytes)
    ss.mix_hash(server_public)  # the pre-message: <- s
    e = _public(ephemeral)  # -> e, es
    ss.mix_hash(e)
    ss.mix_key(_dh(ephemeral, server_public))
    return ss, e + ss.encrypt_and_hash(params)


def nk_finish(ss: SymmetricState, ephemeral: bytes, message2: bytes):
    """The client reads message 2 (<- e, ee): (server parameters, client->server secret,
    server->client secret)."""
    e_s = message2[:32]
    ss.mix_hash(e_s)
    ss.mix_key(_dh(ephemeral, e_s))
    params = ss.decrypt_and_hash(message2[32:])
    c2s, s2c = ss.split()
    return params, c2s, s2c


def nk_handshake() -> dict:
    """Noise_NK_25519_AESGCM_SHA256 with the dquic prologue of A.6, both sides written out step
    by step: the two handshake messages as dquic sends them and the traffic secrets that
    Split() yields."""
    server_public = _public(NK_SERVER_STATIC)
    client, body1 = nk_start(prologue()["prologue"], server_public, NK_CLIENT_EPHEMERAL, NK_CLIENT_PARAMS)
    message1 = bytes([PROLOGUE_SUITE]) + body1
    # the server's side of message 2: it mirrors the client's state after message 1
    server = SymmetricState(b"Noise_NK_25519_AESGCM_SHA256")
    server.mix_hash(prologue()["prologue"])
    server.mix_hash(server_public)
    server.mix_hash(body1[:32])
    server.mix_key(_dh(NK_SERVER_STATIC, body1[:32]))
    assert server.decrypt_and_hash(body1[32:]) == NK_CLIENT_PARAMS
    e_s = _public(NK_SERVER_EPHEMERAL)
    server.mix_hash(e_s)
    server.mix_key(_dh(NK_SERVER_EPHEMERAL, body1[:32]))
    message2 = e_s + server.encrypt_and_hash(NK_SERVER_PARAMS)
    params, c2s, s2c = nk_finish(client, NK_CLIENT_EPHEMERAL, message2)
    assert params == NK_SERVER_PARAMS and (c2s, s2c) == server.split() and client.h == server.h
    return {"server_static_public": server_public, "message1": message1, "message2": message2,
            "handshake_hash": client.h, "client_secret": c2s, "server_secret": s2c}


def all_vectors() -> dict:
    out = {f"keys.{k}": v for k, v in key_schedule().items()}
    for cipher, tag in (("AES-256-GCM", "aes"), ("ChaCha20-Poly1305", "chacha")):
        out.update({f"{tag}.{k}": v for k, v in protect(cipher).items()})
    out.update({f"retry.{k}": v for k, v in retry().items()})
    out.update({f"reset.{k}": v for k, v in reset().items()})
    out.update({f"noise.{k}": v for k, v in prologue().items()})
    out.update({f"nk.{k}": v for k, v in nk_handshake().items()})
    return out


if __name__ == "__main__":
    for name, value in all_vectors().items():
        print(f"{name:24} {value.hex()}")
