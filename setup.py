"""Build script for dquic's compiled modules.

Every ``dquic/*.pyx`` is an extension module. Set ``DQUIC_ONLY=dquic._codec,dquic._ranges``
to build just those (handy while another module is being edited), ``DQUIC_TRACE=1`` to build
with Cython line tracing for profiling/coverage, and ``DQUIC_DEBUG=1`` for -O0 -g.
"""
import glob
import os
import sys

from setuptools import Extension, setup


def extensions():
    from Cython.Build import cythonize

    only = {m for m in os.environ.get("DQUIC_ONLY", "").split(",") if m}
    trace = os.environ.get("DQUIC_TRACE") == "1"
    debug = os.environ.get("DQUIC_DEBUG") == "1"
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    if sys.platform == "win32":
        cflags = ["/Od", "/Zi"] if debug else ["/O2"]
    else:
        cflags = ["-O0", "-g"] if debug else ["-O3"]
    exts = []
    for path in sorted(glob.glob(os.path.join("dquic", "*.pyx"))):
        name = path[:-4].replace(os.sep, ".")
        if only and name not in only:
            continue
        exts.append(Extension(name, [path], define_macros=macros, extra_compile_args=cflags))
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "binding": False,
        "linetrace": trace,
    }
    return cythonize(exts, compiler_directives=directives, quiet=True)


setup(ext_modules=extensions())
