"""Tests for dquic.keys."""
from __future__ import annotations

import base64
import os
import pickle
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dquic.keys import KeyPair, load_public


def test_generate_distinct_and_sizes():
    a, b = KeyPair.generate(), KeyPair.generate()
    assert len(a.private) == len(a.public) == 32
    assert a != b and a.public != b.public


def test_from_private_roundtrip_and_equality():
    a = KeyPair.generate()
    b = KeyPair.from_private(a.private)
    assert a == b and hash(a) == hash(b)
    assert b.private == a.private and b.public == a.public
    assert a != object() and (a == 5) is False


def test_known_public_key():
    # RFC 7748 §6.1: Alice's private key and public key.
    priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert KeyPair.from_private(priv).public == pub


def test_repr_hides_private():
    a = KeyPair.generate()
    r = repr(a)
    assert base64.b64encode(a.private).decode() not in r
    assert a.private.hex() not in r
    assert a.public_b64 in r
    with pytest.raises(TypeError):
        pickle.dumps(a)


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33])
def test_from_private_wrong_size(bad):
    with pytest.raises(ValueError):
        KeyPair.from_private(bad)
    with pytest.raises(TypeError):
        KeyPair.from_private("not bytes")  # type: ignore[arg-type]


def test_save_load_mode_0600(tmp_path):
    a = KeyPair.generate()
    p = tmp_path / "id.key"
    a.save(p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    text = p.read_text()
    assert text.startswith("#")
    assert KeyPair.load(p) == a
    # an existing key file is never replaced by accident
    b = KeyPair.generate()
    with pytest.raises(FileExistsError):
        b.save(p)
    assert KeyPair.load(p) == a
    # Overwrite keeps 0600 even if the old file was wider.
    os.chmod(p, 0o644)
    b.save(str(p), overwrite=True)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert KeyPair.load(str(p)) == b
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


@pytest.mark.parametrize(
    "content",
    [
        "",
        "# only a comment\n",
        "private: !!!!\n",
        "private: " + base64.b64encode(b"x" * 31).decode() + "\n",
        "garbage line\n",
        "\xff",
    ],
)
def test_load_malformed(tmp_path, content):
    p = tmp_path / "bad.key"
    p.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError):
        KeyPair.load(p)


def test_load_public_mismatch_and_oversize(tmp_path):
    a, b = KeyPair.generate(), KeyPair.generate()
    p = tmp_path / "k"
    p.write_text("private: %s\npublic: %s\n" % (base64.b64encode(a.private).decode(), b.public_b64))
    with pytest.raises(ValueError):
        KeyPair.load(p)
    p.write_text("#" * 5000)
    with pytest.raises(ValueError):
        KeyPair.load(p)


def test_load_public_forms():
    a = KeyPair.generate()
    pub = a.public
    assert load_public(pub) == pub
    assert load_public(bytearray(pub)) == pub
    assert load_public(pub.hex()) == pub
    assert load_public(pub.hex().upper()) == pub
    assert load_public(base64.b64encode(pub).decode()) == pub
    assert load_public(base64.b64encode(pub)) == pub
    assert load_public(base64.urlsafe_b64encode(pub).decode().rstrip("=")) == pub
    assert load_public(" %s\n" % a.public_b64) == pub
    assert load_public(a) == pub


@pytest.mark.parametrize("bad", ["", "zz" * 32, "abcd", base64.b64encode(b"x" * 31).decode(), b"\xff" * 5])
def test_load_public_rejects(bad):
    with pytest.raises(ValueError):
        load_public(bad)
    with pytest.raises(TypeError):
        load_public(42)  # type: ignore[arg-type]


@given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_load_public_only_value_error(data):
    try:
        out = load_public(data)
    except ValueError:
        return
    assert len(out) == 32


def test_private_key_object_matches_raw_bytes():
    pair = KeyPair.generate()
    assert pair.private_key.private_bytes_raw() == pair.private
    assert pair.private_key.public_key().public_bytes_raw() == pair.public
    assert pair.private_key is pair.private_key  # built once, reused


def test_static_dh_matches_exchange_and_is_bounded():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    import dquic.keys as keys_mod

    pair = KeyPair.generate()
    peer = KeyPair.generate()
    expected = pair.private_key.exchange(X25519PublicKey.from_public_bytes(peer.public))
    assert pair.static_dh(peer.public) == expected
    assert pair.static_dh(peer.public) == expected  # second call served from the cache
    assert peer.static_dh(pair.public) == expected  # DH symmetry
    for _ in range(keys_mod._STATIC_DH_CACHE_MAX + 5):
        pair.static_dh(KeyPair.generate().public)
    assert len(pair._static_dh_cache) <= keys_mod._STATIC_DH_CACHE_MAX


def test_static_dh_rejects_small_order_point():
    pair = KeyPair.generate()
    with pytest.raises(ValueError):
        pair.static_dh(bytes(32))  # the identity point: an all-zero shared secret
    assert bytes(32) not in pair._static_dh_cache
