"""Benchmarks of the handshake and packet protection.

Run: ``python3 -m pytest bench/test_bench_crypto.py --benchmark-only``.

* handshakes: one full in-process client+server exchange per round (key generation for
  the ephemerals included, static keys pre-made);
* packets: one encrypt + one decrypt of a 1200-byte payload behind an 11-byte short header,
  for ChaCha20-Poly1305 and AES-256-GCM and for each available backend ("openssl": libcrypto
  called directly from the compiled path; "cryptography": the cryptography package's
  objects), with header protection (the real path) and with the AEAD alone (the same
  nonce/AD construction, no header protection) to show its cost.

Compare the backends within one run (the figures of separate runs on a shared machine are
not comparable): ``--benchmark-group-by=group`` shows them side by side.
"""
import pytest

from dquic._protection import AVAILABLE_BACKENDS, OneRttKeys, _Keys
from dquic.handshake import ClientHandshake, ServerHandshake
from dquic.keys import KeyPair

SERVER = KeyPair.generate()
CLIENT = KeyPair.generate()
CIDS = b"\x08abcdefgh\x08ijklmnop"
TP = bytes(64)
PAYLOAD = bytes(1200)
HEADER = b"\x41" + b"D" * 8 + b"\x00\x00"


def header(pn):
    return HEADER[:-2] + (pn & 0xFFFF).to_bytes(2, "big")

CLIENT_ARGS = {
    "NK": dict(identity=None, server_key=SERVER.public, trusted_peers=None),
    "IK": dict(identity=CLIENT, server_key=SERVER.public, trusted_peers=None),
    "NX": dict(identity=None, server_key=None, trusted_peers=[SERVER.public, CLIENT.public]),
    "XX": dict(identity=CLIENT, server_key=None, trusted_peers=[SERVER.public, CLIENT.public]),
}


def handshake_once(pattern, cipher):
    c = ClientHandshake(psk=None, transport_params=TP, prologue=CIDS, cipher=cipher, **CLIENT_ARGS[pattern])
    s = ServerHandshake(identity=SERVER, trusted_peers=None, psk=None, transport_params=TP, prologue=CIDS)
    m = s.receive(c.start())
    m = c.receive(m)
    if m is not None:
        s.receive(m)
    c.protections()
    s.protections()
    assert c.complete and s.complete


@pytest.mark.benchmark(group="handshake")
@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
@pytest.mark.parametrize("pattern", ["NK", "IK", "NX", "XX"])
def test_handshake(benchmark, pattern, cipher):
    benchmark(handshake_once, pattern, cipher)


def _pair(cipher, backend=None):
    a = OneRttKeys(bytes(range(32)), bytes(range(1, 33)), cipher, backend=backend)
    b = OneRttKeys(bytes(range(1, 33)), bytes(range(32)), cipher, backend=backend)
    return a, b


@pytest.mark.benchmark(group="packet-1200B")
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_packet_roundtrip_with_hp(benchmark, cipher, backend):
    a, b = _pair(cipher, backend)
    enc, dec = a.sender.encrypt_packet, b.receiver.decrypt_packet
    state = {"pn": 0}

    def roundtrip():
        pn = state["pn"]
        state["pn"] = pn + 1
        pkt = enc(header(pn), PAYLOAD, pn)
        return dec(pkt, 9, pn)

    _, payload, _ = benchmark(roundtrip)
    assert payload == PAYLOAD


@pytest.mark.benchmark(group="packet-1200B")
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_packet_roundtrip_aead_only(benchmark, cipher, backend):
    # the same keys object on both ends: sealing and opening use separate contexts
    keys = _Keys(cipher, bytes(range(32)), backend)
    seal, open_ = keys.seal, keys.open
    state = {"pn": 0}

    def roundtrip():
        pn = state["pn"]
        state["pn"] = pn + 1
        return open_(pn, HEADER, seal(pn, HEADER, PAYLOAD))

    assert benchmark(roundtrip) == PAYLOAD


@pytest.mark.benchmark(group="header-protection")
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_header_protection_mask(benchmark, cipher, backend):
    a, _ = _pair(cipher, backend)
    sample = bytes(range(16))
    benchmark(a._hp_send.mask, sample)
