"""The seed README's Server and Client examples, verbatim, as two processes on port 9999."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _net import udp_port_bound

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PORT = 9999


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not shipped with the package")
@pytest.mark.skipif(not os.path.exists("/proc/net/udp"), reason="needs /proc/net/udp to see the port")
def test_seed_readme_examples_verbatim():
    if udp_port_bound(PORT):
        pytest.skip(f"UDP port {PORT} (used verbatim by the seed examples) is busy")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, str(EXAMPLES / "seed_server.py")], cwd=EXAMPLES, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the client must not start before the server is bound (it would be refused)
        deadline = time.monotonic() + 30
        while not udp_port_bound(PORT):
            if server.poll() is not None:
                err = server.communicate()[1]
                if "Address already in use" in err:
                    pytest.skip(f"UDP port {PORT} was taken while the example started")
                raise AssertionError(err)
            assert time.monotonic() < deadline, "server never bound its port"
            try:
                server.wait(0.01)
            except subprocess.TimeoutExpired:
                pass
        client = subprocess.run([sys.executable, str(EXAMPLES / "seed_client.py")], cwd=EXAMPLES, env=env,
                                capture_output=True, text=True, timeout=60)
        s_out, s_err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert client.returncode == 0, client.stderr
    assert server.returncode == 0, s_err
    c_lines = client.stdout.splitlines()
    s_lines = s_out.splitlines()
    assert c_lines[0] == "Bytes sent: 36"
    m = re.fullmatch(r"Received data from \('127\.0\.0\.1', (\d+)\): (.*)", s_lines[0])
    assert m, s_lines
    client_port = int(m.group(1))
    assert m.group(2) == "{1: b'some data stream 1', 2: b'some data stream 2'}"
    assert s_lines[1] == "Bytes sent: 44"
    assert c_lines[1] == ("Received data from ('127.0.0.1', 9999): "
                          "{1: b'response data stream 1', 2: b'response data stream 2'}")
    assert 0 < client_port <= 65535 and client_port != PORT
    assert len(c_lines) == 2 and len(s_lines) == 2
