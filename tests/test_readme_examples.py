"""README examples run as written.

Every ```python block of README.md is taken from the file and run: each is preceded by a
``<!-- example: NAME ... -->`` comment (invisible on the rendered page) that names how it runs
here, and a block without one, or with a name this file does not know, fails the suite. The
shell examples that are cheap and safe run too (the one-machine ``dquic keygen``/``serve``/``send``
script, ``dquic demo --seed 1``, whose printed output is compared with the README's), and
those that are not (installing the package, two machines) say why in their comment. Everything
runs in a fresh interpreter, in a temporary directory, over loopback, with a time limit. The
examples that use fixed ports (the seed examples' 9999, the script's 4433) run in a network
namespace of their own where the system allows it (root with ``unshare``), so they collide with
nothing; elsewhere they run on the machine's loopback and are skipped only if that port is busy.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

from _net import udp_port_bound

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"

pytestmark = [
    pytest.mark.skipif(not README.is_file(), reason="README.md is not shipped with the package"),
    pytest.mark.timeout(300),
]

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           PYTHONDONTWRITEBYTECODE="1")
ENV["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), ENV.get("PATH", "")])


class Block(NamedTuple):
    line: int
    lang: str
    name: Optional[str]
    text: str


def _blocks() -> List[Block]:
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"(?:^<!-- example: (?P<name>[^\s>]+)[^\n]*-->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
                         text, re.S | re.M):
        out.append(Block(text[:m.start("lang")].count("\n") + 1, m.group("lang"), m.group("name"),
                         m.group("body")))
    return out


def _named(name: str) -> List[Block]:
    found = [b for b in _blocks() if b.name == name]
    assert found, f"README.md has no block marked <!-- example: {name} -->"
    return found


def _only(name: str) -> str:
    found = _named(name)
    assert len(found) == 1, name
    return found[0].text


# How each python block runs: by itself in a fresh interpreter (the expected output lines, as
# regular expressions, are what the README's comments say it prints), in pairs, or with pytest.
SCRIPTS: Dict[str, List[str]] = {
    "opening": [r"\(\('127\.0\.0\.1', \d+\), \{1: b'HELLO'\}\)"],
    "asyncio": [re.escape("b'hello'")],
    "keypair": [r"[A-Za-z0-9+/]{43}="],
    "sans-io": [re.escape("handshake completed, client key: None"), re.escape("(b'hello', True)")],
    "simulator": [r"\d+\.\d\d s simulated, \d+ packets lost"],
    "fleet": [re.escape("9 0003")],
    "build-info": [r"(openssl (True|False) \S*libcrypto\S*|cryptography False None)"],
    "workers": [re.escape("{1: b'hello, workers'}")],
}
PAIRED = {"seed-server", "seed-client"}
PYTEST_FILES = {"pytest-markers", "test_my_protocol.py"}
SHELL = {"one-machine"}
NOT_RUN = {"not-run"}
OUTPUTS = {"demo-output", "serve-output"}


def test_every_example_has_a_way_to_run():
    """No python or shell block escapes: each has a marker this file runs (or, for shell
    blocks only, one saying why it is not run)."""
    blocks = _blocks()
    python = [b for b in blocks if b.lang == "python"]
    assert len(python) >= 10
    for b in python:
        assert b.name in set(SCRIPTS) | PAIRED | PYTEST_FILES, (
            f"README.md line {b.line}: a python block without a known <!-- example: NAME --> marker")
    for b in blocks:
        if b.lang in ("bash", "sh", "shell", "console"):
            assert b.name in SHELL | NOT_RUN, f"README.md line {b.line}: shell block without a marker"
        if b.name in OUTPUTS:
            assert b.lang == ""
    assert {b.name for b in python} == set(SCRIPTS) | PAIRED | PYTEST_FILES
    # the seed examples in the README are the files in examples/ (run by tests/io too)
    if EXAMPLES.is_dir():
        assert _only("seed-server") == (EXAMPLES / "seed_server.py").read_text(encoding="utf-8")
        assert _only("seed-client") == (EXAMPLES / "seed_client.py").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- isolation
@lru_cache(maxsize=None)
def _netns_prefix() -> Optional[List[str]]:
    """A command prefix running its argument in a new network namespace with loopback up, if
    this system allows it (root, unshare and ip), else None."""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return None
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        probe = subprocess.run(prefix + ["true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


def _isolated(argv: List[str], ports: List[int]) -> List[str]:
    """``argv`` in a network namespace of its own, or as it is when none can be made (then the
    fixed ``ports`` it uses must be free here)."""
    prefix = _netns_prefix()
    if prefix is not None:
        return prefix + argv
    if not os.path.exists("/proc/net/udp"):
        pytest.skip("cannot isolate fixed ports here (no network namespace, no /proc/net/udp)")
    for port in ports:
        if udp_port_bound(port):
            pytest.skip(f"UDP port {port} (used as written by the example) is busy")
    return argv


def _run(argv: List[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------- python
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_python_example_runs_and_prints_what_the_readme_says(name, tmp_path):
    code = _only(name)
    proc = _run([sys.executable, "-c", code], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = SCRIPTS[name]
    assert len(lines) == len(expected), proc.stdout
    for pattern, line in zip(expected, lines):
        assert re.fullmatch(pattern, line), (pattern, line)
    if name == "keypair":
        key = tmp_path / "server.key"
        assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600


# (the harness runs in a temporary directory: it carries its own copy of udp_port_bound)
_PAIR_HARNESS = inspect.getsource(udp_port_bound) + textwrap.dedent("""
    # the seed server, then the seed client once the server's port is bound; JSON out
    import json, subprocess, sys, time
    server = subprocess.Popen([sys.executable, "seed_server.py"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not udp_port_bound(9999) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        client = subprocess.run([sys.executable, "seed_client.py"], capture_output=True, text=True,
                                timeout=60)
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    print(json.dumps({"server": [server.returncode, out, err],
                      "client": [client.returncode, client.stdout, client.stderr]}))
""")


def test_seed_server_and_client_examples_run_together(tmp_path):
    """The seed examples use port 9999 as written: the server block and the client block run
    as two processes (in a network namespace of their own where possible)."""
    (tmp_path / "seed_server.py").write_text(_only("seed-server"), encoding="utf-8")
    (tmp_path / "seed_client.py").write_text(_only("seed-client"), encoding="utf-8")
    (tmp_path / "harness.py").write_text(_PAIR_HARNESS, encoding="utf-8")
    proc = _run(_isolated([sys.executable, "harness.py"], [9999]), tmp_path, timeout=150)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    s_rc, s_out, s_err = result["server"]
    c_rc, c_out, c_err = result["client"]
    assert s_rc == 0 and c_rc == 0, (s_err, c_err)
    assert c_out.splitlines() == [
        "Bytes sent: 36",
        "Received data from ('127.0.0.1', 9999): {1: b'response data stream 1', 2: b'response data stream 2'}"]
    s_lines = s_out.splitlines()
    assert re.fullmatch(r"Received data from \('127\.0\.0\.1', \d+\): "
                        r"\{1: b'some data stream 1', 2: b'some data stream 2'\}", s_lines[0]), s_lines
    assert s_lines[1:] == ["Bytes sent: 44"]


@pytest.mark.parametrize("name", sorted(PYTEST_FILES))
def test_pytest_examples_pass(name, tmp_path):
    """The plugin examples are test files: their blocks (a file continued over several blocks
    is put back together) pass under pytest, benchmarks included."""
    source = "\n\n".join(b.text for b in _named(name))
    test_file = tmp_path / ("test_my_protocol.py" if name.endswith(".py") else "test_markers.py")
    test_file.write_text(source, encoding="utf-8")
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-p", "dquic.pytest_plugin", test_file.name], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = len(re.findall(r"^def test_", source, re.M))
    assert re.search(rf"\b{tests} passed\b", proc.stdout), proc.stdout


# ------------------------------------------------------------------------------- shell
def _figures_free(line: str) -> str:
    """A README output line as a pattern: "..." stands for anything, and every figure that is
    timed (rates, RTTs, counts of a run over real sockets) for any number."""
    parts = re.split(r"(\.\.\.|\d[\d,]*(?:\.\d+)?)", line)
    out = []
    for p in parts:
        if p == "...":
            out.append(".*")
        elif p and p[0].isdigit():
            out.append(r"\d[\d,]*(?:\.\d+)?")
        else:
            out.append(re.escape(p))
    return "".join(out)


def test_demo_prints_what_the_readme_shows(tmp_path):
    """``python -m dquic demo --seed 1`` as written: the lines a seed decides (sizes, message
    counts, digests, the path) are the README's exactly; the timed ones (goodput, RTT, losses)
    have the README's form."""
    shown = _only("demo-output").splitlines()
    assert shown[0] == "$ python -m dquic demo --seed 1"
    proc = _run([sys.executable, "-m", "dquic", "demo", "--seed", "1"], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout.splitlines()
    assert len(printed) == len(shown) - 1, proc.stdout
    timed = ("goodput:", "rtt:", "loss:", "retransmissions:", "PASS:")
    for want, got in zip(shown[1:], printed):
        if want.startswith(timed):
            assert re.fullmatch(_figures_free(want), got), (want, got)
        elif want.startswith("security:"):  # a new key each run
            assert re.fullmatch(re.escape(want[:want.index("(") + 1]) + r"[A-Za-z0-9+/]{12}\.\.\.\)", got), got
        else:
            assert got == want


def test_one_machine_script_transfers_a_file(tmp_path):
    """The keygen/serve/send script as written (port 4433, in a network namespace of its own
    where possible), in a directory holding a copy of README.md to send; its serve lines have
    the form the README shows."""
    script = _only("one-machine")
    shutil.copy(README, tmp_path / "README.md")
    # where dquic is not installed as a command (a source checkout), the module stands in
    prelude = (f'command -v dquic >/dev/null 2>&1 || dquic() {{ "{sys.executable}" -m dquic "$@"; }}\n'
               "set -e\n")
    (tmp_path / "script.sh").write_text(prelude + script + "wait\n", encoding="utf-8")
    proc = _run(_isolated(["bash", "script.sh"], [4433]), tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "incoming" / "README.md").read_bytes() == README.read_bytes()
    assert (tmp_path / "server.pub").read_text().strip() in proc.stdout  # serve prints its key
    lines = proc.stdout.splitlines()
    assert any(re.fullmatch(r"sent README\.md \(\d+ bytes\): receiver verified sha256 [0-9a-f]{16}", l)
               for l in lines), proc.stdout
    # the README's serve output, with its key elided as "...": the same lines here (where IPv6
    # is missing, serve listens on 0.0.0.0 and says so)
    for want in _only("serve-output").splitlines():
        pattern = r"[A-Za-z0-9+/]{43}=".join(map(re.escape, re.split(r"[A-Za-z0-9+/]*\.\.\.=", want)))
        if not any(re.fullmatch(pattern, l) for l in lines):
            v4 = pattern.replace(re.escape("[::]"), re.escape("0.0.0.0")).replace(
                re.escape(", IPv4 and IPv6)"), re.escape(")"))
            assert any(re.fullmatch(v4, l) for l in lines), (want, proc.stdout)


# ------------------------------------------------------------------------------- prose
def test_socket_api_error_list_names_every_error():
    """The socket API's list of errors names every exception dquic raises to applications."""
    from dquic import errors

    text = README.read_text(encoding="utf-8")
    start = text.index("Errors: `dquic.")
    paragraph = text[start:text.index("\n\n", start)]
    for name in errors.__all__:
        if name in ("ErrorCode", "ProtocolError"):  # a code table; the decoders' own error
            continue
        assert f"`dquic.{name}`" in paragraph, name


def test_newcomer_path_comes_first():
    """Install, a first working example, the API, trust and the command line come before the
    reference material."""
    text = README.read_text(encoding="utf-8")
    heads = re.findall(r"^#{2,3} (.+)$", text, re.M)
    order = ["Two commands", "Using dquic", "The socket-like API", "The command line",
             "Security and trust", "The sans-IO core and the network simulator", "Performance", "Layout"]
    assert [h for h in heads if h in order] == order, heads
    first_example = text.index("```python")
    assert first_example < text.index("## Two commands")
