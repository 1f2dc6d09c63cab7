"""Packaging metadata that users see: the light ``pytest`` extra, the operating-system
classifiers against the platforms wheels are built for, and the benchmark example's figures."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib, sys.stdlib_module_names")
if sys.version_info >= (3, 11):
    import tomllib


@pytest.fixture(scope="module")
def project():
    path = ROOT / "pyproject.toml"
    if not path.exists():
        pytest.skip("no pyproject.toml beside the tests")
    return tomllib.loads(path.read_text())["project"]


def _names(requirements):
    return {re.split(r"[<>=!~;\[ ]", r, 1)[0].strip().lower() for r in requirements}


def test_pytest_extra_brings_what_the_plugin_and_benchmark_examples_need(project):
    extras = project["optional-dependencies"]
    light = _names(extras["pytest"])
    assert {"pytest", "pytest-benchmark"} <= light
    # nothing of the heavy test extra's build and analysis tools
    assert not light & {"numpy", "atheris", "cython", "mypy", "setuptools", "noiseprotocol", "uvloop"}
    # every third-party module the plugin imports is a dependency or in the extra
    tree = ast.parse((ROOT / "dquic" / "pytest_plugin.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "dquic"}
    assert third_party <= light | _names(project["dependencies"]), third_party


def test_os_classifiers_match_the_wheel_platforms(project):
    workflow = (ROOT / ".github" / "workflows" / "wheels.yml")
    if not workflow.exists():
        pytest.skip("no wheel workflow beside the tests")
    runners = set(re.findall(r"^\s*os:\s*([\w.-]+)", workflow.read_text(), re.M))
    built = {{"ubuntu": "POSIX :: Linux", "macos": "MacOS", "windows": "Microsoft :: Windows"}[r.split("-")[0]]
             for r in runners}
    classified = {c.split("Operating System :: ", 1)[1] for c in project["classifiers"]
                  if c.startswith("Operating System :: ")}
    assert classified == built, (classified, runners)


def test_benchmark_example_figures_say_where_they_come_from():
    readme = (ROOT / "README.md")
    if not readme.exists():
        pytest.skip("no README beside the tests")
    text = readme.read_text()
    section = text[text.index("## Benchmarking your protocol"):text.index("## Performance")]
    note = section[section.index("(`test_round_trip_latency`"):]
    note = note[:note.index(".)") + 2]
    assert "pytest test_my_protocol.py --benchmark-only" in note  # the command
    assert "2-core x86-64" in note and "Linux" in note  # the machine
    assert re.search(r"\d+ µs per request/response", note) and re.search(r"0\.0\d+ s per simulated", note)
