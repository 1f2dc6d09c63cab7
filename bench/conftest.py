"""Shared setup of the benchmarks in bench/.

Run them all with::

    python -m pytest bench/ --benchmark-only --benchmark-json=bench.json

(``-s`` also shows the per-operation figures some benchmarks print). The JSON report holds
the statistics of each benchmark but not its raw timings (add ``--benchmark-save-data`` to keep
them: for the whole of bench/ they run to hundreds of megabytes). Its
``machine_info`` gets a ``dquic`` entry recording what was measured: the dquic version, the
Python version, for each compiled module whether it really is the compiled extension and
when it was built (a benchmark of a stale build is not comparable with a fresh one), and
``dquic.build_info()``: the packet-protection backend, the libcrypto version and the file it
was loaded from (a release wheel's vendored copy or the system's), and the ``cryptography``
version (figures of the two backends, or of two libcrypto builds, are not comparable either).
"""
from __future__ import annotations

import importlib
import os
import sys

import pytest

def _compiled_module_names(pkgdir: str) -> list:
    """Every module of the package that has a Cython source (.pyx, shipped in wheels too) or a
    compiled extension next to it."""
    names = set()
    for entry in os.listdir(pkgdir):
        if entry.endswith(".pyx"):
            names.add(entry[:-4])
        elif entry.endswith((".so", ".pyd")):
            names.add(entry.split(".", 1)[0])
    return sorted(names)


def _build_info() -> dict:
    import dquic

    pkgdir = os.path.dirname(os.path.abspath(dquic.__file__))
    modules = {}
    for name in _compiled_module_names(pkgdir):
        try:
            mod = importlib.import_module(f"dquic.{name}")
        except ImportError as exc:
            modules[name] = f"not importable: {exc}"
            continue
        path = getattr(mod, "__file__", "") or ""
        modules[name] = {
            "compiled": path.endswith((".so", ".pyd")),
            "file": os.path.basename(path),
            "mtime": int(os.path.getmtime(path)) if path else None,
        }
    try:
        build = dquic.build_info()
    except Exception as exc:  # an older dquic, or a broken build: say so, never fail the run
        build = {"error": repr(exc)}
    return {
        "version": dquic.__version__,
        "location": pkgdir,
        "python": sys.version.split()[0],
        "modules": modules,
        "build": build,
    }


@pytest.hookimpl(optionalhook=True)  # a pytest-benchmark hook: harmless without the plugin
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["dquic"] = _build_info()


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    # --benchmark-json normally embeds every single timing (hundreds of MB for the whole of
    # bench/, where the fast benchmarks run millions of rounds); keep the statistics only,
    # unless --benchmark-save-data asks for the raw timings.
    if config.getoption("benchmark_save_data", False):
        return
    for bench in output_json.get("benchmarks", ()):
        bench.get("stats", {}).pop("data", None)


def pytest_report_header(config):
    try:
        info = _build_info()
    except Exception as exc:  # the header must never break a run
        return f"dquic: unavailable ({exc!r})"
    stale = [n for n, m in info["modules"].items() if not (isinstance(m, dict) and m["compiled"])]
    state = "all compiled" if not stale else f"NOT COMPILED: {', '.join(stale)}"
    build = info["build"]
    crypto = (f"packet protection: {build.get('backend')}"
              + (f", {build['openssl_version']} from {build['openssl_library']}" if build.get("openssl_version") else ""))
    return f"dquic {info['version']} from {info['location']} ({state}); {crypto}"
