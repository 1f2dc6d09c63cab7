"""PROTOCOL.md Appendix A, recomputed from the document's own text with ``cryptography``'s
primitives (HKDF-Expand, AES-256-GCM, ChaCha20-Poly1305, AES-ECB, ChaCha20) and ``hmac``, none
of dquic's code: what a second implementation would compute. ``tests/test_protocol_vectors.py``
checks that the appendix shows exactly these values and that dquic produces them too.

``python tests/protocol_vectors.py`` prints the values (used to write the appendix).
"""
from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives import hashes
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


def all_vectors() -> dict:
    out = {f"keys.{k}": v for k, v in key_schedule().items()}
    for cipher, tag in (("AES-256-GCM", "aes"), ("ChaCha20-Poly1305", "chacha")):
        out.update({f"{tag}.{k}": v for k, v in protect(cipher).items()})
    out.update({f"retry.{k}": v for k, v in retry().items()})
    out.update({f"reset.{k}": v for k, v in reset().items()})
    out.update({f"noise.{k}": v for k, v in prologue().items()})
    return out


if __name__ == "__main__":
    for name, value in all_vectors().items():
        print(f"{name:24} {value.hex()}")
