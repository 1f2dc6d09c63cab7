"""Packaging that users see: the light ``pytest`` extra, the operating-system classifiers
against the platforms wheels are built for, the benchmark example's figures; and what the
release wheels run: ``dquic.build_info()``, the release configuration that makes every wheel
link and carry its own libcrypto (and fail rather than fall back), and the local check
(tools/check_dist.sh) testing the same subset as the release workflow."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dquic

ROOT = Path(__file__).resolve().parent.parent

needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib, sys.stdlib_module_names")
if sys.version_info >= (3, 11):
    import tomllib


def _pyproject():
    path = ROOT / "pyproject.toml"
    if not path.exists():
        pytest.skip("no pyproject.toml beside the tests")
    return tomllib.loads(path.read_text())


@pytest.fixture(scope="module")
def project():
    return _pyproject()["project"]


@pytest.fixture(scope="module")
def cibuildwheel():
    return _pyproject()["tool"]["cibuildwheel"]


def _names(requirements):
    return {re.split(r"[<>=!~;\[ ]", r, 1)[0].strip().lower() for r in requirements}


@needs_tomllib
def test_pytest_extra_brings_what_the_plugin_and_benchmark_examples_need(project):
    extras = project["optional-dependencies"]
    light = _names(extras["pytest"])
    assert {"pytest", "pytest-benchmark"} <= light
    # nothing of the heavy test extra's build and analysis tools
    assert not light & {"numpy", "atheris", "cython", "mypy", "setuptools", "noiseprotocol", "uvloop"}
    # every third-party module the plugin imports is a dependency or in the extra
    # the plugin as imported (the source tree's, or the installed wheel's when the tests run
    # outside the tree)
    import dquic.pytest_plugin

    tree = ast.parse(Path(dquic.pytest_plugin.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "dquic"}
    assert third_party <= light | _names(project["dependencies"]), third_party


@needs_tomllib
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


# ------------------------------------------------------------------ build_info


def test_build_info_reports_the_packet_protection_backend():
    info = dquic.build_info()
    assert info["version"] == dquic.__version__
    assert info["backend"] in info["backends"] and info["backends"][-1] == "cryptography"
    from dquic import _protection

    assert info["backend"] == _protection.BACKEND
    has_openssl = "openssl" in info["backends"]
    assert (info["openssl_version"] is not None) == has_openssl
    if has_openssl:
        # the file the dynamic linker loaded libcrypto from (dladdr / GetModuleHandleEx)
        assert info["openssl_library"] and os.path.exists(info["openssl_library"])
        assert "crypto" in os.path.basename(info["openssl_library"]).lower() \
            or info["openssl_library"] == _protection.__file__  # linked statically
    else:
        assert info["openssl_library"] is None and info["openssl_vendored"] is False
    import cryptography

    assert info["cryptography_version"] == cryptography.__version__


@pytest.mark.skipif(os.environ.get("DQUIC_REQUIRE_OPENSSL") != "1", reason="DQUIC_REQUIRE_OPENSSL not set")
def test_build_info_under_required_openssl():
    # CI, tools/check_dist.sh and the release workflow's tests set DQUIC_REQUIRE_OPENSSL=1 (the
    # release wheels' OpenSSL 3 and its pinned version: tools/check_installed_wheel.py)
    info = dquic.build_info()
    assert info["backend"] == "openssl" and info["openssl_version"].startswith("OpenSSL ")
    assert info["openssl_library"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")
def test_build_info_library_is_the_one_mapped():
    info = dquic.build_info()
    if info["openssl_library"] is None:
        pytest.skip("built without libcrypto")
    with open("/proc/self/maps") as f:
        mapped = {os.path.realpath(line.split(None, 5)[5].strip()) for line in f if len(line.split(None, 5)) == 6}
    assert os.path.realpath(info["openssl_library"]) in mapped


def test_build_info_vendored_means_inside_the_installation():
    info = dquic.build_info()
    if info["openssl_library"] is None:
        pytest.skip("built without libcrypto")
    here = Path(dquic.__file__).resolve().parent
    lib = Path(info["openssl_library"]).resolve()
    inside = here in lib.parents or (here.parent / "dquic.libs") in lib.parents
    assert info["openssl_vendored"] == inside


# ------------------------------------------------------------------ release configuration


@needs_tomllib
def test_every_release_wheel_links_and_carries_libcrypto(cibuildwheel):
    """No platform builds the cryptography-only fallback; each builds the pinned OpenSSL,
    links it, refuses to fall back, and repairs with the script that refuses a wheel without it."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.cibuildwheel]"):text.index("[tool.mypy]")]
    assert "DQUIC_NO_OPENSSL" not in section
    assert "tools/build_openssl.py" in cibuildwheel["before-all"]
    for platform in ("linux", "macos", "windows"):
        conf = cibuildwheel[platform]
        assert conf["environment"]["DQUIC_REQUIRE_OPENSSL"] == "1", platform
        assert conf["environment"]["DQUIC_OPENSSL_DIR"], platform
        assert "tools/repair_wheel.py" in conf["repair-wheel-command"], platform
    assert "--archs {delocate_archs}" in cibuildwheel["macos"]["repair-wheel-command"]
    for override in cibuildwheel.get("overrides", []):
        if "environment" in override:  # e.g. MACOSX_DEPLOYMENT_TARGET: added to, not instead of
            assert override.get("inherit", {}).get("environment") == "append", override
    assert cibuildwheel["test-command"].startswith("python tools/check_installed_wheel.py --pinned &&")
    assert "tools/check_installed_wheel.py" in cibuildwheel["test-sources"]
    assert "tools/build_openssl.py" in cibuildwheel["test-sources"]


@needs_tomllib
def test_release_workflow_builds_every_platform_natively():
    workflow = ROOT / ".github" / "workflows" / "wheels.yml"
    if not workflow.exists():
        pytest.skip("no wheel workflow beside the tests")
    text = workflow.read_text()
    runners = dict(re.findall(r"- name: ([\w-]+)\n\s+os: ([\w.-]+)", text))
    assert set(runners) == {"linux-x86_64", "linux-aarch64", "macos-x86_64", "macos-arm64", "windows-amd64"}
    assert runners["linux-aarch64"].endswith("-arm")  # native, not emulated
    assert "qemu" not in text.lower()
    assert "msvc-dev-cmd" in text and "nasm" in text.lower()  # what OpenSSL's Windows build needs
    assert "check_dist.sh --build-openssl" in text


@needs_tomllib
def test_check_dist_quick_runs_what_the_release_tests_run(cibuildwheel):
    script = ROOT / "tools" / "check_dist.sh"
    if not script.exists():
        pytest.skip("no tools/ beside the tests")
    quick = re.search(r"QUICK_TESTS=\(([^)]*)\)", script.read_text()).group(1).split()
    released = [w for w in cibuildwheel["test-command"].split() if w.startswith("tests/")]
    assert quick == released
    assert all((ROOT / t).exists() for t in quick)


def test_openssl_pin_is_a_checksummed_3x_release():
    script = ROOT / "tools" / "build_openssl.py"
    if not script.exists():
        pytest.skip("no tools/ beside the tests")
    values = {}
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            values[node.targets[0].id] = node.value.value
    assert re.fullmatch(r"3\.\d+\.\d+", values["VERSION"])
    assert re.fullmatch(r"[0-9a-f]{64}", values["SHA256"])


def _setup_py(env_extra):
    setup = ROOT / "setup.py"
    if not setup.exists():
        pytest.skip("no setup.py beside the tests")
    pytest.importorskip("Cython")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQUIC_")}
    env.update(env_extra, DQUIC_ONLY="dquic._protection")
    return subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_required_openssl_build_fails_instead_of_falling_back(tmp_path):
    r = _setup_py({"DQUIC_REQUIRE_OPENSSL": "1", "DQUIC_OPENSSL_DIR": str(tmp_path / "no-openssl-here")})
    assert r.returncode != 0
    assert "DQUIC_REQUIRE_OPENSSL=1 but no usable OpenSSL" in r.stderr + r.stdout
    r = _setup_py({"DQUIC_REQUIRE_OPENSSL": "1", "DQUIC_NO_OPENSSL": "1"})
    assert r.returncode != 0 and "contradict" in r.stderr + r.stdout


def test_fallback_build_without_requirement_still_configures(tmp_path):
    r = _setup_py({"DQUIC_OPENSSL_DIR": str(tmp_path / "no-openssl-here")})
    assert r.returncode == 0, r.stderr
    assert "uses the cryptography package only" in r.stdout


def _tool(name):
    path = ROOT / "tools" / f"{name}.py"
    if not path.exists():
        pytest.skip("no tools/ beside the tests")
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(path, names):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, b"x")
        zf.writestr("dquic-0.1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in names) + "dquic-0.1.0.dist-info/RECORD,,\n")
    return str(path)


@pytest.mark.parametrize("vendored", [
    "dquic.libs/libcrypto-7c3c55df.so.3",           # auditwheel
    "dquic/.dylibs/libcrypto.3.dylib",             # delocate
    "dquic.libs/libcrypto-3-x64-1a2b3c4d.dll",     # delvewheel
])
def test_repair_accepts_a_wheel_carrying_libcrypto(tmp_path, monkeypatch, vendored):
    repair = _tool("repair_wheel")
    monkeypatch.setenv("DQUIC_OPENSSL_DIR", str(tmp_path))
    (tmp_path / "LICENSE.txt").write_text("the OpenSSL licence")
    wheel = _wheel(tmp_path / "w.whl", ["dquic/__init__.py", "dquic/_protection.so", vendored])
    repair.check(wheel, allow_none=False)
    import base64
    import hashlib
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        licence = vendored.rsplit("/", 1)[0] + "/LICENSE-OpenSSL.txt"
        assert zf.read(licence) == b"the OpenSSL licence"
        record = zf.read("dquic-0.1.0.dist-info/RECORD").decode().splitlines()
        assert zf.namelist()[-1] == "dquic-0.1.0.dist-info/RECORD"
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"the OpenSSL licence").digest()).rstrip(b"=").decode()
    assert f"{licence},sha256={digest},19" in record
    assert record[-1] == "dquic-0.1.0.dist-info/RECORD,,"


def test_repair_refuses_a_wheel_without_libcrypto(tmp_path, monkeypatch):
    repair = _tool("repair_wheel")
    monkeypatch.delenv("DQUIC_OPENSSL_DIR", raising=False)
    # a libcrypto elsewhere than the repair tools' directories does not count
    wheel = _wheel(tmp_path / "w.whl", ["dquic/__init__.py", "dquic/_protection.so", "dquic/libcrypto.txt"])
    with pytest.raises(SystemExit, match="carries no libcrypto"):
        repair.check(wheel, allow_none=False)
    repair.check(wheel, allow_none=True)  # a deliberate fallback build
