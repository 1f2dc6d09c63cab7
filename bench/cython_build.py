"""Compile bench/'s Cython modules (``codec_fast.pyx``) on first use, against the dquic measured.

They are benchmark support, not part of dquic: nothing builds or ships them with the package.
``import_pyx("codec_fast")`` builds ``bench/codec_fast.pyx`` the way ``setup.py`` builds dquic's
own modules (same Cython directives, -O3) into ``build/bench/<key>/`` of the checkout and imports
it. The key covers the .pyx, every .pxd of the dquic being imported (the module cimports its C
API), that dquic's location and the Python and Cython versions, so an edit of any of them builds
anew; an unchanged tree reuses the build. Needs Cython, setuptools and a C compiler (the "test"
extra brings the first two).
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(BENCH), "build", "bench")

_SETUP = """
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup

name, source, include = sys.argv[1:4]
cflags = ["/O2"] if sys.platform == "win32" else ["-O3"]
directives = {"language_level": "3", "embedsignature": True, "binding": False}
setup(script_args=["build_ext", "--inplace", "-q"],
      ext_modules=cythonize([Extension(name, [source], extra_compile_args=cflags)],
                            include_path=[include], compiler_directives=directives, quiet=True))
"""


def _build_key(source: str, include: str) -> str:
    import Cython

    h = hashlib.sha256()
    for path in [source] + sorted(glob.glob(os.path.join(include, "dquic", "*.pxd"))):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(f"{include}\0{sys.version}\0{Cython.__version__}".encode())
    return h.hexdigest()[:16]


def import_pyx(name: str):
    """Import bench/<name>.pyx as the top-level module ``name``, compiling it if needed."""
    if name in sys.modules:
        return sys.modules[name]
    import dquic

    source = os.path.join(BENCH, name + ".pyx")
    include = os.path.dirname(os.path.dirname(os.path.abspath(dquic.__file__)))
    target = os.path.join(CACHE, f"{name}-{_build_key(source, include)}")
    if not os.path.isdir(target):
        os.makedirs(CACHE, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE)
        os.chmod(work, 0o755)
        try:
            shutil.copy(source, work)
            proc = subprocess.run([sys.executable, "-c", _SETUP, name, name + ".pyx", include], cwd=work,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise ImportError(f"building bench/{name}.pyx failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            for leftover in glob.glob(os.path.join(work, "build")):
                shutil.rmtree(leftover)
            try:
                os.rename(work, target)
            except OSError:  # built meanwhile by another process: use that one
                if not os.path.isdir(target):
                    raise
        finally:
            if os.path.isdir(work):
                shutil.rmtree(work)
    sys.path.insert(0, target)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(target)
