#!/usr/bin/env python3
"""Compare the packet-protection and handshake benchmarks of two dquic installations.

    python tools/bench_compare.py --wheel VENV_PYTHON [--dev PYTHON] [--rounds 3] [-k EXPR]

Runs ``bench/test_bench_crypto.py`` (bulk seal+open of 1,200-byte packets with each backend,
header protection, full handshakes) with both interpreters in turn, alternating them for
``--rounds`` rounds so that both see the same machine load, and prints each benchmark's median
(the median of the rounds' medians) in both and the ratio wheel/dev. The wheel's run happens
in a scratch directory holding a copy of bench/ only, so ``import dquic`` there can only find
the installed wheel; the development build's runs in the source tree. Each run's header shows
``dquic.build_info()`` (backend, libcrypto and where it was loaded from), checked to be the
libcrypto backend in both unless ``--any-backend``.

tools/check_dist.sh --bench runs this with the wheel it installed and the interpreter it was
started with (``DEV_PYTHON`` to choose another, e.g. a venv with an editable install).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFO = "import dquic, json; print(json.dumps(dquic.build_info()))"


def build_info(python: str, cwd: str) -> dict:
    r = subprocess.run([python, "-c", INFO], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_compare: {python} cannot import dquic (from {cwd}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_once(python: str, cwd: str, json_path: str, select) -> dict:
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_bench_crypto.py",
           "--benchmark-only", f"--benchmark-json={json_path}", "--benchmark-min-rounds=20"]
    if select:
        cmd += ["-k", select]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        sys.exit(f"bench_compare: the benchmark run failed with {python}")
    with open(json_path) as f:
        data = json.load(f)
    return {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", required=True, help="python of the environment with the installed wheel")
    ap.add_argument("--dev", default=sys.executable, help="python that imports the development build (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-k", dest="select", help="pytest -k expression (a subset of the benchmarks)")
    ap.add_argument("--any-backend", action="store_true", help="do not require the libcrypto backend")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(os.path.join(ROOT, "bench"), os.path.join(scratch, "bench"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "build"))
        envs = {"wheel": (args.wheel, scratch), "dev": (args.dev, ROOT)}
        infos = {}
        for name, (python, cwd) in envs.items():
            info = infos[name] = build_info(python, cwd)
            print(f"{name}: {python}\n    dquic {info['version']}, backend {info['backend']}, "
                  f"{info.get('openssl_version')} from {info.get('openssl_library')} "
                  f"(vendored: {info.get('openssl_vendored')}), cryptography {info.get('cryptography_version')}")
            if not args.any_backend and info["backend"] != "openssl":
                sys.exit(f"bench_compare: {name} does not run the libcrypto backend")
        if infos["wheel"].get("cryptography_version") != infos["dev"].get("cryptography_version"):
            print("  NOTE: different cryptography versions: the handshakes and the 'cryptography' "
                  "backend's figures compare those too")
        results = {name: [] for name in envs}
        for i in range(args.rounds):
            for name, (python, cwd) in envs.items():  # alternate: both see the same load
                results[name].append(run_once(python, cwd, os.path.join(scratch, f"{name}{i}.json"), args.select))
                print(f"  round {i + 1}/{args.rounds}: {name} done", flush=True)

    names = sorted(set.intersection(*(set(r) for rs in results.values() for r in rs)))
    med = {env: {n: statistics.median(r[n] for r in rs) for n in names} for env, rs in results.items()}
    spread = {env: {n: (max(r[n] for r in rs) - min(r[n] for r in rs)) / med[env][n] for n in names}
              for env, rs in results.items()}
    width = max(len(n) for n in names)
    title = f"benchmark (median of {args.rounds} rounds' medians)"
    width = max(width, len(title))
    print(f"\n{title:<{width}}  {'wheel us':>9}  {'dev us':>9}  {'wheel/dev':>9}  {'spread w/d':>11}")
    ratios = []
    for n in names:
        w, d = med["wheel"][n] * 1e6, med["dev"][n] * 1e6
        ratios.append(w / d)
        print(f"{n:<{width}}  {w:9.2f}  {d:9.2f}  {w / d:9.3f}  {spread['wheel'][n]:5.0%}/{spread['dev'][n]:<5.0%}")
    groups = {
        "packet protection, libcrypto backend": [i for i, n in enumerate(names) if "openssl]" in n],
        "packet protection, cryptography backend": [i for i, n in enumerate(names) if "cryptography]" in n],
        "handshakes": [i for i, n in enumerate(names) if n.startswith("test_handshake")],
        "all": list(range(len(names))),
    }
    print()
    for title, idx in groups.items():
        if idx:
            sel = [ratios[i] for i in idx]
            print(f"wheel/dev, {title}: geometric mean {statistics.geometric_mean(sel):.3f} over "
                  f"{len(sel)} benchmarks (min {min(sel):.3f}, max {max(sel):.3f})")


if __name__ == "__main__":
    main()
