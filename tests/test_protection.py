"""Tests for dquic._protection: packet protection, header protection, key update, limits.

Every test runs once per available backend ("openssl" when the extension links libcrypto,
and always "cryptography"); the parity tests at the end check both give identical bytes.
"""
from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic import _protection
from dquic._protection import (
    AVAILABLE_BACKENDS,
    KEY_PHASE_BIT,
    DecryptionFailed,
    NullProtection,
    OneRttKeys,
    _HeaderProtection,
    decode_packet_number,
    derive_packet_keys,
    next_secret,
)
from dquic.errors import ErrorCode, ProtocolError

SUITES = ["ChaChaPoly", "AESGCM"]
DCID = bytes(range(8))


@pytest.fixture(autouse=True)
def _every_backend(backend):
    """Every test here runs once per backend (the ``backend`` fixture of conftest.py)."""


def _secret(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def pair(cipher="ChaChaPoly", **kw):
    a_to_b, b_to_a = _secret("a->b " + cipher), _secret("b->a " + cipher)
    return OneRttKeys(a_to_b, b_to_a, cipher, **kw), OneRttKeys(b_to_a, a_to_b, cipher, **kw)


def short_header(pn: int, pn_len: int = 2) -> bytes:
    return bytes([0x40 | (pn_len - 1)]) + DCID + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")


def long_header(pn: int, pn_len: int = 2) -> bytes:
    # Long-header shaped bytes (type HANDSHAKE); the length field is not interpreted here.
    return (
        bytes([0xC0 | 0x20 | (pn_len - 1)]) + b"\x00\x00\x00\x01" + b"\x08" + DCID + b"\x00" + b"\x40\x40"
        + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    )


class Flow:
    """One direction: sender keys, receiver keys and the receiver's largest pn."""

    def __init__(self, tx: OneRttKeys, rx: OneRttKeys):
        self.tx, self.rx, self.next_pn, self.largest = tx, rx, 0, -1

    def seal(self, payload=b"hello world, this is a payload", pn_len=2):
        pn = self.next_pn
        self.next_pn += 1
        return pn, self.tx.sender.encrypt_packet(short_header(pn, pn_len), payload, pn)

    def open(self, packet):
        hdr, payload, pn = self.rx.receiver.decrypt_packet(packet, 1 + len(DCID), self.largest + 1)
        self.largest = max(self.largest, pn)
        return hdr, payload, pn


# ------------------------------------------------------------------ key schedule


def test_derivation_is_deterministic_and_distinct():
    s = _secret("x")
    k, iv, hp = derive_packet_keys(s)
    assert (len(k), len(iv), len(hp)) == (32, 12, 32)
    assert derive_packet_keys(s) == (k, iv, hp)
    assert len({k, hp, next_secret(s), s}) == 4
    assert derive_packet_keys(next_secret(s))[2] != hp  # (hp stays from generation 0 in use)
    with pytest.raises(ValueError):
        derive_packet_keys(b"short")


def test_rfc9001_chacha_header_protection_vector():
    # RFC 9001 Appendix A.5.
    hp = _HeaderProtection("ChaChaPoly", bytes.fromhex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"))
    assert hp.mask(bytes.fromhex("5e5cd55c41f69080575d7999c25a5bfb"))[:5] == bytes.fromhex("aefefe7d03")


def test_rfc9001_aes_header_protection_vector():
    # RFC 9001 Appendix A.2 (AES-128 key; the AES-256 path is the same code).
    hp = _HeaderProtection("AESGCM", bytes.fromhex("9f50449e04a0e810283a1e9933adedd2"))
    assert hp.mask(bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b"))[:5] == bytes.fromhex("437b9aec36")


def test_rfc9001_chacha_short_header_packet_vector():
    """RFC 9001 A.5 end to end: nonce construction, AEAD with header AD, HP application."""
    from dquic._protection import _Keys

    a, b = pair("ChaChaPoly")
    key = bytes.fromhex("c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8")
    iv = bytes.fromhex("e0459b3474bdd0e44a41c144")
    hp_key = bytes.fromhex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4")
    assert a.backend == _protection.BACKEND
    a._send = _Keys.from_key_iv("ChaChaPoly", key, iv)
    b._recv = _Keys.from_key_iv("ChaChaPoly", key, iv)
    a._hp_send = _HeaderProtection("ChaChaPoly", hp_key)
    b._hp_recv = _HeaderProtection("ChaChaPoly", hp_key)
    pn = 654360564
    packet = a.sender.encrypt_packet(bytes.fromhex("4200bff4"), b"\x01", pn)
    assert packet == bytes.fromhex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb")
    hdr, payload, got_pn = b.receiver.decrypt_packet(packet, 1, pn - 5)
    assert (hdr, payload, got_pn) == (bytes.fromhex("4200bff4"), b"\x01", pn)


@pytest.mark.parametrize(
    "truncated,nbits,expected,full",
    [
        (0x9B32, 16, 0xA82F30EB, 0xA82F9B32),  # RFC 9000 A.3 example
        (0x00, 8, 0x100, 0x100),
        (0xFF, 8, 0x100, 0xFF),
        (0x01, 8, 0x1FE, 0x201),
        (0x05, 8, 0, 5),
    ],
)
def test_decode_packet_number(truncated, nbits, expected, full):
    assert decode_packet_number(truncated, nbits, expected) == full


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("cipher", SUITES)
@pytest.mark.parametrize("pn_len", [1, 2, 3, 4])
@pytest.mark.parametrize("header", ["short", "long"])
def test_round_trip(cipher, pn_len, header):
    a, b = pair(cipher)
    make = short_header if header == "short" else long_header
    pn_offset = len(make(0, pn_len)) - pn_len
    for pn in (0, 1, 200, 70000):
        plain = make(pn, pn_len)
        payload = bytes([pn & 0xFF]) * (4 + pn % 50)
        protected = a.sender.encrypt_packet(plain, payload, pn)
        assert len(protected) == len(plain) + len(payload) + a.sender.tag_size
        # Header protection changed the packet number bytes (with overwhelming probability
        # for at least one of them) and the payload is not in the clear.
        assert protected[pn_offset:pn_offset + pn_len] != plain[pn_offset:] or protected[0] != plain[0]
        hdr, got, full = b.receiver.decrypt_packet(memoryview(protected), pn_offset, pn)
        assert got == payload and full == pn and hdr == plain


@pytest.mark.parametrize("cipher", SUITES)
def test_both_directions_independent(cipher):
    a, b = pair(cipher)
    ab, ba = Flow(a, b), Flow(b, a)
    _, p1 = ab.seal(b"from a to b")
    _, p2 = ba.seal(b"from b to a")
    assert ab.open(p1)[1] == b"from a to b"
    assert ba.open(p2)[1] == b"from b to a"
    with pytest.raises(DecryptionFailed):  # a packet does not open in the wrong direction
        a.receiver.decrypt_packet(p1, 9, 1)


def test_wrong_view_rejected():
    a, b = pair()
    with pytest.raises(TypeError):
        a.receiver.encrypt_packet(short_header(0), b"xxxx", 0)
    with pytest.raises(TypeError):
        a.sender.decrypt_packet(b"x" * 40, 9, 0)


def test_local_misuse_value_errors():
    a, _ = pair()
    with pytest.raises(ValueError):
        a.sender.encrypt_packet(short_header(0, 1), b"ab", 0)  # 1 + 2 < 4: no sample
    with pytest.raises(ValueError):
        a.sender.encrypt_packet(b"", b"abcd", 0)
    with pytest.raises(ValueError):
        a.sender.encrypt_packet(b"\x43\x00", b"abcd", 0)  # pn_len 4 > header
    with pytest.raises(ValueError):
        a.sender.encrypt_packet(short_header(0), b"abcd", 1 << 62)
    with pytest.raises(ValueError):
        a.sender.encrypt_packet(short_header(5), b"abcd", 6)  # header pn != packet_number
    with pytest.raises(ValueError):
        NullProtection().encrypt_packet(short_header(5), b"abcd", 6)
    assert a.packets_sent_in_phase == 0


@pytest.mark.parametrize("cipher", SUITES)
def test_every_bit_flip_fails(cipher):
    a, b = pair(cipher)
    packet = a.sender.encrypt_packet(short_header(7, 2), b"tiny payload!", 7)
    assert b.receiver.decrypt_packet(packet, 9, 7)[1] == b"tiny payload!"
    for i in range(len(packet)):
        for bit in range(8):
            bad = bytearray(packet)
            bad[i] ^= 1 << bit
            with pytest.raises(DecryptionFailed):
                b.receiver.decrypt_packet(bytes(bad), 9, 7)
    assert b.failed_decryptions == len(packet) * 8
    assert b.receiver.decrypt_packet(packet, 9, 7)[1] == b"tiny payload!"  # state intact


@pytest.mark.parametrize("cipher", SUITES)
def test_truncated_and_extended_fail(cipher):
    a, b = pair(cipher)
    packet = a.sender.encrypt_packet(short_header(3), b"some payload", 3)
    for n in range(len(packet)):
        with pytest.raises(DecryptionFailed):
            b.receiver.decrypt_packet(packet[:n], 9, 3)
    with pytest.raises(DecryptionFailed):
        b.receiver.decrypt_packet(packet + b"\x00", 9, 3)
    for off in (0, -1, 10**6, "9", None):
        with pytest.raises(DecryptionFailed):
            b.receiver.decrypt_packet(packet, off, 3)
    with pytest.raises(DecryptionFailed):
        b.receiver.decrypt_packet(12345, 9, 3)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(min_value=0, max_value=130), st.integers(min_value=0, max_value=2**62))
def test_garbage_only_raises_protocol_error(data, pn_offset, expected):
    a, b = pair("AESGCM")
    try:
        b.receiver.decrypt_packet(data, pn_offset, expected)
    except DecryptionFailed:
        pass
    try:
        NullProtection().decrypt_packet(data, pn_offset, expected)
    except DecryptionFailed:
        pass


# ------------------------------------------------------------------ key update


@pytest.mark.parametrize("cipher", SUITES)
def test_key_update_initiated_and_followed(cipher):
    a, b = pair(cipher)
    ab, ba = Flow(a, b), Flow(b, a)
    assert not a.can_update
    with pytest.raises(RuntimeError):
        a.update_keys()
    # Exchange one packet each way in phase 0.
    ab.open(ab.seal()[1])
    ba.open(ba.seal()[1])
    assert a.can_update and b.can_update
    old_a_packets = [ab.seal(b"old phase %d" % i) for i in range(3)]
    a.update_keys()
    assert a.key_phase == 1 and a.generation == 1 and a.has_old_keys and not a.can_update
    _, new_pkt = ab.seal(b"new phase")
    # Phase bit (after header protection is removed) is 1.
    hdr, payload, _ = ab.open(new_pkt)
    assert hdr[0] & KEY_PHASE_BIT and payload == b"new phase"
    assert b.key_phase == 1 and b.generation == 1 and b.key_updates == 1
    # Reordered old-phase packets still open at b (previous keys retained).
    for pn, pkt in old_a_packets:
        hdr, payload, got = ab.open(pkt)
        assert got == pn and not hdr[0] & KEY_PHASE_BIT
    # b now sends with the new keys; a opens them and may update again.
    _, reply = ba.seal(b"reply")
    hdr, payload, _ = ba.open(reply)
    assert hdr[0] & KEY_PHASE_BIT and a.can_update
    # After discarding, old-phase packets no longer open.
    b.discard_old_keys()
    assert not b.has_old_keys
    with pytest.raises(DecryptionFailed):
        ab.open(old_a_packets[0][1])


@pytest.mark.parametrize("cipher", SUITES)
def test_initiator_keeps_old_receive_keys_for_reordered_peer_packets(cipher):
    a, b = pair(cipher)
    ab, ba = Flow(a, b), Flow(b, a)
    ab.open(ab.seal()[1])
    ba.open(ba.seal()[1])
    in_flight_from_b = [ba.seal(b"b old %d" % i) for i in range(3)]
    a.update_keys()
    for pn, pkt in reversed(in_flight_from_b):
        assert ba.open(pkt)[2] == pn
    assert a.generation == 1  # old-phase packets did not trigger another update


@pytest.mark.parametrize("cipher", SUITES)
def test_multiple_updates(cipher):
    a, b = pair(cipher)
    ab, ba = Flow(a, b), Flow(b, a)
    for gen in range(1, 6):
        ab.open(ab.seal()[1])
        ba.open(ba.seal()[1])
        (a if gen % 2 else b).update_keys()
        ab.open(ab.seal()[1])
        ba.open(ba.seal()[1])
        assert a.generation == b.generation == gen
        assert a.key_phase == b.key_phase == gen & 1
        a.discard_old_keys()
        b.discard_old_keys()


def test_view_helpers_delegate():
    a, b = pair()
    ab, ba = Flow(a, b), Flow(b, a)
    with pytest.raises(RuntimeError):
        a.sender.request_key_update()
    ab.open(ab.seal()[1])
    ba.open(ba.seal()[1])
    a.sender.request_key_update()
    assert a.generation == 1 and a.sender.key_phase == 1 and a.has_old_keys
    a.receiver.discard_old_keys()
    assert not a.has_old_keys and a.sender.keys is a.receiver.keys is a


def test_forged_phase_flip_does_not_update():
    a, b = pair()
    ab = Flow(a, b)
    ab.open(ab.seal()[1])
    _, pkt = ab.seal(b"genuine payload")
    # Flip the (protected) key-phase bit: the receiver tries the next keys, fails, stays.
    bad = bytearray(pkt)
    bad[0] ^= KEY_PHASE_BIT
    with pytest.raises(DecryptionFailed):
        ab.open(bytes(bad))
    assert b.generation == 0 and b.failed_decryptions == 1


def test_automatic_update_at_interval():
    a, b = pair(key_update_interval=5)
    ab, ba = Flow(a, b), Flow(b, a)
    for _ in range(5):
        ab.open(ab.seal()[1])
    assert a.generation == 0
    ba.open(ba.seal()[1])  # peer confirms current keys
    ab.open(ab.seal()[1])  # sixth packet: update first
    assert a.generation == 1 and b.generation == 1


def test_automatic_update_waits_for_confirmation_chacha():
    a, b = pair("ChaChaPoly", key_update_interval=3)
    ab = Flow(a, b)
    for _ in range(10):  # nothing from b: a cannot update, but ChaCha has no hard limit
        ab.open(ab.seal()[1])
    assert a.generation == 0 and a.packets_sent_in_phase == 10


def test_confidentiality_limit_aes():
    a, b = pair("AESGCM", confidentiality_limit=4)
    assert a.key_update_interval == 4
    ab = Flow(a, b)
    for _ in range(4):
        ab.seal()
    with pytest.raises(ProtocolError) as ei:
        ab.seal()
    assert ei.value.error_code == ErrorCode.AEAD_LIMIT_REACHED
    assert not isinstance(ei.value, DecryptionFailed)


def test_integrity_limit():
    a, b = pair("ChaChaPoly", integrity_limit=3)
    ab = Flow(a, b)
    _, pkt = ab.seal()
    bad = pkt[:-1] + bytes([pkt[-1] ^ 1])
    for _ in range(3):
        with pytest.raises(DecryptionFailed):
            ab.open(bad)
    assert not b.integrity_limit_reached
    with pytest.raises(ProtocolError) as ei:
        ab.open(bad)
    assert ei.value.error_code == ErrorCode.AEAD_LIMIT_REACHED and b.integrity_limit_reached
    with pytest.raises(ProtocolError) as ei:
        ab.open(pkt)  # connection is dead
    assert ei.value.error_code == ErrorCode.AEAD_LIMIT_REACHED


def test_default_limits():
    a, _ = pair("AESGCM")
    c, _ = pair("ChaChaPoly")
    assert a.integrity_limit == 2**52 and c.integrity_limit == 2**36
    assert a.confidentiality_limit == 2**23 and c.confidentiality_limit is None
    assert a.key_update_interval == c.key_update_interval == 2**23
    with pytest.raises(ValueError):
        OneRttKeys(bytes(32), bytes(32), "DES")


# ------------------------------------------------------------------ NullProtection


def test_null_protection():
    n = NullProtection()
    assert n.tag_size == 0
    for pn_len in (1, 2, 3, 4):
        pkt = n.encrypt_packet(short_header(300, pn_len), b"payload", 300)
        assert pkt == short_header(300, pn_len) + b"payload"
        assert n.decrypt_packet(pkt, 9, 300) == (short_header(300, pn_len), b"payload", 300)
    with pytest.raises(DecryptionFailed):
        n.decrypt_packet(short_header(1, 4)[:-1], 9, 0)
    with pytest.raises(ValueError):
        n.encrypt_packet(b"", b"", 0)


# ------------------------------------------------------------------ backends


def test_backend_selection(backend):
    assert _protection.BACKEND == backend
    a, b = pair()
    assert a.backend == b.backend == backend
    assert a._send.backend == a._hp_send.backend == backend
    assert AVAILABLE_BACKENDS[-1] == "cryptography"
    assert (_protection.OPENSSL_VERSION is not None) == ("openssl" in AVAILABLE_BACKENDS)
    with pytest.raises(ValueError):
        _protection.use_backend("rot13")
    with pytest.raises(ValueError):
        OneRttKeys(bytes(32), bytes(32), backend="rot13")
    assert _protection.BACKEND == backend  # a refused switch changes nothing


@pytest.mark.skipif(os.environ.get("DQUIC_REQUIRE_OPENSSL") != "1", reason="DQUIC_REQUIRE_OPENSSL not set")
def test_required_openssl_backend_present():
    # CI and wheel builds set DQUIC_REQUIRE_OPENSSL=1 so a silent fallback build fails here.
    assert AVAILABLE_BACKENDS[0] == "openssl" and _protection.OPENSSL_VERSION


def test_backend_kept_across_key_updates(backend):
    a, b = pair()
    ab, ba = Flow(a, b), Flow(b, a)
    other = [n for n in AVAILABLE_BACKENDS if n != backend]
    if other:
        _protection.use_backend(other[0])  # the default changes; existing keys do not
    for _ in range(3):
        ab.open(ab.seal()[1])
        ba.open(ba.seal()[1])
        a.update_keys()
        ab.open(ab.seal()[1])
        assert {a._send.backend, a._recv.backend, a._next_recv.backend, b._send.backend} == {backend}
    assert a.generation == b.generation == 3


@pytest.mark.parametrize("cipher", SUITES)
def test_payload_buffer_types_and_sizes(cipher):
    a, b = pair(cipher)
    ab = Flow(a, b)
    for payload in (b"", b"abc", bytearray(b"bytearray payload"), memoryview(b"0123456789" * 3)[5:],
                    bytes(range(256)) * 40, bytes(20000)):
        pn_len = 4 if len(payload) < 3 else 2
        pn, pkt = ab.seal(payload, pn_len=pn_len)
        assert len(pkt) == 1 + len(DCID) + pn_len + len(payload) + 16
        assert ab.open(pkt)[1] == bytes(payload)
    with pytest.raises(TypeError):
        ab.seal(12345)


# Parity: the two backends are two routes to the same primitives, so for the same secrets
# and input they must produce the same packets, and each must open the other's packets.
needs_both = pytest.mark.skipif(len(AVAILABLE_BACKENDS) < 2, reason="built without libcrypto")


def backend_pairs(cipher, **kw):
    s1, s2 = _secret("parity 1 " + cipher), _secret("parity 2 " + cipher)
    made = {}
    for name in AVAILABLE_BACKENDS:
        made[name] = (OneRttKeys(s1, s2, cipher, backend=name, **kw), OneRttKeys(s2, s1, cipher, backend=name, **kw))
    return made["openssl"], made["cryptography"]


@needs_both
@pytest.mark.parametrize("cipher", SUITES)
@given(
    pn=st.integers(min_value=0, max_value=2**62 - 1),
    pn_len=st.integers(min_value=1, max_value=4),
    long=st.booleans(),
    payload=st.binary(min_size=3, max_size=1500),
)
@settings(max_examples=60, deadline=None)
def test_parity_random_packets(cipher, pn, pn_len, long, payload):
    (oa, ob), (ca, cb) = backend_pairs(cipher)
    header = (long_header if long else short_header)(pn, pn_len)
    pn_offset = len(header) - pn_len
    p1 = oa.sender.encrypt_packet(header, payload, pn)
    p2 = ca.sender.encrypt_packet(header, payload, pn)
    assert p1 == p2
    expected = max(pn - 1, 0)
    assert cb.receiver.decrypt_packet(p1, pn_offset, expected) == (header, payload, pn)
    assert ob.receiver.decrypt_packet(p2, pn_offset, expected) == (header, payload, pn)


@needs_both
@pytest.mark.parametrize("cipher", SUITES)
def test_parity_across_key_updates_and_failures(cipher):
    (oa, ob), (ca, cb) = backend_pairs(cipher)
    flows = [(Flow(oa, cb), Flow(ca, ob)), (Flow(ob, ca), Flow(cb, oa))]
    for step in range(12):
        for f_ossl, f_cryp in flows:
            pn1, p1 = f_ossl.seal(b"step %d" % step)
            pn2, p2 = f_cryp.seal(b"step %d" % step)
            assert (pn1, p1) == (pn2, p2)
            assert f_ossl.open(p1)[1] == f_cryp.open(p2)[1] == b"step %d" % step
            bad = p1[:-1] + bytes([p1[-1] ^ 0x80])
            with pytest.raises(DecryptionFailed):
                f_ossl.open(bad)
            with pytest.raises(DecryptionFailed):
                f_cryp.open(bad)
        if step % 3 == 2:
            oa.update_keys()
            ca.update_keys()
    # the receivers follow the last update only once a packet with the new phase arrives
    assert (oa.generation, ca.generation, ob.generation, cb.generation) == (4, 4, 3, 3)
    assert oa.failed_decryptions == ca.failed_decryptions == 12


@needs_both
@pytest.mark.parametrize("cipher", SUITES)
@given(sample=st.binary(min_size=16, max_size=16), key=st.binary(min_size=32, max_size=32))
@settings(max_examples=50, deadline=None)
def test_parity_header_protection_mask(cipher, sample, key):
    o = _HeaderProtection(cipher, key, "openssl")
    c = _HeaderProtection(cipher, key, "cryptography")
    assert o.mask(sample) == c.mask(sample)
    assert o.mask(bytearray(sample)) == c.mask(sample)


def test_header_protection_rejects_bad_sizes(backend):
    with pytest.raises(ValueError):
        _HeaderProtection("ChaChaPoly", bytes(31))
    with pytest.raises(ValueError):
        _HeaderProtection("AESGCM", bytes(20))
    if backend == "openssl":
        with pytest.raises(ValueError):
            _HeaderProtection("AESGCM", bytes(32)).mask(bytes(15))


@pytest.mark.parametrize("cipher", SUITES)
@pytest.mark.parametrize("extra", [0, 50, 60, 200])
def test_headers_of_any_length(cipher, extra):
    # headers longer than the opener's on-stack copy of the associated data take another path
    a, b = pair(cipher)
    for pn_len in (1, 4):
        header = bytes([0xC0 | (pn_len - 1)]) + bytes(range(extra)) + (77).to_bytes(pn_len, "big")
        pkt = a.sender.encrypt_packet(header, b"payload bytes", 77)
        assert b.receiver.decrypt_packet(pkt, len(header) - pn_len, 77) == (header, b"payload bytes", 77)
        bad = bytearray(pkt)
        bad[len(header) // 2] ^= 1  # the header is authenticated
        with pytest.raises(DecryptionFailed):
            b.receiver.decrypt_packet(bytes(bad), len(header) - pn_len, 77)


def test_key_derivation_matches_cryptography_hkdf_expand():
    """The one-block HKDF-Expand shortcut gives what RFC 5869's full construction gives."""
    import os as _os

    from cryptography.hazmat.primitives import hashes as _hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    from dquic._protection import _expand, derive_packet_keys

    for _ in range(20):
        secret = _os.urandom(32)
        want = tuple(HKDFExpand(_hashes.SHA256(), n, label).derive(secret)
                     for label, n in ((b"dquic key", 32), (b"dquic iv", 12), (b"dquic hp", 32)))
        assert derive_packet_keys(secret) == want
        for n in (1, 16, 31, 32, 33, 64):
            assert _expand(secret, b"label", n) == HKDFExpand(_hashes.SHA256(), n, b"label").derive(secret)


@given(st.binary(min_size=0, max_size=150), st.binary(min_size=0, max_size=300))
def test_hmac_sha256_is_the_standard_hmac(key, data):
    """The key schedules' HMAC (one libcrypto context for the process when the module has
    libcrypto) gives what the standard library gives, for any key and input length (keys
    over a hash block are hashed first; an empty key takes the standard path)."""
    import hmac

    want = hmac.digest(key, data, "sha256")
    assert _protection.hmac_sha256(key, data) == want
    assert _protection.hmac_sha256(bytearray(key), memoryview(data)) == want
