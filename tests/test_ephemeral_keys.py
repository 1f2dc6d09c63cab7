"""Ephemeral keys made ahead of their handshake (``dquic._noise.prepare_ephemeral``): the next
handshake uses the waiting key, no key serves two handshakes (threads included), a forked
child forgets its parent's, and an endpoint makes the next one once its output has left."""
from __future__ import annotations

import os
import sys
import threading

import pytest

from dquic import _noise
from dquic._noise import HandshakeState, prepare_ephemeral
from dquic.config import Configuration
from dquic.endpoint import Endpoint
from dquic.keys import KeyPair

NAME = "Noise_NX_25519_AESGCM_SHA256"


@pytest.fixture(autouse=True)
def _no_spares():
    _noise._spares.clear()
    yield
    _noise._spares.clear()


def _first_message_e() -> bytes:
    # the ephemeral public key an initiator sends first (NX: message 1 is "e")
    return HandshakeState(NAME, True, b"p").write_message(b"")[:32]


def test_the_next_handshake_takes_the_waiting_key_once():
    assert prepare_ephemeral()
    assert not prepare_ephemeral()  # one waits already
    (key, pub), = _noise._spares
    assert _first_message_e() == pub
    assert not _noise._spares
    assert _first_message_e() != pub  # the next one makes its own


def test_a_fixed_key_for_test_vectors_leaves_the_waiting_one():
    prepare_ephemeral()
    fixed = bytes(range(32))
    hs = HandshakeState(NAME, True, b"p", e=fixed)
    hs.write_message(b"")
    assert len(_noise._spares) == 1


def test_no_key_serves_two_handshakes_across_threads():
    seen = []
    lock = threading.Lock()

    def work():
        for _ in range(40):
            prepare_ephemeral()
            e = _first_message_e()
            with lock:
                seen.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 160 and len(set(seen)) == 160


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")
def test_a_forked_child_forgets_the_waiting_key():
    prepare_ephemeral()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(w, b"%d" % len(_noise._spares))
        os._exit(0)
    os.close(w)
    got = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"0"
    assert len(_noise._spares) == 1  # the parent keeps its own


def test_an_endpoint_makes_the_next_key_after_its_handshake_output_left():
    server = Endpoint(Configuration(is_client=False, identity=KeyPair.generate()), accept=True)
    client = Endpoint(Configuration())
    client.connect(("127.0.0.1", 4433), 0.0)
    assert not _noise._spares
    trains = client.trains_to_send(0.0, settle=False)
    assert trains and not _noise._spares  # not before the first message is out
    client.settle()
    assert len(_noise._spares) == 1
    (key, pub), = _noise._spares
    initial = trains[0][0]
    server.receive_datagram(bytes(initial), ("127.0.0.1", 5000), 0.0)  # takes it for its reply
    assert not _noise._spares
    server.trains_to_send(0.0, settle=False)
    server.settle()
    assert len(_noise._spares) == 1 and _noise._spares[0][1] != pub
    client.settle()
    assert len(_noise._spares) == 1  # nothing began since: nothing more made
