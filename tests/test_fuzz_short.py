"""Runs the codec fuzz target (tests/fuzz/fuzz_codec.py) briefly in a subprocess.

The full-length run is `python tests/fuzz/fuzz_codec.py -atheris_runs=N [corpus_dir]`.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("atheris")

FUZZ_TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "fuzz_codec.py")


@pytest.mark.fuzz
def test_fuzz_codec_short_run(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, FUZZ_TARGET, "--make-corpus", str(corpus)], check=True, timeout=60)
    assert len(os.listdir(corpus)) > 20
    # libFuzzer's RSS limit (2 GiB by default) reads the process's peak RSS, which on Linux
    # includes what the forking process had before exec: the suite's own peak (1.8-2.1 GB after
    # the simulator tests) made this run "out of memory" before its first input. The limit here
    # is above any such inherited peak; a single allocation is still capped at 2 GiB.
    proc = subprocess.run(
        [sys.executable, FUZZ_TARGET, "-atheris_runs=5000", "-seed=1", "-rss_limit_mb=8192",
         "-malloc_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Done 5000" in proc.stderr + proc.stdout


@pytest.mark.fuzz
def test_fuzz_target_rejects_a_planted_bug(tmp_path, monkeypatch):
    """The harness really reports failures: feed it an input through a checker that fails."""
    sys.path.insert(0, os.path.dirname(FUZZ_TARGET))
    try:
        import fuzz_codec  # noqa: WPS433 (import inside the test: atheris instruments on import)
    finally:
        sys.path.pop(0)
    # a valid input passes
    fuzz_codec.TestOneInput(fuzz_codec.seed_inputs()[0])
    # a decoder that raises something other than ProtocolError is caught as a bug
    def broken(*args, **kwargs):
        raise KeyError("planted")
    monkeypatch.setattr(fuzz_codec.codec, "decode_varint", broken)
    with pytest.raises(KeyError):
        fuzz_codec.TestOneInput(b"\x00\x01")
