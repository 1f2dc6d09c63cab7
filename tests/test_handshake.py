"""Tests for dquic.handshake: pattern choice, trust policy, payloads, failures."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dquic.errors import AuthenticationError, ErrorCode, ProtocolError
from dquic.handshake import (
    MAX_HANDSHAKE_MESSAGE,
    MAX_TRANSPORT_PARAMS,
    ClientHandshake,
    ServerHandshake,
    parse_suite_id,
    suite_id,
)
from dquic.keys import KeyPair

SERVER = KeyPair.from_private(bytes([1]) * 32)
CLIENT = KeyPair.from_private(bytes([2]) * 32)
OTHER = KeyPair.from_private(bytes([3]) * 32)
PSK = bytes(range(32))
CIDS = b"\x08dcid-123\x08scid-456"
CTP, STP = b"client transport params", b"server transport params"


def client(**kw):
    args = dict(identity=None, server_key=None, trusted_peers=None, psk=None, transport_params=CTP, prologue=CIDS)
    args.update(kw)
    return ClientHandshake(**args)


def server(**kw):
    args = dict(identity=SERVER, trusted_peers=None, psk=None, transport_params=STP, prologue=CIDS)
    args.update(kw)
    return ServerHandshake(**args)


def run(c, s, tamper=None):
    """Exchange messages until both are complete; ``tamper(i, msg)`` may rewrite message i."""
    msg = c.start()
    sender_is_client = True
    for i in range(4):  # at most 3 messages; bounded loop
        if msg is None:
            break
        if tamper is not None:
            msg = tamper(i, msg)
        assert len(msg) <= MAX_HANDSHAKE_MESSAGE
        msg = (s if sender_is_client else c).receive(msg)
        sender_is_client = not sender_is_client
    return c, s


def assert_working_channel(c, s):
    assert c.complete and s.complete
    assert c.handshake_hash == s.handshake_hash and len(c.handshake_hash) == 32
    c_send, c_recv = c.protections()
    s_send, s_recv = s.protections()
    hdr = b"\x41" + b"D" * 8 + b"\x00\x01"
    pkt = c_send.encrypt_packet(hdr, b"client says hi", 1)
    assert s_recv.decrypt_packet(pkt, 9, 0)[1] == b"client says hi"
    pkt = s_send.encrypt_packet(hdr, b"server says hi", 1)
    assert c_recv.decrypt_packet(pkt, 9, 0)[1] == b"server says hi"
    assert c.protections()[0] is c_send  # cached
    assert c.one_rtt_keys is c_send.keys


CASES = [
    # (client kwargs, server kwargs, pattern, messages, server sees client key)
    (dict(server_key=SERVER.public), {}, "NK", 2, False),
    (dict(server_key=SERVER.public, identity=CLIENT), {}, "IK", 2, True),
    (dict(trusted_peers=[SERVER.public, OTHER.public]), {}, "NX", 2, False),
    (dict(trusted_peers=[SERVER.public, OTHER.public], identity=CLIENT), {}, "XX", 3, True),
    (dict(), {}, "NX", 2, False),
    (dict(identity=CLIENT), {}, "XX", 3, True),
    (dict(trusted_peers=[SERVER.public]), {}, "NK", 2, False),  # a single trusted key is a pin
    (dict(server_key=SERVER.public, identity=CLIENT), dict(trusted_peers=[CLIENT.public]), "IK", 2, True),
    (dict(identity=CLIENT), dict(trusted_peers=[OTHER.public, CLIENT.public]), "XX", 3, True),
]


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
@pytest.mark.parametrize("use_psk", [False, True], ids=["nopsk", "psk"])
@pytest.mark.parametrize("ckw,skw,pattern,nmsgs,identified", CASES)
def test_patterns(ckw, skw, pattern, nmsgs, identified, use_psk, cipher):
    psk = PSK if use_psk else None
    c = client(psk=psk, cipher=cipher, **ckw)
    s = server(psk=psk, **skw)
    assert c.pattern == pattern and c.handshake_messages_count == nmsgs
    assert c.client_sends_last == (nmsgs == 3)
    assert c.protocol_name.startswith("Noise_" + pattern + ("psk" if use_psk else "_"))
    run(c, s)
    assert s.pattern == pattern and s.cipher == cipher and s.protocol_name == c.protocol_name
    assert c.peer_static == SERVER.public
    assert s.peer_static == (CLIENT.public if identified else None)
    assert c.peer_transport_params == STP and s.peer_transport_params == CTP
    assert_working_channel(c, s)


def test_server_completes_on_message_three_only():
    c, s = client(identity=CLIENT), server()
    m2 = s.receive(c.start())
    assert not s.complete and not c.complete
    with pytest.raises(RuntimeError):
        s.protections()
    with pytest.raises(RuntimeError):
        s.handshake_hash
    m3 = c.receive(m2)
    assert c.complete and not s.complete and m3 is not None
    assert s.receive(m3) is None and s.complete


def test_two_message_patterns_server_complete_after_reply():
    c, s = client(server_key=SERVER.public), server()
    m2 = s.receive(c.start())
    assert s.complete and not c.complete
    assert c.receive(m2) is None and c.complete


# ------------------------------------------------------------------ trust


def test_pinned_key_mitm_detected():
    """Client pins SERVER; an impostor with another key cannot read message 1."""
    c = client(server_key=SERVER.public)
    impostor = server(identity=OTHER)
    with pytest.raises(ProtocolError) as ei:
        impostor.receive(c.start())
    assert ei.value.error_code == ErrorCode.HANDSHAKE_FAILED


def test_pinned_key_mitm_detected_ik():
    c = client(server_key=SERVER.public, identity=CLIENT)
    with pytest.raises(ProtocolError):
        server(identity=OTHER).receive(c.start())


def test_untrusted_server_refused_by_client():
    c = client(trusted_peers=[OTHER.public, KeyPair.generate().public])
    s = server()
    m2 = s.receive(c.start())
    with pytest.raises(AuthenticationError):
        c.receive(m2)
    assert not c.complete
    with pytest.raises(ProtocolError):  # dead afterwards
        c.receive(m2)


def test_untrusted_server_refused_by_client_xx():
    c = client(identity=CLIENT, trusted_peers=[OTHER.public, KeyPair.generate().public])
    m2 = server().receive(c.start())
    with pytest.raises(AuthenticationError):
        c.receive(m2)


@pytest.mark.parametrize("ckw", [dict(server_key=SERVER.public), dict()], ids=["NK", "NX"])
def test_server_allow_list_requires_identity(ckw):
    c, s = client(**ckw), server(trusted_peers=[CLIENT.public])
    with pytest.raises(AuthenticationError):
        s.receive(c.start())


def test_server_allow_list_refuses_unknown_ik():
    c, s = client(server_key=SERVER.public, identity=OTHER), server(trusted_peers=[CLIENT.public])
    with pytest.raises(AuthenticationError):
        s.receive(c.start())


def test_server_allow_list_refuses_unknown_xx():
    c, s = client(identity=OTHER), server(trusted_peers=[CLIENT.public])
    m2 = s.receive(c.start())
    m3 = c.receive(m2)  # the client cannot know; the server refuses on message 3
    with pytest.raises(AuthenticationError):
        s.receive(m3)
    assert not s.complete and s.peer_transport_params is None


def test_psk_policy():
    with pytest.raises(AuthenticationError):
        server(psk=PSK).receive(client(server_key=SERVER.public).start())
    with pytest.raises(AuthenticationError):
        server().receive(client(server_key=SERVER.public, psk=PSK).start())


@pytest.mark.parametrize("ckw", [dict(server_key=SERVER.public), dict(identity=CLIENT)], ids=["NK", "XX"])
def test_wrong_psk_fails(ckw):
    c, s = client(psk=PSK, **ckw), server(psk=bytes(32))
    with pytest.raises(ProtocolError) as ei:
        run(c, s)
    assert ei.value.error_code == ErrorCode.HANDSHAKE_FAILED


def test_prologue_mismatch_fails():
    c, s = client(server_key=SERVER.public), server(prologue=b"other connection ids")
    with pytest.raises(ProtocolError):
        run(c, s)


def test_nx_plaintext_params_are_authenticated():
    """Rewriting the client's plaintext transport parameters in NX message 1 breaks message 2."""
    c, s = client(), server()

    def tamper(i, msg):
        if i == 0:
            assert msg.endswith(CTP)  # visible (not secret) but bound to the hash
            return msg[: -len(CTP)] + b"X" * len(CTP)
        return msg

    with pytest.raises(ProtocolError):
        run(c, s, tamper)


@pytest.mark.parametrize("ckw", [dict(server_key=SERVER.public), dict(server_key=SERVER.public, identity=CLIENT), dict(identity=CLIENT)])
def test_params_encrypted_where_possible(ckw):
    c, s = client(**ckw), server()
    seen = []
    run(c, s, lambda i, m: (seen.append(m), m)[1])
    assert all(CTP not in m and STP not in m for m in seen)


def test_suite_byte_swap_detected():
    """Changing the suite byte changes the prologue; the handshake then fails."""
    c, s = client(), server()

    other = "ChaChaPoly" if c.cipher == "AESGCM" else "AESGCM"

    def tamper(i, msg):
        return bytes([suite_id("NX", other, False)]) + msg[1:] if i == 0 else msg

    with pytest.raises(ProtocolError):
        run(c, s, tamper)


# ------------------------------------------------------------------ malformed input


def test_suite_ids():
    for p in ("NK", "IK", "NX", "XX"):
        for cph in ("ChaChaPoly", "AESGCM"):
            for psk in (False, True):
                assert parse_suite_id(suite_id(p, cph, psk)) == (p, cph, psk)
    for bad in (0, 5, 0x0F, 0x40, 0x80, 0xFF):
        with pytest.raises(ProtocolError):
            parse_suite_id(bad)


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x01", b"\x01" + b"\x00" * 10, b"\x04" * (MAX_HANDSHAKE_MESSAGE + 1)])
def test_server_malformed_first_message(bad):
    with pytest.raises(ProtocolError) as ei:
        server().receive(bad)
    assert ei.value.error_code == ErrorCode.HANDSHAKE_FAILED


@pytest.mark.parametrize("ckw", [dict(server_key=SERVER.public), dict(), dict(identity=CLIENT), dict(server_key=SERVER.public, identity=CLIENT)])
def test_truncations_raise_only_protocol_error(ckw):
    m1_len = len(client(**ckw).start())
    for n in range(m1_len):
        c = client(**ckw)
        m1 = c.start()[:n]
        try:
            m2 = server().receive(m1)
        except ProtocolError:
            continue
        # Only NX can get here: its message 1 payload is plaintext (no tag), so the server
        # cannot see the truncation, but the handshake hash differs and the client fails.
        assert c.pattern == "NX" and n >= 33
        with pytest.raises(ProtocolError):
            c.receive(m2)
    c0 = client(**ckw)
    m2 = server().receive(c0.start())
    for n in range(len(m2)):
        c = client(**ckw)
        c.start()
        with pytest.raises(ProtocolError):
            c.receive(m2[:n])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["NK", "IK", "NX", "XX"]))
def test_random_bytes_only_expected_errors(data, which):
    kw = {"NK": dict(server_key=SERVER.public), "IK": dict(server_key=SERVER.public, identity=CLIENT),
          "NX": {}, "XX": dict(identity=CLIENT)}[which]
    s = server(trusted_peers=[CLIENT.public]) if which in ("IK", "XX") and data[:1] == b"\x02" else server()
    try:
        s.receive(data)
    except (ProtocolError, AuthenticationError):
        pass
    c = client(**kw)
    c.start()
    try:
        c.receive(data)
    except (ProtocolError, AuthenticationError):
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2), st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_bit_flip_in_xx_fails(which, pos, bit):
    c, s = client(identity=CLIENT), server()

    def tamper(i, msg):
        if i == which:
            b = bytearray(msg)
            b[pos % len(b)] ^= 1 << bit
            return bytes(b)
        return msg

    # A flipped psk bit in the suite byte is a policy refusal (AuthenticationError);
    # everything else fails authentication. Nobody completes either way.
    with pytest.raises((ProtocolError, AuthenticationError)):
        run(c, s, tamper)
    assert not s.complete


def test_local_misuse():
    c = client()
    with pytest.raises(RuntimeError):
        c.receive(b"\x00" * 64)
    c.start()
    with pytest.raises(RuntimeError):
        c.start()
    with pytest.raises(ValueError):
        client(psk=b"short")
    with pytest.raises(ValueError):
        client(cipher="DES")
    with pytest.raises(ValueError):
        client(transport_params=b"x" * (MAX_TRANSPORT_PARAMS + 1))
    with pytest.raises(ValueError):
        client(trusted_peers=[])
    with pytest.raises(TypeError):
        server(identity=None)
    with pytest.raises(TypeError):
        client(identity=b"raw")


def test_max_transport_params_fit():
    big_c, big_s = b"c" * MAX_TRANSPORT_PARAMS, b"s" * MAX_TRANSPORT_PARAMS
    for ckw in (dict(server_key=SERVER.public, identity=CLIENT), dict(identity=CLIENT)):
        c, s = client(transport_params=big_c, psk=PSK, **ckw), server(transport_params=big_s, psk=PSK)
        run(c, s)
        assert s.peer_transport_params == big_c and c.peer_transport_params == big_s


def test_message_after_completion_rejected():
    c, s = client(server_key=SERVER.public), server()
    run(c, s)
    with pytest.raises(ProtocolError):
        s.receive(b"\x01" * 80)
    with pytest.raises(ProtocolError):
        c.receive(b"\x01" * 80)


def test_fresh_keys_each_handshake():
    a = run(client(server_key=SERVER.public), server())
    b = run(client(server_key=SERVER.public), server())
    assert a[0].handshake_hash != b[0].handshake_hash


# ---------------------------------------------------------------- transport parameters
from dquic._codec import encode_varint  # noqa: E402
from dquic.transport_params import TransportParameters  # noqa: E402

_TP_IDS = {  # attribute -> (id, kind), restated here so the encoder is checked independently
    "original_destination_connection_id": (0x00, "bytes"), "max_idle_timeout": (0x01, "int"),
    "stateless_reset_token": (0x02, "bytes"), "max_udp_payload_size": (0x03, "int"),
    "initial_max_data": (0x04, "int"), "initial_max_stream_data": (0x05, "int"),
    "initial_max_streams": (0x08, "int"), "ack_delay_exponent": (0x0A, "int"),
    "max_ack_delay": (0x0B, "int"), "disable_active_migration": (0x0C, "flag"),
    "active_connection_id_limit": (0x0E, "int"), "initial_source_connection_id": (0x0F, "bytes"),
    "retry_source_connection_id": (0x10, "bytes"), "max_datagram_frame_size": (0x20, "int"),
}


def _reference_encode(tp: TransportParameters) -> bytes:
    default = TransportParameters()
    out = b""
    for name, (pid, kind) in _TP_IDS.items():  # declaration order of the dataclass
        value = getattr(tp, name)
        if value == getattr(default, name):
            continue
        body = encode_varint(value) if kind == "int" else (b"" if kind == "flag" else bytes(value))
        out += encode_varint(pid) + encode_varint(len(body)) + body
    return out


_cid = st.one_of(st.none(), st.binary(max_size=20))
_tp_strategy = st.builds(
    TransportParameters,
    original_destination_connection_id=_cid,
    max_idle_timeout=st.integers(0, 2**62 - 1),
    stateless_reset_token=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    max_udp_payload_size=st.integers(1200, 2**62 - 1),
    initial_max_data=st.integers(0, 2**62 - 1),
    initial_max_stream_data=st.integers(0, 2**62 - 1),
    initial_max_streams=st.integers(0, 2**60),
    ack_delay_exponent=st.integers(0, 20),
    max_ack_delay=st.integers(0, (1 << 14) - 1),
    disable_active_migration=st.booleans(),
    active_connection_id_limit=st.integers(2, 2**62 - 1),
    initial_source_connection_id=_cid,
    retry_source_connection_id=_cid,
    max_datagram_frame_size=st.integers(0, 2**62 - 1),
)


@given(_tp_strategy)
@settings(max_examples=300, deadline=None)
def test_transport_params_encode_matches_reference_and_roundtrips(tp):
    data = tp.encode()
    assert data == _reference_encode(tp)
    assert TransportParameters.decode(data) == tp


def _varint_n(value: int, n: int) -> bytes:
    # A (possibly non-minimal) n-byte varint, RFC 9000 §16.
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[n]
    raw = bytearray(value.to_bytes(n, "big"))
    raw[0] |= prefix << 6
    return bytes(raw)


@pytest.mark.parametrize("n_id,n_len,n_val", [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2), (8, 4, 8)])
def test_transport_params_decode_accepts_longer_varints(n_id, n_len, n_val):
    """Ids, lengths and values in longer-than-needed varint forms decode the same."""
    value = _varint_n(7, n_val)
    data = _varint_n(0x0A, n_id) + _varint_n(len(value), n_len) + value
    assert TransportParameters.decode(data).ack_delay_exponent == 7


@pytest.mark.parametrize("data", [
    b"\x01",                      # id without length
    b"\x01\x02\x05",              # value past the end
    b"\x01\x40",                  # truncated two-byte length
    b"\x41",                      # truncated two-byte id
    b"\x01\x02\x05\x00",          # int value with trailing byte
    b"\x01\x00",                  # empty int value
    b"\x0c\x01\x00",              # non-empty flag
    b"\x01\x01\x05\x01\x01\x05",  # duplicate
    b"\x3f\x00\x01\x01\x05\x3f\x01\x00",  # duplicate unknown parameter
    b"\x03\x01\x05",              # max_udp_payload_size below 1200
    b"\x02\x01\x00",              # short stateless reset token
])
def test_transport_params_decode_rejects(data):
    with pytest.raises(ProtocolError) as info:
        TransportParameters.decode(data)
    assert info.value.error_code == ErrorCode.TRANSPORT_PARAMETER_ERROR


def test_transport_params_unknown_ignored_and_size_capped():
    assert TransportParameters.decode(b"\x7f\xff\x02ab" + b"\x01\x01\x05").max_idle_timeout == 5
    with pytest.raises(ProtocolError):
        TransportParameters.decode(b"\x7f\xff\x44\x01" + bytes(1025))
