"""Static typing: the package passes mypy, its public names are typed (a wrong call fails to type
check), and the .pyi stubs of the compiled modules match the modules (mypy's stubtest).

The configuration is pyproject.toml's [tool.mypy]; the only stubtest differences allowed are those
of tests/stubtest_allowlist.txt, each with the reason a stub cannot express it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dquic

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(dquic.__file__).resolve().parent  # the source tree's, or the installed wheel's
ALLOWLIST = Path(__file__).resolve().parent / "stubtest_allowlist.txt"

# mypy (the test extra) supports Python 3.10+; dquic itself still runs on 3.9
pytestmark = pytest.mark.skipif(sys.version_info < (3, 10), reason="mypy of the test extra needs Python 3.10+")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def _run(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _mypy(cache: Path, *targets: str) -> subprocess.CompletedProcess:
    return _run(["mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache),
                 "--no-error-summary", *targets])


def test_package_passes_mypy(mypy_cache: Path) -> None:
    result = _mypy(mypy_cache, "-p", "dquic")
    assert result.returncode == 0, result.stdout + result.stderr


GOOD = """\
import dquic

endpoint: dquic.DQUIC = dquic.DQUIC(timeout=1.0)
sent: int = endpoint.send_to(("127.0.0.1", 4433), {1: b"x", 2: bytearray(b"y")})
address, messages = endpoint.receive_from(1024)
first: bytes = messages[1]
key: dquic.KeyPair = dquic.KeyPair.generate()
public: bytes = key.public
header: bytes = dquic.DQUICHeader(0, 1).to_bytes()
frame: dquic.DQUICFrame = dquic.DQUICFrame.from_bytes(dquic.DQUICFrame(1, 0x0E, 0, 5).to_bytes())
config: dquic.Configuration = dquic.Configuration()
error: OSError = dquic.ConnectionClosed("closed")
"""

# each line must be reported: the names behind dquic's lazy imports are not Any
BAD = {
    'dquic.DQUIC().send_to(("127.0.0.1", 4433), {"one": b"x"})': "str stream id",
    'dquic.DQUIC().send_to(("127.0.0.1", 4433), {1: b"x"}).decode()': "send_to returns an int",
    "dquic.DQUIC(timeout=1.0).receive_from(b'1024')": "max_bytes is an int",
    "key: bytes = dquic.KeyPair.generate()": "a KeyPair is not bytes",
    "dquic.load_public(1234)": "load_public takes text or bytes",
    "dquic.DQUICHeader(0, 1).to_bytes() + 1": "bytes + int",
    "dquic.Connection.no_such_method": "no such attribute",
}


def test_public_api_is_typed(mypy_cache: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(GOOD)
    result = _mypy(mypy_cache, str(good))
    assert result.returncode == 0, result.stdout + result.stderr

    bad = tmp_path / "bad.py"
    lines = list(BAD)
    bad.write_text("import dquic\n\n" + "\n".join(lines) + "\n")
    result = _mypy(mypy_cache, str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    reported = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    missed = [f"{text}  ({why})" for n, (text, why) in enumerate(BAD.items(), start=3) if n not in reported]
    assert not missed, "not reported by mypy:\n" + "\n".join(missed) + "\n" + result.stdout


def test_stubs_match_compiled_modules() -> None:
    compiled = sorted(p.stem for p in PACKAGE.glob("_*.pyx"))
    assert compiled, "no compiled modules found"
    missing = [name for name in compiled if not (PACKAGE / f"{name}.pyi").exists()]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"
    result = _run(["mypy.stubtest", "--mypy-config-file", str(ROOT / "pyproject.toml"),
                   "--allowlist", str(ALLOWLIST), *(f"dquic.{name}" for name in compiled)])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr
