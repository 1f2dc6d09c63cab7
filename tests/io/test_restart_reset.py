"""A server restarted with the same key file resets the connections of its previous process:
its stateless-reset key is derived from the static key, so clients learn within a round trip
instead of at their idle timeout."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dquic
from dquic import ConnectionClosed
from dquic.endpoint import Endpoint, reset_key_for
from dquic.config import Configuration
from dquic.keys import KeyPair

from _net import free_udp_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

SERVER = r"""
import sys
import dquic
from dquic.keys import KeyPair
server = dquic.DQUIC(identity=KeyPair.load(sys.argv[1]))
server.bind(("127.0.0.1", int(sys.argv[2])))
print("ready", flush=True)
while True:
    addr, messages = server.receive_from(65536)
    server.send_to(addr, messages)
"""


def _start(key_path: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(key_path), str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(proc.communicate(timeout=10)[1])
    return proc


def _time_to_failure(key_after: Path, tmp_path: Path, limit: float) -> float:
    """Seconds until the client's send_to reports the dead connection (``limit`` if never)."""
    key = KeyPair.generate()
    key_path = tmp_path / "server.key"
    key.save(key_path)
    port = free_udp_port()
    server = _start(key_path, port)
    client = dquic.DQUIC(server_key=key.public, linger=0.2)
    client.settimeout(5.0)
    try:
        client.send_to(("127.0.0.1", port), {1: b"hello"})
        assert client.receive_from(1024)[1] == {1: b"hello"}
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = _start(key_path if key_after is None else key_after, port)
        start = time.monotonic()
        while time.monotonic() - start < limit:
            try:
                client.send_to(("127.0.0.1", port), {1: b"are you there?" * 8})
            except ConnectionClosed:
                return time.monotonic() - start
            time.sleep(0.02)
        return limit
    finally:
        client.close(abandon=True)  # the last messages went to a dead connection
        server.kill()
        server.communicate(timeout=10)


def test_restarted_server_with_key_file_resets_old_clients_within_a_second(tmp_path):
    elapsed = _time_to_failure(None, tmp_path, 5.0)
    assert elapsed < 1.0, elapsed


def test_restarted_server_with_another_key_cannot_reset_them(tmp_path):
    other = tmp_path / "other.key"
    KeyPair.generate().save(other)
    # its reset tokens are not the ones the client was given: the client keeps going until its
    # idle timeout (here: past the 1.5 s looked at)
    assert _time_to_failure(other, tmp_path, 1.5) == 1.5


def test_reset_key_follows_the_identity():
    key = KeyPair.generate()
    a = Endpoint(Configuration(is_client=False, identity=key), accept=True)
    b = Endpoint(Configuration(is_client=False, identity=key), accept=True)
    c = Endpoint(Configuration(is_client=False, identity=KeyPair.generate()), accept=True)
    cid = os.urandom(8)
    assert a._reset_tokens(cid) == b._reset_tokens(cid) != c._reset_tokens(cid)
    assert reset_key_for(key) not in (key.private, key.public)
    explicit = Endpoint(Configuration(is_client=False, identity=key), accept=True, reset_key=b"k" * 32)
    assert explicit._reset_tokens(cid) != a._reset_tokens(cid)
