#!/usr/bin/env bash
# Builds the sdist and the wheel, installs the wheel into a fresh virtual environment and runs the
# test suite from outside the source tree against the installed package, so a file missing from the
# wheel or the sdist fails loudly.
#   tools/check_dist.sh           full suite against the installed wheel
#   tools/check_dist.sh --quick   a fast subset (codec, streams, seed classes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}

"$PY" -m pip install -q build
"$PY" -m build --sdist --outdir "$WORK/dist" . >/dev/null
SDIST=$(ls "$WORK"/dist/dquic-*.tar.gz)
echo "sdist: $(basename "$SDIST")"
# The wheel is built from the sdist, so anything the sdist lacks breaks the build here.
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$SDIST"
WHEEL=$(ls "$WORK"/dist/dquic-*.whl)
echo "wheel: $(basename "$WHEEL")"

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$WHEEL[test]"

mkdir "$WORK/run"
cp -r "$ROOT/tests" "$WORK/run/tests"
cd "$WORK/run"
# Refuse to pass if the package were imported from the source tree rather than the wheel.
"$WORK/venv/bin/python" - <<'PY'
import dquic, os, sys
where = os.path.dirname(dquic.__file__)
assert "site-packages" in where, f"dquic imported from {where}, not from the installed wheel"
print("installed dquic", dquic.__version__, "from", where)
PY
if [ "$QUICK" = 1 ]; then
  "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider --import-mode=importlib \
    tests/test_codec.py tests/test_seed_classes.py tests/test_ranges.py tests/test_streams.py
else
  "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider --import-mode=importlib tests
fi
