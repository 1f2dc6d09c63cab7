"""Tests for dquic._noise: interoperability with the ``noiseprotocol`` package and
the CipherState/HandshakeState rules of the Noise specification."""
from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic._noise import (
    MAX_NONCE,
    CipherState,
    HandshakeState,
    NoiseError,
    NonceExhausted,
    parse_protocol_name,
    protocol_name,
)
from dquic.errors import ErrorCode, ProtocolError

noise_conn = pytest.importorskip("noise.connection")
NoiseConnection = noise_conn.NoiseConnection
Keypair = noise_conn.Keypair

# noiseprotocol warns whenever a fixed ephemeral is injected, which these tests do on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs:UserWarning")


def _key(label: str) -> bytes:
    # Deterministic 32-byte X25519 private keys for reproducible tests.
    return hashlib.sha256(label.encode()).digest()


def _pub(priv: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


I_S, R_S, I_E, R_E = _key("init static"), _key("resp static"), _key("init eph"), _key("resp eph")
PSK = _key("psk")
PROLOGUE = b"dquic test prologue"

# pattern -> (initiator needs s, responder needs s, initiator knows rs in advance)
PATTERN_KEYS = {
    "NN": (False, False, False),
    "NK": (False, True, True),
    "NX": (False, True, False),
    "XX": (True, True, False),
    "IK": (True, True, True),
    "NKpsk2": (False, True, True),
    "IKpsk2": (True, True, True),
    "XXpsk3": (True, True, False),
    "NNpsk0": (False, False, False),
    "NXpsk2": (False, True, False),
}
CIPHER_NAMES = ["ChaChaPoly", "AESGCM"]
HASH_NAMES = ["BLAKE2s", "SHA256"]
COMBOS = list(itertools.product(PATTERN_KEYS, CIPHER_NAMES, HASH_NAMES))


def _ours(pattern, cipher, hash_name, initiator, pairs=None):
    """Our HandshakeState; with ``pairs`` = (initiator KeyPair, responder KeyPair) the
    static keys are passed as KeyPair objects instead of raw bytes."""
    i_s, r_s, i_rs = PATTERN_KEYS[pattern]
    name = protocol_name(pattern, cipher, hash_name)
    npsk = parse_protocol_name(name)[1]
    i_key, r_key = pairs if pairs is not None else (I_S, R_S)
    if initiator:
        return HandshakeState(
            name, True, PROLOGUE, s=i_key if i_s else None, rs=_pub(R_S) if i_rs else None,
            psks=[PSK] * npsk, e=I_E,
        )
    return HandshakeState(name, False, PROLOGUE, s=r_key if r_s else None, psks=[PSK] * npsk, e=R_E)


def _theirs(pattern, cipher, hash_name, initiator):
    i_s, r_s, i_rs = PATTERN_KEYS[pattern]
    name = protocol_name(pattern, cipher, hash_name)
    conn = NoiseConnection.from_name(name.encode())
    if initiator:
        conn.set_as_initiator()
        if i_s:
            conn.set_keypair_from_private_bytes(Keypair.STATIC, I_S)
        if i_rs:
            conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, _pub(R_S))
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, I_E)
    else:
        conn.set_as_responder()
        if r_s:
            conn.set_keypair_from_private_bytes(Keypair.STATIC, R_S)
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, R_E)
    if "psk" in pattern:
        conn.set_psks(psks=[PSK] * parse_protocol_name(name)[1])
    conn.set_prologue(PROLOGUE)
    conn.start_handshake()
    return conn


def _run_pair(ours, theirs, ours_is_initiator):
    """Drive both sides; return list of (sender, bytes) and payloads seen."""
    n = ours.message_count
    transcript = []
    for i in range(n):
        payload = b"payload-%d" % i
        initiator_writes = i % 2 == 0
        ours_writes = initiator_writes == ours_is_initiator
        if ours_writes:
            msg = ours.write_message(payload)
            got = theirs.read_message(msg)
        else:
            msg = bytes(theirs.write_message(payload))
            got = ours.read_message(msg)
        assert bytes(got) == payload
        transcript.append(msg)
    return transcript


@pytest.mark.parametrize("pattern,cipher,hash_name", COMBOS)
@pytest.mark.parametrize("ours_is_initiator", [True, False], ids=["ours-init", "ours-resp"])
def test_interop_with_noiseprotocol(pattern, cipher, hash_name, ours_is_initiator):
    ours = _ours(pattern, cipher, hash_name, ours_is_initiator)
    theirs = _theirs(pattern, cipher, hash_name, not ours_is_initiator)
    _run_pair(ours, theirs, ours_is_initiator)
    assert ours.complete and theirs.handshake_finished
    assert ours.get_handshake_hash() == theirs.get_handshake_hash()
    c_i2r, c_r2i = ours.split_result
    # Transport messages interoperate in both directions (same keys, same nonces).
    send, recv = (c_i2r, c_r2i) if ours_is_initiator else (c_r2i, c_i2r)
    for j in range(3):
        ct = send.encrypt_with_ad(b"", b"to them %d" % j)
        assert theirs.decrypt(ct) == b"to them %d" % j
        ct2 = theirs.encrypt(b"to us %d" % j)
        assert recv.decrypt_with_ad(b"", ct2) == b"to us %d" % j
    # Identical transport keys.
    np = theirs.noise_protocol
    their_send_k, their_recv_k = np.cipher_state_encrypt.k, np.cipher_state_decrypt.k
    assert recv.key == their_send_k and send.key == their_recv_k
    # Peer static exposed when the pattern transmits or pre-shares it.
    i_s, r_s, _ = PATTERN_KEYS[pattern]
    if ours_is_initiator:
        assert ours.remote_static == (_pub(R_S) if r_s else None)
    else:
        assert ours.remote_static == (_pub(I_S) if i_s else None)


@pytest.mark.parametrize("pattern", list(PATTERN_KEYS))
def test_ours_with_ours_identical_message_bytes(pattern):
    """Both roles ours: the byte stream equals the one noiseprotocol produces."""
    a, b = _ours(pattern, "ChaChaPoly", "BLAKE2s", True), _ours(pattern, "ChaChaPoly", "BLAKE2s", False)
    t_ours = _run_pair(a, b, True)
    ti = _theirs(pattern, "ChaChaPoly", "BLAKE2s", True)
    tr = _theirs(pattern, "ChaChaPoly", "BLAKE2s", False)
    t_theirs = []
    for i in range(a.message_count):
        w, r = (ti, tr) if i % 2 == 0 else (tr, ti)
        m = bytes(w.write_message(b"payload-%d" % i))
        r.read_message(m)
        t_theirs.append(m)
    assert t_ours == t_theirs
    assert a.get_handshake_hash() == b.get_handshake_hash() == ti.get_handshake_hash()


def test_protocol_name_and_long_name_hashing():
    assert protocol_name("XXpsk3", "AESGCM", "SHA256") == "Noise_XXpsk3_25519_AESGCM_SHA256"
    with pytest.raises(ValueError):
        parse_protocol_name("Noise_XX_448_ChaChaPoly_BLAKE2s")
    with pytest.raises(ValueError):
        parse_protocol_name("Noise_KK_25519_ChaChaPoly_BLAKE2s")
    with pytest.raises(ValueError):
        parse_protocol_name("Noise_XXpsk9_25519_ChaChaPoly_BLAKE2s")
    with pytest.raises(ValueError):
        parse_protocol_name("Noise_XXfallback_25519_ChaChaPoly_BLAKE2s")


def test_psk_mismatch_fails():
    name = protocol_name("NKpsk2")
    i = HandshakeState(name, True, b"", rs=_pub(R_S), psks=[PSK])
    r = HandshakeState(name, False, b"", s=R_S, psks=[bytes(32)])
    m1 = i.write_message(b"x")
    r.read_message(m1)  # psk only mixed at the end of msg2
    m2 = r.write_message(b"y")
    with pytest.raises(NoiseError):
        i.read_message(m2)


def test_prologue_mismatch_fails():
    name = protocol_name("XX")
    i = HandshakeState(name, True, b"A", s=I_S)
    r = HandshakeState(name, False, b"B", s=R_S)
    r.read_message(i.write_message())
    with pytest.raises(NoiseError) as ei:
        i.read_message(r.write_message())
    assert ei.value.error_code == ErrorCode.HANDSHAKE_FAILED


def test_wrong_turn_and_after_complete():
    name = protocol_name("NN")
    i = HandshakeState(name, True)
    r = HandshakeState(name, False)
    with pytest.raises(RuntimeError):
        r.write_message()
    with pytest.raises(NoiseError):
        i.read_message(b"\x00" * 48)
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    assert i.complete and r.complete and not i.is_my_turn
    with pytest.raises(NoiseError):
        i.read_message(b"")
    with pytest.raises(RuntimeError):
        i.write_message()


def test_missing_keys_rejected_locally():
    with pytest.raises(ValueError):
        HandshakeState(protocol_name("NK"), True)  # needs rs
    with pytest.raises(ValueError):
        HandshakeState(protocol_name("XX"), True)  # needs s
    with pytest.raises(ValueError):
        HandshakeState(protocol_name("XXpsk3"), True, s=I_S)  # needs psk
    with pytest.raises(ValueError):
        HandshakeState(protocol_name("XXpsk3"), True, s=I_S, psks=[b"short"])


def test_small_order_peer_key_rejected():
    name = protocol_name("NN")
    r = HandshakeState(name, False)
    r.read_message(bytes(32))  # all-zero public key: accepted into the hash...
    with pytest.raises(NoiseError):
        r.write_message()  # ...but DH with it is refused


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["NK", "XX", "IK", "NX"]))
def test_random_first_message_only_raises_noise_error(data, pattern):
    r = _ours(pattern, "ChaChaPoly", "BLAKE2s", False)
    try:
        r.read_message(data)
    except NoiseError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_bit_flip_in_encrypted_message_detected(pos_seed, bit):
    name = protocol_name("XX")
    i, r = HandshakeState(name, True, s=I_S), HandshakeState(name, False, s=R_S)
    r.read_message(i.write_message(b"hello"))
    m2 = bytearray(r.write_message(b"world"))
    pos = pos_seed % len(m2)
    m2[pos] ^= 1 << bit
    with pytest.raises(NoiseError):
        i.read_message(bytes(m2))


# ----------------------------------------------------------------- CipherState


@pytest.mark.parametrize("cipher", CIPHER_NAMES)
def test_cipherstate_nonce_increments_and_never_reused(cipher):
    a, b = CipherState(cipher, bytes(range(32))), CipherState(cipher, bytes(range(32)))
    cts = [a.encrypt_with_ad(b"ad", b"same") for _ in range(50)]
    assert len(set(cts)) == 50 and a.n == 50
    # The receiver must use the same nonce sequence: in order, every message opens.
    for ct in cts[:10]:
        assert b.decrypt_with_ad(b"ad", ct) == b"same"
    assert b.n == 10
    # A replayed (already used nonce) ciphertext does not open at the next nonce.
    with pytest.raises(NoiseError):
        b.decrypt_with_ad(b"ad", cts[0])
    assert b.n == 10
    # Decrypt failure does not advance n.
    with pytest.raises(NoiseError):
        b.decrypt_with_ad(b"ad", b"\x00" * 20)
    assert b.n == 10


@pytest.mark.parametrize("cipher", CIPHER_NAMES)
def test_cipherstate_nonce_exhaustion(cipher):
    c = CipherState(cipher, bytes(32))
    c.set_nonce(MAX_NONCE - 1)
    ct = c.encrypt_with_ad(b"", b"last")
    assert c.n == MAX_NONCE
    with pytest.raises(NonceExhausted):
        c.encrypt_with_ad(b"", b"one more")
    with pytest.raises(NonceExhausted):
        c.decrypt_with_ad(b"", ct)
    d = CipherState(cipher, bytes(32))
    d.set_nonce(MAX_NONCE - 1)
    assert d.decrypt_with_ad(b"", ct) == b"last"


@pytest.mark.parametrize("cipher", CIPHER_NAMES)
def test_cipherstate_rekey_matches_noiseprotocol(cipher):
    name = protocol_name("NN", cipher, "SHA256")
    ours_i = HandshakeState(name, True, PROLOGUE, e=I_E)
    theirs_r = _theirs("NN", cipher, "SHA256", False)
    theirs_r.read_message(ours_i.write_message())
    ours_i.read_message(bytes(theirs_r.write_message()))
    send, _ = ours_i.split_result
    send.rekey()
    theirs_r.rekey_inbound_cipher()
    assert theirs_r.decrypt(send.encrypt_with_ad(b"", b"after rekey")) == b"after rekey"


def test_cipherstate_without_key_is_identity():
    c = CipherState("ChaChaPoly")
    assert not c.has_key()
    assert c.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert c.decrypt_with_ad(b"ad", b"plain") == b"plain"
    with pytest.raises(ValueError):
        CipherState("ChaChaPoly", b"short")


def test_split_wipes_chaining_key():
    name = protocol_name("NN")
    i, r = HandshakeState(name, True), HandshakeState(name, False)
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    assert bytes(i._ss.ck) == bytes(32)
    assert not i._ss.cipher_state.has_key()
    assert i._e is None
    assert issubclass(NoiseError, ProtocolError)


@pytest.mark.parametrize("pattern,cipher,hash_name", COMBOS)
@pytest.mark.parametrize("ours_is_initiator", [True, False], ids=["ours-init", "ours-resp"])
def test_keypair_static_interop_and_repeat(pattern, cipher, hash_name, ours_is_initiator):
    """A KeyPair as ``s`` (key object reused, IK's static-static DH memoised by the
    initiator) gives byte-identical messages and keys to noiseprotocol, also when the
    same KeyPair runs a second handshake (served from its cache)."""
    from dquic.keys import KeyPair

    pairs = (KeyPair(I_S), KeyPair(R_S))
    for _ in range(2):
        ours = _ours(pattern, cipher, hash_name, ours_is_initiator, pairs)
        theirs = _theirs(pattern, cipher, hash_name, not ours_is_initiator)
        _run_pair(ours, theirs, ours_is_initiator)
        assert ours.get_handshake_hash() == theirs.get_handshake_hash()
        c_i2r, c_r2i = ours.split_result
        np = theirs.noise_protocol
        send, recv = (c_i2r, c_r2i) if ours_is_initiator else (c_r2i, c_i2r)
        assert recv.key == np.cipher_state_encrypt.k and send.key == np.cipher_state_decrypt.k


def test_ik_initiator_rejects_small_order_pinned_key():
    """An IK initiator (KeyPair static) pinned to a small-order key aborts the handshake."""
    from dquic.keys import KeyPair

    hs = HandshakeState(protocol_name("IK", "AESGCM", "SHA256"), True, b"", s=KeyPair(I_S), rs=bytes(32))
    with pytest.raises(NoiseError):
        hs.write_message(b"")


@pytest.mark.parametrize("cipher,hash_name", [("AESGCM", "SHA256"), ("ChaChaPoly", "BLAKE2s")])
def test_take_split_keys_matches_noiseprotocol_and_is_taken_once(cipher, hash_name):
    """take_split_keys() hands out Split's raw keys (the ones noiseprotocol derives) once;
    the handshake state no longer holds them afterwards."""
    ours = _ours("XX", cipher, hash_name, True)
    with pytest.raises(RuntimeError):
        ours.take_split_keys()  # not complete yet
    theirs = _theirs("XX", cipher, hash_name, False)
    _run_pair(ours, theirs, True)
    k_i2r, k_r2i = ours.take_split_keys()
    np = theirs.noise_protocol
    assert k_i2r == np.cipher_state_decrypt.k and k_r2i == np.cipher_state_encrypt.k
    with pytest.raises(RuntimeError):
        ours.take_split_keys()
    with pytest.raises(RuntimeError):
        ours.split_result


def test_take_split_keys_after_split_result_gives_the_same_keys():
    name = protocol_name("NN", "AESGCM", "SHA256")
    i, r = HandshakeState(name, True), HandshakeState(name, False)
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    c_i2r, c_r2i = i.split_result
    assert i.split_result is i.split_result  # built once
    assert i.take_split_keys() == (c_i2r.key, c_r2i.key) == r.take_split_keys()
