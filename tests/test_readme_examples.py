"""README examples run as written: the opening snippet is taken from README.md and run in a
fresh interpreter (real sockets on loopback)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.skipif(not README.is_file(), reason="README.md is not shipped with the package")
def test_opening_example_runs_as_written():
    snippet = _python_blocks()[0]
    assert "DQUIC()" in snippet
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "{1: b'HELLO'}" in out.stdout and "127.0.0.1" in out.stdout
