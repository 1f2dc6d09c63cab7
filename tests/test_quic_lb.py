"""QUIC-LB connection IDs (dquic.quic_lb, PROTOCOL.md §17.1): the draft's test vectors, round
trips for every length, the generator, and servers whose connection IDs a load balancer can
route for the connection's whole life (handshake, NEW_CONNECTION_ID, Retry, migration)."""
import os
import random

import pytest

from dquic import _codec as codec
from dquic.config import Configuration
from dquic.quic_lb import (ConnectionIdGenerator, LoadBalancerConfig, UNROUTABLE_CONFIG_ID,
                           config_id_of, generator_for)
from dquic.testing import LinkConfig
from _sansio import rebind_mid_transfer
from dquic.testing.apps import make_pair

# draft-ietf-quic-load-balancers, appendix "Load Balancer Test Vectors": every vector there
# encodes the CID length in the first octet.
KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
ENCRYPTED_VECTORS = [
    (0, "ed793a", "ee080dbf", "0720b1d07b359d3c"),
    (1, "ed793a51d49b8f5fab65", "ee080dbf48", "2fcc381bc74cb4fbad2823a3d1f8fed2"),
    (2, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", "504dd2d05a7b0de9b2b9907afb5ecf8cc3"),
    (3, "ed793a51d49b8f5fab", "ee080dbf48c0d1e55d", "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc"),
]


def _vector(cr_bits, sid, nonce, key=None):
    sid, nonce = bytes.fromhex(sid), bytes.fromhex(nonce)
    cfg = LoadBalancerConfig(cr_bits, len(sid), len(nonce), key, length_self_encoding=True)
    return cfg, sid, nonce


@pytest.mark.parametrize("cr_bits,sid,nonce,cid", ENCRYPTED_VECTORS)
def test_encrypted_vectors(cr_bits, sid, nonce, cid):
    if cr_bits == 3:
        # The last vector's CID starts 0x12: config rotation 0b000, length 18. It was made when
        # its cr_bits column read 0; the draft revision that widened config rotation to 3 bits
        # relabelled the column 3 without regenerating the CID (the first octet is outside the
        # encryption, so only that octet differs). Config 0 gives the printed bytes exactly;
        # config 3 the same ciphertext under first octet 0x72.
        cfg3, sid_b, nonce_b = _vector(3, sid, nonce, KEY)
        assert cfg3.encode(sid_b, nonce_b).hex() == "72" + cid[2:]
        assert cfg3.decode(bytes.fromhex("72" + cid[2:])) == (sid_b, nonce_b)
        cr_bits = 0
    cfg, sid_b, nonce_b = _vector(cr_bits, sid, nonce, KEY)
    assert cfg.encode(sid_b, nonce_b).hex() == cid
    assert cfg.decode(bytes.fromhex(cid)) == (sid_b, nonce_b)
    assert cfg.server_id_of(bytes.fromhex(cid)) == sid_b


def test_single_pass_vector_is_one_aes_block():
    # vector 2 (8 + 8 bytes) takes the single-pass special case: one AES-ECB block
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cfg, sid, nonce = _vector(2, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", KEY)
    enc = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()
    assert cfg.encode(sid, nonce)[1:] == enc.update(sid + nonce)


def test_four_pass_worked_example():
    # the draft's step-by-step example of the four-pass algorithm (odd length: 7 bytes)
    key = bytes.fromhex("fdf726a9893ec05c0632d3956680baf0")
    cfg, sid, nonce = _vector(0, "31441a", "9c69c275", key)
    assert cfg.encode(sid, nonce).hex() == "0767947d29be054a"
    assert cfg.decode(bytes.fromhex("0767947d29be054a")) == (sid, nonce)


def test_plaintext_vector():
    cfg, sid, nonce = _vector(0, "c4605e", "4504cc4f")
    assert cfg.encode(sid, nonce).hex() == "07c4605e4504cc4f"
    assert cfg.decode(bytes.fromhex("07c4605e4504cc4f")) == (sid, nonce)


def test_plaintext_vector_with_misprinted_fields():
    """The draft's second plaintext vector reads ``1 350d28b420 3487d970b
    20a350d28b4203487d970b``: its fields were printed without leading zeros (a 9-digit nonce),
    so the 5-byte nonce is 03487d970b and the CID's bytes are 2a 350d28b420 03487d970b
    (config 1, length 10). Printing our CID's fields the same way gives the draft's line back,
    character for character."""
    cfg, sid, nonce = _vector(1, "350d28b420", "03487d970b")
    cid = cfg.encode(sid, nonce)
    assert cid.hex() == "2a350d28b42003487d970b"
    assert cfg.decode(cid) == (sid, nonce)
    printed = "%x%x%x%x" % (cid[0] & 0xE0, cid[0] & 0x1F, int.from_bytes(sid, "big"),
                            int.from_bytes(nonce, "big"))
    assert printed == "20a350d28b4203487d970b"


@pytest.mark.parametrize("keyed", [False, True])
def test_round_trip_every_length(keyed):
    rng = random.Random(5)
    key = bytes(rng.getrandbits(8) for _ in range(16)) if keyed else None
    for sid_len in range(1, 16):
        for nonce_len in range(4, 20 - sid_len):
            cfg = LoadBalancerConfig(rng.randrange(7), sid_len, nonce_len, key,
                                     length_self_encoding=bool(rng.getrandbits(1)))
            seen = set()
            for _ in range(8):
                sid = bytes(rng.getrandbits(8) for _ in range(sid_len))
                nonce = bytes(rng.getrandbits(8) for _ in range(nonce_len))
                cid = cfg.encode(sid, nonce, rng.getrandbits(5))
                assert len(cid) == 1 + sid_len + nonce_len
                assert config_id_of(cid) == cfg.config_id
                if cfg.length_self_encoding:
                    assert cid[0] & 0x1F == sid_len + nonce_len
                assert cfg.decode(cid) == (sid, nonce)
                if keyed:  # the server ID does not show
                    assert cid[1:1 + sid_len] != sid or sid_len + nonce_len != 16
                seen.add(cid)
            assert len(seen) == 8


def test_config_limits():
    with pytest.raises(ValueError):
        LoadBalancerConfig(7, 2, 6)  # 0b111 is reserved
    with pytest.raises(ValueError):
        LoadBalancerConfig(0, 0, 6)
    with pytest.raises(ValueError):
        LoadBalancerConfig(0, 2, 3)
    with pytest.raises(ValueError):
        LoadBalancerConfig(0, 10, 10)  # 21-byte connection ID
    with pytest.raises(ValueError):
        LoadBalancerConfig(0, 2, 6, key=b"short")
    cfg = LoadBalancerConfig(1, 2, 5)
    with pytest.raises(ValueError):
        cfg.decode(bytes(7))  # too short
    with pytest.raises(ValueError):
        cfg.decode(bytes(8))  # config 0, not 1
    with pytest.raises(ValueError):
        cfg.encode(b"\x01", bytes(5))


def test_generator_plaintext_random_nonces():
    cfg = LoadBalancerConfig(2, 2, 5)
    gen = ConnectionIdGenerator(cfg, b"\xab\xcd")
    cids = [gen(8) for _ in range(1000)]
    assert len(set(cids)) == 1000
    assert all(cfg.server_id_of(c) == b"\xab\xcd" for c in cids)
    assert len({c[0] & 0x1F for c in cids}) > 1  # random low bits without self-encoding
    with pytest.raises(ValueError):
        gen(9)


def test_generator_encrypted_counter_then_unroutable():
    cfg = LoadBalancerConfig(0, 3, 4, KEY)
    gen = ConnectionIdGenerator(cfg, b"\x01\x02\x03")
    gen._next = gen._start = (1 << 32) - 3  # near the end of the nonce space
    cids = [gen(8) for _ in range(3)]
    nonces = [int.from_bytes(cfg.decode(c)[1], "big") for c in cids]
    assert nonces == [(1 << 32) - 3, (1 << 32) - 2, (1 << 32) - 1] and not gen.exhausted
    gen._start = 1  # pretend the counter started at 1: the next nonce (0) is its last
    cids = [gen(8) for _ in range(3)]
    assert cfg.decode(cids[0])[1] == bytes(4) and gen.exhausted
    assert all(config_id_of(c) == UNROUTABLE_CONFIG_ID and c[0] & 0x1F == 7 for c in cids[1:])


def test_configuration_validates_and_issues():
    Configuration(is_client=False, server_id=b"\x01\x02", connection_id_length=8).validate()
    for bad in (dict(server_id=b""), dict(server_id=bytes(16)),
                dict(server_id=b"\x01\x02\x03\x04", connection_id_length=8),
                dict(server_id=b"\x01", lb_key=b"x"), dict(server_id=b"\x01", lb_config_id=7)):
        with pytest.raises(ValueError):
            Configuration(is_client=False, **bad).validate()
    cfg = Configuration(is_client=False, server_id=b"\x05\x06", lb_key=KEY, lb_config_id=3,
                        lb_length_self_encoding=True, connection_id_length=12)
    lb = LoadBalancerConfig(3, 2, 9, KEY)
    for _ in range(50):
        cid = cfg.new_connection_id(os.urandom)
        assert len(cid) == 12 and cid[0] == (3 << 5) | 11
        assert lb.server_id_of(cid) == b"\x05\x06"
    assert len(Configuration().new_connection_id(os.urandom)) == 8
    assert generator_for(12, b"\x05\x06", 3, KEY, True) is generator_for(12, b"\x05\x06", 3, KEY, True)


def _record_dcids(node, cid_len):
    """Wrap the endpoint's receive_datagram: (packet kind, DCID) of every datagram."""
    seen = []
    ep = node.endpoint
    orig = ep.receive_datagram

    def receive(data, addr, now):
        if data[0] & 0x80:
            hdr = codec.pull_header(codec.Buffer(data), cid_len)
            seen.append((hdr.packet_type, bytes(hdr.dcid)))
        else:
            seen.append(("short", bytes(data[1:1 + cid_len])))
        orig(data, addr, now)

    ep.receive_datagram = receive
    return seen


@pytest.mark.parametrize("key,retry", [(None, False), (KEY, False), (KEY, True)])
def test_server_connection_ids_route_to_the_server_across_migration(key, retry):
    """Every datagram the client sends after the handshake's first flight carries a DCID a
    QUIC-LB balancer decodes to the server's ID: the SCID of the handshake (or the Retry's), the
    IDs of NEW_CONNECTION_ID, also after a NAT rebinding moved the client."""
    sid = b"\x42\x17"
    scfg = Configuration(is_client=False, server_id=sid, lb_key=key, lb_config_id=1,
                         connection_id_length=9, active_connection_id_limit=4)
    ccfg = Configuration(active_connection_id_limit=4)
    net, client, server, conn = make_pair(
        LinkConfig(delay=0.01, bandwidth=50e6), seed=21, client_config=ccfg, server_config=scfg,
        server_endpoint={"require_retry": retry})
    seen = _record_dcids(server, 9)
    data = os.urandom(1 << 20)
    conn.send_message(1, data)
    new_addr = ("198.51.100.8", 40000)
    rebind_mid_transfer(net, server, 1, data, 300_000, new_addr)
    sconn = server.endpoint.connections[0]
    assert sconn.peer_addr == new_addr
    lb = LoadBalancerConfig(1, 2, 6, key)
    odcid = conn.original_dcid
    routed = [d for kind, d in seen if d != odcid]
    assert len(routed) > 100 and any(kind == "short" for kind, _ in seen)
    assert {lb.server_id_of(d) for d in routed} == {sid}
    # the client was given several IDs (NEW_CONNECTION_ID), each carrying the server ID
    issued = set(sconn._host_cids.values())
    assert len(issued) >= 3
    assert {lb.server_id_of(c) for c in issued} == {sid}
    if retry:
        assert server.endpoint.retries_sent == 1
