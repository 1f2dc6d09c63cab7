"""Handshakes per second: complete connection setups, client and server in one process (sans-IO).

Each round builds a fresh client/server pair of connections and exchanges datagrams until both
sides consider the handshake confirmed (dquic) or complete (aioquic). The aioquic case (TLS 1.3,
ECDSA P-256 certificate) runs in the same session as the reference; it is skipped with a reason
when aioquic (the ``bench`` extra) is not installed.

``test_bench_connection_lifecycle`` makes a whole connection with sans-IO endpoints (handshake,
one echoed message, close) over and over, both sides' work. Two breakdowns (group
"handshake-parts") say where a handshake's time goes: the Noise messages
alone for each pattern (no connection, packets or packet keys), and the X25519 work of one NX/NK
handshake (two key generations, four DH operations), which no implementation detail can remove.

    python -m pytest bench/test_bench_handshake.py --benchmark-only
"""
from __future__ import annotations

import pytest

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dquic._noise import HandshakeState
from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.testing.pairs import core_pair, exchange
from dquic.handshake import PATTERN_IDS
from dquic.keys import KeyPair

C_ADDR = ("127.0.0.1", 40000)
S_ADDR = ("127.0.0.1", 4433)
SERVER_KEY = KeyPair.generate()
CLIENT_KEY = KeyPair.generate()

# pattern -> (client options, server options)
PATTERNS = {
    "NX": ({}, {}),
    "NK": ({"server_key": SERVER_KEY.public}, {}),
    "XX": ({"identity": CLIENT_KEY}, {}),
    "IK": ({"identity": CLIENT_KEY, "server_key": SERVER_KEY.public}, {}),
}


def _dquic_handshake(client_opts, server_opts, cipher):
    client, server = core_pair(Configuration(cipher=cipher, **client_opts),
                               Configuration(is_client=False, identity=SERVER_KEY, **server_opts),
                               C_ADDR, S_ADDR)
    exchange(server, client, C_ADDR, S_ADDR, 0.0, rounds=10,
             until=lambda: client.handshake_confirmed and server.handshake_confirmed)
    if not (client.handshake_confirmed and server.handshake_confirmed):
        raise AssertionError("dquic handshake did not complete")


def _rate(benchmark):
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["handshakes_per_second"] = round(1.0 / benchmark.stats.stats.median)


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_bench_handshake_dquic(benchmark, pattern, cipher):
    benchmark.group = "handshake"
    client_opts, server_opts = PATTERNS[pattern]
    benchmark(_dquic_handshake, client_opts, server_opts, cipher)
    _rate(benchmark)


def _noise_handshake(pattern, payload=bytes(64)):
    # The Noise handshake messages of one connection, both roles, AES-GCM/SHA-256 suite.
    name = "Noise_%s_25519_AESGCM_SHA256" % pattern
    client_opts, _ = PATTERNS[pattern]
    i = HandshakeState(name, True, b"prologue", s=client_opts.get("identity"),
                       rs=client_opts.get("server_key"))
    r = HandshakeState(name, False, b"prologue", s=SERVER_KEY)
    while not (i.complete and r.complete):
        writer, reader = (i, r) if i.is_my_turn else (r, i)
        reader.read_message(writer.write_message(payload))
    i.take_split_keys()
    r.take_split_keys()


@pytest.mark.parametrize("pattern", list(PATTERN_IDS))
def test_bench_handshake_noise_only(benchmark, pattern):
    benchmark.group = "handshake-parts"
    benchmark(_noise_handshake, pattern)
    _rate(benchmark)


def _x25519_of_nx():
    # What NX/NK need from X25519: an ephemeral key per side and four DH results.
    e_i = X25519PrivateKey.generate()
    e_r = X25519PrivateKey.generate()
    re_i = X25519PublicKey.from_public_bytes(e_i.public_key().public_bytes_raw())
    re_r = X25519PublicKey.from_public_bytes(e_r.public_key().public_bytes_raw())
    rs = X25519PublicKey.from_public_bytes(SERVER_KEY.public)
    e_r.exchange(re_i)
    SERVER_KEY.private_key.exchange(re_i)
    e_i.exchange(re_r)
    e_i.exchange(rs)


def test_bench_handshake_x25519_floor(benchmark):
    benchmark.group = "handshake-parts"
    benchmark(_x25519_of_nx)
    _rate(benchmark)


class _Lifecycle:
    """A server endpoint and one reused client endpoint (sans-IO, as the drivers use them:
    output taken with ``settle=False``, then ``settle()``); ``one()`` makes a whole
    connection: handshake, one 32-byte message echoed, close, until both sides forgot it."""

    def __init__(self):
        self.server = Endpoint(Configuration(is_client=False, identity=SERVER_KEY), accept=True,
                               message_events=False)
        self.client = Endpoint(Configuration(), message_events=False)
        self.now = 0.0

    def _pump(self, done):
        client, server = self.client, self.server
        for _ in range(50):
            self.now += 1e-4
            out = client.trains_to_send(self.now, settle=False)
            client.settle()
            for data, _, _ in out:
                server.receive_datagram(bytes(data), C_ADDR, self.now)
            for conn in server.take_readable():
                for sid in conn.readable_streams():
                    piece = conn.read_message(sid, 1 << 16)
                    if piece is not None:
                        conn.send_message(sid, piece[0])
            server.take_events()
            back = server.trains_to_send(self.now, settle=False)
            server.settle()
            for data, _, _ in back:
                client.receive_datagram(bytes(data), S_ADDR, self.now)
            client.take_events()
            if done() and not out and not back:
                return
        raise AssertionError("connection did not make progress")

    def one(self):
        conn = self.client.connect(S_ADDR, self.now)
        self._pump(lambda: conn.is_established)
        conn.send_message(0, b"x" * 32)
        got = []

        def echoed():
            for c in self.client.take_readable():
                piece = c.read_message(0, 1 << 16)
                if piece is not None:
                    got.append(piece[0])
            return bool(got)

        self._pump(echoed)
        assert got == [b"x" * 32]
        conn.close()
        self._pump(lambda: conn.close_settled or conn.is_terminated)
        self.now += 5.0  # past the closing and draining periods
        self.client.handle_timer(self.now)
        self.server.handle_timer(self.now)
        self.client.take_events()
        self.server.take_events()


def test_bench_connection_lifecycle(benchmark):
    """A whole connection in the sans-IO core, both sides' work: handshake (NX), one echoed
    message, close, both endpoints back to no connection. The drivers add their sockets and
    wake-ups; this is what is left to the core (compare the X25519 floor above)."""
    benchmark.group = "handshake"
    pair = _Lifecycle()
    for _ in range(20):
        pair.one()
    benchmark(pair.one)
    _rate(benchmark)
    assert pair.client.connection_count == 0 and pair.server.connection_count == 0


def test_bench_handshake_aioquic(benchmark):
    try:
        import aioquic
        from aioquic.quic.configuration import QuicConfiguration
    except ImportError:
        pytest.skip("aioquic is not installed (pip install aioquic, the 'bench' extra): "
                    "no same-run reference")
    from test_bench_core import _self_signed, aioquic_handshake

    benchmark.group = "handshake"
    cert, key = _self_signed()

    def handshake():
        ccfg = QuicConfiguration(is_client=True, verify_mode=0, server_name="localhost",
                                 alpn_protocols=["bench"])
        scfg = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        scfg.certificate = cert
        scfg.private_key = key
        aioquic_handshake(ccfg, scfg, 20, 0.001)

    benchmark(handshake)
    _rate(benchmark)
    benchmark.extra_info["aioquic"] = aioquic.__version__
