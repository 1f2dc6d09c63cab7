"""PROTOCOL.md Appendix A (worked examples) against an independent computation and against dquic.

The appendix's values are read from the document; ``protocol_vectors`` recomputes them from the
document's text with ``cryptography``'s primitives; dquic's packet protection, codec, Retry tag and
reset tokens must produce the same bytes (with every packet-protection backend this build has).
"""
from __future__ import annotations

import os
import re

import pytest

import protocol_vectors as pv
from dquic import _protection
from dquic._codec import DQUIC_VERSION_1, encode_retry
from dquic._frames import PingFrame, StreamFrame, decode_frames
from dquic.endpoint import reset_key_for
from dquic.keys import KeyPair
from dquic.tokens import ResetTokens, retry_integrity_tag

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "PROTOCOL.md")
CIPHERS = {"aes": "AESGCM", "chacha": "ChaChaPoly"}


def _appendix() -> dict:
    text = open(DOC, encoding="utf-8").read()
    start = text.index("## Appendix A.")
    values: dict = {}
    name = None
    for line in text[start:].splitlines():
        m = re.match(r"([a-z_0-9]+\.[a-z_0-9]+) = ([0-9a-f]+)$", line)
        if m:
            name = m.group(1)
            values[name] = m.group(2)
        elif name is not None and re.match(r"\s+[0-9a-f]+$", line):
            values[name] += line.strip()  # a wrapped value goes on below its name
        else:
            name = None
    return {k: bytes.fromhex(v) for k, v in values.items()}


DOCUMENTED = _appendix()


def test_appendix_shows_what_the_text_specifies():
    independent = pv.all_vectors()
    assert set(DOCUMENTED) == set(independent)
    for name, value in independent.items():
        assert DOCUMENTED[name] == value, name


def test_key_schedule():
    key, iv, hp = _protection.derive_packet_keys(pv.SECRET)
    assert (key, iv, hp) == (DOCUMENTED["keys.key"], DOCUMENTED["keys.iv"], DOCUMENTED["keys.hp"])
    assert _protection.next_secret(pv.SECRET) == DOCUMENTED["keys.next_secret"]


@pytest.mark.parametrize("backend", _protection.AVAILABLE_BACKENDS)
@pytest.mark.parametrize("suite", sorted(CIPHERS))
def test_protected_packet(suite, backend):
    keys = _protection.OneRttKeys(pv.SECRET, pv.SECRET, CIPHERS[suite], backend=backend)
    header, payload = DOCUMENTED[f"{suite}.header"], pv.PAYLOAD
    packet = keys.sender.encrypt_packet(header, payload, pv.PACKET_NUMBER)
    assert packet == DOCUMENTED[f"{suite}.packet"]
    # and back: the receiver removes header protection and opens it
    got_header, got_payload, pn = keys.receiver.decrypt_packet(DOCUMENTED[f"{suite}.packet"],
                                                               1 + len(pv.DCID), pv.PACKET_NUMBER)
    assert (bytes(got_header), bytes(got_payload), pn) == (header, payload, pv.PACKET_NUMBER)
    # one flipped bit anywhere and it does not open
    bad = bytearray(packet)
    bad[-1] ^= 1
    with pytest.raises(_protection.DecryptionFailed):
        keys.receiver.decrypt_packet(bytes(bad), 1 + len(pv.DCID), pv.PACKET_NUMBER)


def test_payload_is_the_frames_described():
    assert decode_frames(pv.PAYLOAD) == [StreamFrame(4, 0, b"\x05hello", fin=True), PingFrame()]


def test_retry_integrity_tag():
    body = encode_retry(DQUIC_VERSION_1, pv.RETRY_DCID, pv.RETRY_SCID, pv.RETRY_TOKEN)
    assert body == DOCUMENTED["retry.retry_without_tag"]
    assert retry_integrity_tag(pv.RETRY_ORIGINAL_DCID, body) == DOCUMENTED["retry.tag"]


def test_stateless_reset_tokens():
    assert ResetTokens(pv.RESET_KEY)(pv.RESET_CID) == DOCUMENTED["reset.token"]
    key = reset_key_for(KeyPair.from_private(pv.STATIC_PRIVATE))
    assert key == DOCUMENTED["reset.key_from_static"]
    assert ResetTokens(key)(pv.RESET_CID) == DOCUMENTED["reset.token_from_static"]


def test_noise_prologue():
    from dquic.config import Configuration
    from dquic.connection import CoreConnection
    from dquic.handshake import _full_prologue

    client = CoreConnection(Configuration(), ("192.0.2.1", 4433), host_cid=pv.PROLOGUE_CLIENT_SCID,
                            original_dcid=pv.PROLOGUE_ORIGINAL_DCID)
    assert client._prologue() == DOCUMENTED["noise.ctx"]
    assert _full_prologue(pv.PROLOGUE_SUITE, client._prologue()) == DOCUMENTED["noise.prologue"]


def test_nk_handshake(monkeypatch):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from dquic import _noise
    from dquic.handshake import ClientHandshake, ServerHandshake

    ephemerals = iter([pv.NK_CLIENT_EPHEMERAL, pv.NK_SERVER_EPHEMERAL])
    monkeypatch.setattr(_noise, "_generate_private",
                        lambda: X25519PrivateKey.from_private_bytes(next(ephemerals)))
    server_key = KeyPair.from_private(pv.NK_SERVER_STATIC)
    assert server_key.public == DOCUMENTED["nk.server_static_public"]
    ctx = DOCUMENTED["noise.ctx"]
    client = ClientHandshake(identity=None, server_key=server_key.public, trusted_peers=None, psk=None,
                             transport_params=pv.NK_CLIENT_PARAMS, prologue=ctx, cipher="AESGCM")
    server = ServerHandshake(identity=server_key, trusted_peers=None, psk=None,
                             transport_params=pv.NK_SERVER_PARAMS, prologue=ctx)
    message1 = client.start()
    assert message1 == DOCUMENTED["nk.message1"]
    message2 = server.receive(message1)
    assert message2 == DOCUMENTED["nk.message2"]
    assert client.receive(message2) is None
    assert client.complete and server.complete
    assert client.peer_transport_params == pv.NK_SERVER_PARAMS
    assert server.peer_transport_params == pv.NK_CLIENT_PARAMS
    assert client.handshake_hash == server.handshake_hash == DOCUMENTED["nk.handshake_hash"]
    secrets = (DOCUMENTED["nk.client_secret"], DOCUMENTED["nk.server_secret"])
    assert client._secrets == secrets and server._secrets == secrets[::-1]
