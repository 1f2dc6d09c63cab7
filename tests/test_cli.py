"""The command line (python -m dquic): demo, keygen/pubkey, serve/send through a lossy relay with
resume from a .part, bench, usage errors, --help and --version, exit codes."""
from __future__ import annotations

import hashlib
import io
import os
import re
import select
import stat
import subprocess
import sys
import threading
import time

import pytest

import dquic
from dquic import cli
from dquic.cli import _common, keyfiles, transfer
from dquic.keys import KeyPair
from dquic.testing.relay import LossyRelay

from _net import free_udp_port

pytestmark = pytest.mark.timeout(180)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dquic.__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
COMMANDS = ["demo", "serve", "send", "keygen", "pubkey", "bench"]


def dquic_cmd(*args, timeout=120, check_rc=None):
    """Run ``python -m dquic args`` in a subprocess; returns CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "dquic", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.stdout, proc.stderr)
    return proc


def run_main(*args):
    """Run the CLI in-process: ``(exit code, stdout text)``."""
    out = io.StringIO()
    rc = cli.main([str(a) for a in args], out=out)
    return rc, out.getvalue()


class Server:
    """``dquic serve --port 0 --once`` in a subprocess; ``port`` and ``key`` from its first line."""

    def __init__(self, *args):
        if "--host" not in args:
            args = ("--host", "127.0.0.1") + args
        self.proc = subprocess.Popen([sys.executable, "-m", "dquic", "serve", "--port", "0", "--once",
                                      *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
        assert ready, "serve did not start"
        line = self.proc.stdout.readline()
        m = re.match(r"listening on (\S+):(\d+), server key (\S+)", line)
        assert m, line
        self.host = m.group(1)
        self.port = int(m.group(2))
        self.key = m.group(3)

    def finish(self, timeout=30):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"serve did not exit: {out} {err}")
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def servers():
    made = []

    def make(*args):
        s = Server(*args)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_random(path, size, seed):
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n


# ----------------------------------------------------------------------------------------------
def test_version():
    proc = dquic_cmd("--version", check_rc=0)
    assert proc.stdout.strip() == f"dquic {dquic.__version__}"


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_everywhere(command, capsys):
    args = ["--help"] if command is None else [command, "--help"]
    rc, _ = run_main(*args)
    text = capsys.readouterr().out
    assert rc == 0
    assert text.startswith("usage: dquic")
    if command is not None:
        assert f"dquic {command}" in text


@pytest.mark.parametrize("args", [
    [],
    ["serve", "--port", "0", "--trust", ","],
    ["send", "--trust", "", "127.0.0.1:1", "f"],
    ["nosuchcommand"],
    ["demo", "--loss", "2"],
    ["demo", "--streams", "0"],
    ["demo", "--size-mb", "-1"],
    ["send", "no-port-here", "file"],
    ["send", "127.0.0.1:70000", "file"],
    ["serve"],
    ["bench", "--seconds", "0"],
])
def test_usage_errors_exit_2(args, capsys):
    rc, _ = run_main(*args)
    assert rc == cli.EXIT_USAGE
    assert "usage: dquic" in capsys.readouterr().err


def test_usage_error_exit_2_in_subprocess():
    proc = dquic_cmd("demo", "--reorder", "x", check_rc=2)
    assert "--reorder" in proc.stderr


def test_send_missing_file_is_usage_error(tmp_path, capsys):
    rc, _ = run_main("send", "127.0.0.1:9", tmp_path / "missing.bin")
    assert rc == cli.EXIT_USAGE
    assert f"no such file: {tmp_path / 'missing.bin'}" in capsys.readouterr().err


def test_send_file_errors_say_what_is_wrong(tmp_path, capsys, monkeypatch):
    """A directory and an unreadable file get their own message (exit 2, nothing sent)."""
    rc, _ = run_main("send", "127.0.0.1:9", tmp_path)
    assert rc == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{tmp_path} is a directory" in err and "not a regular file" not in err
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"x")
    real_open = open

    def deny(path, *args, **kwargs):  # works when the tests run as root too
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    rc, _ = run_main("send", "127.0.0.1:9", secret)
    assert rc == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot read {secret}: permission denied" in err


def test_demo_subprocess_passes():
    proc = dquic_cmd("demo", "--size-mb", "1", "--seed", "5", "--delay-ms", "2", timeout=120,
                     check_rc=0)
    out = proc.stdout
    assert "PASS: 1.0 MiB on 4 streams verified (sha256)" in out
    for word in ("goodput:", "Mbit/s", "rtt: smoothed", "min", "loss: relay dropped",
                 "packets lost", "retransmissions:"):
        assert word in out, word
    assert out.count(" ok\n") == 4


def test_demo_in_process_options_and_qlog(tmp_path):
    before = set(threading.enumerate())
    rc, out = run_main("demo", "--size-mb", "0.5", "--streams", "3", "--seed", "9", "--loss", "0",
                       "--delay-ms", "0", "--reorder", "0", "--duplicate", "0", "--no-encryption",
                       "--qlog", tmp_path)
    assert rc == 0, out
    assert "encryption DISABLED" in out
    assert "PASS: 0.5 MiB on 3 streams" in out
    traces = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith("_client.sqlog") for n in traces)
    assert any(n.endswith("_server.sqlog") for n in traces)
    # every thread the demo started is gone
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            break
        left[0].join(0.1)
    assert not left


def test_demo_deadline_fails_with_exit_1(capsys):
    t0 = time.monotonic()
    rc, out = run_main("demo", "--size-mb", "4", "--loss", "0.4", "--timeout", "1", "--seed", "1")
    elapsed = time.monotonic() - t0
    assert rc == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "FAIL: deadline of 1 s passed" in err
    assert elapsed < 15


def test_keygen_and_pubkey(tmp_path):
    key = tmp_path / "id.key"
    proc = dquic_cmd("keygen", key, check_rc=0)
    public = proc.stdout.strip()
    assert KeyPair.load(key).public_b64 == public
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert dquic_cmd("pubkey", key, check_rc=0).stdout.strip() == public
    # an existing key is never overwritten silently
    proc = dquic_cmd("keygen", key, check_rc=2)
    assert "exists" in proc.stderr
    assert KeyPair.load(key).public_b64 == public
    rc, out = run_main("keygen", key, "--force")
    assert rc == 0 and out.strip() != public
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    assert dquic_cmd("pubkey", bad).returncode == 2


def test_serve_send_50mib_through_lossy_relay(tmp_path, servers):
    src = tmp_path / "big.bin"
    write_random(src, 50 << 20, seed=50)
    small = tmp_path / "small.txt"
    small.write_bytes(b"small file\n")
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    out_dir = tmp_path / "out"
    server = servers("--out", out_dir)
    with LossyRelay(("127.0.0.1", server.port), loss=0.005, delay=0.001, reorder=0.005,
                    duplicate=0.002, seed=3) as relay:
        host, port = relay.address
        t0 = time.monotonic()
        proc = dquic_cmd("send", f"{host}:{port}", src, small, empty, "--server-key", server.key,
                         "--no-progress", timeout=150)
        elapsed = time.monotonic() - t0
        rc, sout, serr = server.finish()
        counters = relay.counters
    assert proc.returncode == 0, (proc.stdout, proc.stderr, sout, serr)
    assert rc == 0, (sout, serr)
    assert "3 of 3 files verified" in proc.stdout
    assert sha256(out_dir / "big.bin") == sha256(src)
    assert (out_dir / "small.txt").read_bytes() == b"small file\n"
    assert (out_dir / "empty.dat").read_bytes() == b""
    assert not list(out_dir.glob("*.part"))
    assert "received big.bin (52428800 bytes, sha256 verified)" in sout
    assert counters.dropped > 0
    print(f"50 MiB through the relay in {elapsed:.1f} s")


def test_send_resumes_from_part(tmp_path, servers):
    src = tmp_path / "data.bin"
    write_random(src, 5 << 20, seed=1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    have = 3 << 20
    with open(src, "rb") as f:
        (out_dir / "data.bin.part").write_bytes(f.read(have))
    server = servers("--out", out_dir)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key,
                     "--no-progress")
    rc, sout, _ = server.finish()
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert rc == 0
    assert f"resumed at {have} bytes" in proc.stdout
    assert f"resumed at {have} bytes" in sout
    assert "2.0 MiB sent" in proc.stdout  # only the missing part travelled
    assert sha256(out_dir / "data.bin") == sha256(src)
    assert not (out_dir / "data.bin.part").exists()


def test_corrupt_part_fails_then_retry_succeeds(tmp_path, servers):
    src = tmp_path / "data.bin"
    write_random(src, 1 << 20, seed=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "data.bin.part").write_bytes(b"\x00" * 1000)  # not a prefix of the file
    server = servers("--out", out_dir)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key)
    rc, sout, _ = server.finish()
    assert proc.returncode == cli.EXIT_FAILURE, proc.stdout
    assert rc == cli.EXIT_FAILURE
    assert "sha256 mismatch" in proc.stdout
    assert not (out_dir / "data.bin").exists()
    assert not (out_dir / "data.bin.part").exists()  # dropped: the next attempt starts over
    server = servers("--out", out_dir)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key)
    assert proc.returncode == 0, proc.stdout
    assert server.finish()[0] == 0
    assert sha256(out_dir / "data.bin") == sha256(src)


def test_trusted_clients_and_pinned_server_key(tmp_path, servers):
    client_key = tmp_path / "client.key"
    server_key = tmp_path / "server.key"
    dquic_cmd("keygen", client_key, check_rc=0)
    server_pub = dquic_cmd("keygen", server_key, check_rc=0).stdout.strip()
    src = tmp_path / "f.txt"
    src.write_bytes(b"trusted\n")
    out_dir = tmp_path / "out"
    # the server only accepts the client key (given as a key file); the client pins the server
    server = servers("--out", out_dir, "--key", server_key, "--trust", client_key)
    assert server.key == server_pub
    # without the client key: refused (connection/authentication failure)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server_pub,
                     "--timeout", "3")
    assert proc.returncode == cli.EXIT_CONNECTION, (proc.stdout, proc.stderr)
    # a wrong pinned server key: refused too
    other = KeyPair.generate().public_b64
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--key", client_key,
                     "--server-key", other, "--timeout", "3")
    assert proc.returncode == cli.EXIT_CONNECTION, (proc.stdout, proc.stderr)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--key", client_key,
                     "--trust", server_pub)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    rc, sout, _ = server.finish()
    assert rc == 0
    assert (out_dir / "f.txt").read_bytes() == b"trusted\n"


def test_send_to_dead_port_exits_3(tmp_path):
    port = free_udp_port()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    proc = dquic_cmd("send", f"127.0.0.1:{port}", src, "--timeout", "0.5", timeout=30)
    assert proc.returncode == cli.EXIT_CONNECTION
    # refused at once where the kernel reports the ICMP port-unreachable (Linux), else timed out
    assert "connection failed" in proc.stderr
    assert "refused" in proc.stderr.lower() or "timeout" in proc.stderr.lower()


def test_bench_prints_table():
    rc, out = run_main("bench", "--seconds", "0.3")
    assert rc == 0, out
    assert "raw UDP sendto (baseline)" in out
    assert "dquic bulk, client->server" in out and "Mbit/s goodput" in out
    assert "dquic round trip" in out and "round trips/s" in out


def test_bench_with_a_tiny_time_still_reports_a_round_trip():
    # the round-trip test measures at least one round trip, however short --seconds is
    rc, out = run_main("bench", "--seconds", "1e-9")
    assert rc == 0, out
    assert "dquic round trip" in out and "median" in out


def test_refused_file_names():
    for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "x\x00y", 5, None, "a" * 300]:
        with pytest.raises(ValueError):
            transfer._check_name(bad)
    assert transfer._check_name("report.pdf") == "report.pdf"


def test_serve_stops_cleanly_on_sigint(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "dquic", "serve", "--host", "127.0.0.1", "--port",
                             "0", "--out", str(tmp_path)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready
        assert proc.stdout.readline().startswith("listening on 127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# the command line as a user expects it
@pytest.mark.parametrize("command", ["send", "serve"])
def test_trust_takes_one_value_per_use(command, tmp_path):
    """--trust before the positionals does not swallow them; it repeats, and takes a
    comma-separated list too (a key file's path is one value even with a comma in it)."""
    a, b, c = (KeyPair.generate() for _ in range(3))
    key_file = tmp_path / "with,comma.key"
    c.save(key_file)
    tail = ["127.0.0.1:4433", "f1", "f2"] if command == "send" else ["--port", "4433"]
    parser = cli.build_parser()
    args = parser.parse_args([command, "--trust", a.public_b64, *tail])
    assert keyfiles._parse_keys(args.trust) == [a.public]
    if command == "send":
        assert args.target == ("127.0.0.1", 4433) and args.files == ["f1", "f2"]
    args = parser.parse_args([command, "--trust", a.public_b64, "--trust", f"{b.public.hex()},",
                              "--trust", f"{a.public_b64}, {b.public_b64}", "--trust", str(key_file),
                              *tail])
    assert keyfiles._parse_keys(args.trust) == [a.public, b.public, a.public, b.public, c.public]


def test_send_with_trust_before_target(tmp_path, servers):
    src = tmp_path / "f.txt"
    src.write_bytes(b"trust first\n")
    out_dir = tmp_path / "out"
    server = servers("--out", out_dir)
    other = KeyPair.generate().public_b64
    proc = dquic_cmd("send", "--trust", other, "--trust", server.key, f"127.0.0.1:{server.port}",
                     src, "--no-progress")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert server.finish()[0] == 0
    assert (out_dir / "f.txt").read_bytes() == b"trust first\n"


def test_connection_errors_are_plain_sentences(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    proc = dquic_cmd("send", "no-such-host.invalid:4433", src, "--timeout", "2", timeout=60)
    assert proc.returncode == cli.EXIT_CONNECTION
    assert "cannot resolve host 'no-such-host.invalid'" in proc.stderr, proc.stderr
    assert "gaierror" not in proc.stderr and "Errno" not in proc.stderr
    port = free_udp_port()
    proc = dquic_cmd("send", f"127.0.0.1:{port}", src, "--timeout", "0.5", timeout=30)
    assert proc.returncode == cli.EXIT_CONNECTION
    assert f"no dquic server answered at 127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "ConnectionRefused" not in proc.stderr and "Errno" not in proc.stderr
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # takes packets, never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        proc = dquic_cmd("send", f"127.0.0.1:{port}", src, "--timeout", "0.5", timeout=30)
    assert proc.returncode == cli.EXIT_CONNECTION
    assert f"no dquic server answered at 127.0.0.1:{port} within 0.5 s" in proc.stderr, proc.stderr
    assert "ConnectionTimeout" not in proc.stderr and "Errno" not in proc.stderr


def test_authentication_errors_say_what_to_do(tmp_path, servers):
    client_key = tmp_path / "client.key"
    stranger_key = tmp_path / "stranger.key"
    server_key = tmp_path / "server.key"
    dquic_cmd("keygen", client_key, check_rc=0)
    stranger_pub = dquic_cmd("keygen", stranger_key, check_rc=0).stdout.strip()
    server_pub = dquic_cmd("keygen", server_key, check_rc=0).stdout.strip()
    src = tmp_path / "f.txt"
    src.write_bytes(b"x\n")
    server = servers("--out", tmp_path / "out", "--key", server_key, "--trust", client_key)
    target = f"127.0.0.1:{server.port}"

    def send(*args):
        proc = dquic_cmd("send", target, src, "--timeout", "3", "--no-progress", *args)
        assert proc.returncode == cli.EXIT_CONNECTION, (proc.stdout, proc.stderr)
        assert "Error" not in proc.stderr and "Errno" not in proc.stderr, proc.stderr
        return proc.stderr

    # no client key at all
    err = send("--server-key", server_pub)
    assert "the server refused this client" in err and "--key" in err and "--trust" in err, err
    assert "pattern" not in err
    # a client key the server does not trust: the message names it
    err = send("--key", stranger_key, "--server-key", server_pub)
    assert "its key is not on the server's trust list" in err, err
    assert f"--trust {stranger_pub}" in err
    # the same without pinning the server key (the refusal comes after the client's handshake)
    err = send("--key", stranger_key)
    assert "its key is not on the server's trust list" in err, err
    # a pinned server key that is not the server's
    err = send("--key", client_key, "--server-key", stranger_pub)
    assert "the server's key does not match --server-key" in err, err
    err = send("--key", client_key, "--trust", stranger_pub)
    assert "the server's key is not one of the --trust keys" in err, err
    proc = dquic_cmd("send", target, src, "--key", client_key, "--server-key", server_pub)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert server.finish()[0] == 0


def test_key_file_errors_are_plain(tmp_path, capsys):
    rc, _ = run_main("send", "127.0.0.1:9", __file__, "--key", tmp_path / "nokey")
    assert rc == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot read key file {tmp_path / 'nokey'}: no such file" in err, err
    assert "dquic keygen" in err and "Errno" not in err


def test_serve_refuses_to_overwrite(tmp_path, servers):
    src = tmp_path / "data.bin"
    write_random(src, 300_000, seed=4)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "data.bin").write_bytes(b"precious")
    server = servers("--out", out_dir)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key)
    rc, sout, _ = server.finish()
    assert proc.returncode == cli.EXIT_FAILURE, (proc.stdout, proc.stderr)
    assert rc == cli.EXIT_FAILURE
    assert "FAILED data.bin" in proc.stdout and "already exists on the receiver" in proc.stdout
    assert "--overwrite" in proc.stdout
    assert "data.bin" in sout and "already exists" in sout
    assert (out_dir / "data.bin").read_bytes() == b"precious"
    assert not (out_dir / "data.bin.part").exists()
    # --overwrite replaces it (after verification, as ever)
    server = servers("--out", out_dir, "--overwrite")
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert server.finish()[0] == 0
    assert sha256(out_dir / "data.bin") == sha256(src)
    # sending an identical file again is a success that moves no data (a verdict lost with the
    # connection can be retried without --overwrite)
    server = servers("--out", out_dir)
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--server-key", server.key)
    rc, sout, _ = server.finish()
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert rc == 0
    assert "already on the receiver" in proc.stdout and "0 B sent" in proc.stdout
    assert "already had data.bin" in sout


def test_serve_logs_refused_clients_and_failed_transfers(tmp_path, servers):
    client_key = tmp_path / "client.key"
    dquic_cmd("keygen", client_key, check_rc=0)
    stranger = KeyPair.generate()
    stranger_file = tmp_path / "stranger.key"
    stranger.save(stranger_file)
    src = tmp_path / "f.txt"
    src.write_bytes(b"x\n")
    out_dir = tmp_path / "out"
    server = servers("--out", out_dir, "--trust", client_key, "--idle-timeout", "1")
    target = f"127.0.0.1:{server.port}"
    assert dquic_cmd("send", target, src, "--server-key", server.key,
                     "--timeout", "3").returncode == cli.EXIT_CONNECTION
    assert dquic_cmd("send", target, src, "--key", stranger_file, "--server-key", server.key,
                     "--timeout", "3").returncode == cli.EXIT_CONNECTION
    # a trusted client that goes away in the middle of a file (no close: the server's idle
    # timeout ends the connection)
    script = f"""
import asyncio, json, os
from dquic import aio
from dquic.keys import KeyPair
async def main():
    conn = await aio.connect("127.0.0.1", {server.port}, identity=KeyPair.load({str(client_key)!r}))
    header = {{"name": "big.bin", "size": 10 << 20, "sha256": "0" * 64}}
    await conn.send_message(1, json.dumps(header).encode())
    await conn.receive_message(1)
    await conn.send_message(1, b"y" * 65536)
    await conn.flush(5)
    os._exit(0)
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script], env=ENV, check=True, timeout=30)
    rc, sout, serr = server.finish()
    assert rc == cli.EXIT_FAILURE, (sout, serr)
    refused = [line for line in sout.splitlines() if line.startswith("refused client 127.0.0.1:")]
    assert len(refused) == 2, sout
    assert "presented no key" in refused[0]
    # the refused key is named, so it can be added with --trust
    assert f"its key {stranger.public_b64} is not on the --trust list" in refused[1], refused
    assert "connection from 127.0.0.1:" in sout and "stopped answering" in sout, sout
    assert "incomplete big.bin: 65536 of 10485760 bytes kept in big.bin.part" in sout
    assert "Traceback" not in serr


def test_serve_listens_on_all_addresses_by_default(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dquic", "serve", "--port", "0", "--once",
                             "--out", str(tmp_path / "out")], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready
        line = proc.stdout.readline()
        m = re.match(r"listening on (\[::\]|0\.0\.0\.0):(\d+), server key (\S+)$", line)
        assert m, line
        hint = proc.stdout.readline()  # how clients pin this server
        assert f"dquic send HOST:{m.group(2)} FILE... --server-key {m.group(3)}" in hint, hint
        src = tmp_path / "f.txt"
        src.write_bytes(b"from anywhere\n")
        send = dquic_cmd("send", f"127.0.0.1:{m.group(2)}", src, "--server-key", m.group(3))
        assert send.returncode == 0, (send.stdout, send.stderr)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert (tmp_path / "out" / "f.txt").read_bytes() == b"from anywhere\n"
    assert build_default_host() in ("::", "0.0.0.0")


def build_default_host():
    args = cli.build_parser().parse_args(["serve", "--port", "1"])
    return args.host if args.host is not None else transfer._wildcard_hosts()[0]


def test_send_warns_when_server_key_not_pinned(tmp_path, servers):
    src = tmp_path / "f.txt"
    src.write_bytes(b"x\n")
    server = servers("--out", tmp_path / "out")
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--no-progress")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert server.finish()[0] == 0
    assert "warning: the server's identity is not verified" in proc.stderr, proc.stderr
    assert f"--server-key {server.key}" in proc.stderr
    server = servers("--out", tmp_path / "out2")
    proc = dquic_cmd("send", f"127.0.0.1:{server.port}", src, "--no-progress", "--server-key",
                     server.key)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert server.finish()[0] == 0
    assert "warning" not in proc.stderr


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_lines_for_files_and_pipes():
    """Not a terminal: a plain line every few seconds (done/total, percentage, rate, ETA),
    never a carriage return."""
    stream, clock = io.StringIO(), FakeClock()
    p = _common._Progress(100 * 1024 * 1024, "big.bin", stream=stream, clock=clock)
    for i in range(1, 101):  # 1 MiB every 0.1 s: 10 MiB/s
        clock.now = 100.0 + i * 0.1
        p.update(i * 1024 * 1024)
    p.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 4, lines  # 10 s at one line per 5 s, and a last one
    assert re.match(r"big\.bin: 50\.0 MiB of 100\.0 MiB \(50%\), 10\.0 MiB/s, ETA 0:05$",
                    lines[0]), lines
    assert lines[-1].startswith("big.bin: 100.0 MiB of 100.0 MiB (100%)")
    # a short transfer writes nothing (the result line says it all)
    stream = io.StringIO()
    p = _common._Progress(1000, "small", stream=stream, clock=FakeClock())
    p.update(1000)
    p.close()
    assert stream.getvalue() == ""


def test_progress_bar_on_a_terminal_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    stream, clock = Terminal(), FakeClock()
    p = _common._Progress(10 * 1024 * 1024, "f.bin", stream=stream, clock=clock, start=1024 * 1024)
    clock.now += 1.0
    p.update(4 * 1024 * 1024)  # 3 MiB in 1 s after resuming at 1 MiB
    text = stream.getvalue()
    assert text.startswith("\r[") and "\n" not in text
    assert "f.bin: 4.0 MiB of 10.0 MiB (40%), 3.0 MiB/s, ETA 0:02" in text
    p.close()
    assert stream.getvalue().endswith("\r")


def test_progress_uses_tqdm_on_a_terminal(monkeypatch):
    import types

    made = []

    class FakeTqdm:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, kwargs.get("initial", 0), False
            made.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    stream = Terminal()
    p = _common._Progress(1000, "f.bin", stream=stream, start=100)
    p.update(600)
    p.close()
    assert len(made) == 1 and made[0].n == 600 and made[0].closed
    assert made[0].kwargs["total"] == 1000 and made[0].kwargs["file"] is stream
    assert made[0].kwargs["unit"] == "B"
    # not a terminal: no tqdm, plain lines
    p = _common._Progress(1000, "f.bin", stream=io.StringIO())
    p.close()
    assert len(made) == 1


def test_readme_command_line_examples_parse():
    """Every `dquic ...` command in the README's command-line section parses as written."""
    readme = os.path.join(ROOT, "README.md")
    if not os.path.exists(readme):
        pytest.skip("no README.md next to the package")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    section = text.split("### The command line", 1)[1].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```(bash)?\n(.*?)```", section, re.S):
        for line in block[1].splitlines():
            if not block[0]:  # a transcript: only its "$ " lines are commands
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = line.split(" #", 1)[0].split(" & ", 1)[0].split(" > ", 1)[0].strip()
            for prefix in ("python -m dquic ", "dquic "):
                if line.startswith(prefix):
                    commands.append(line[len(prefix):])
                    break
    assert len(commands) >= 5, commands
    import shlex

    parser = cli.build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command))


def test_serve_reports_refusals_through_the_public_hook():
    """The command line learns of refused clients through dquic.aio.serve's
    on_handshake_failed, not through the driver's private event queue."""
    import importlib
    import inspect
    import pkgutil

    modules = [cli] + [importlib.import_module(f"dquic.cli.{m.name}") for m in pkgutil.iter_modules(cli.__path__)]
    source = "".join(inspect.getsource(module) for module in modules)
    assert "on_handshake_failed" in source
    assert "._driver" not in source and "next_event" not in source
