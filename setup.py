"""Build script for dquic's compiled modules.

Every ``dquic/*.pyx`` is an extension module; a ``.pxd`` without a ``.pyx`` (``dquic/_wire.pxd``,
inline functions only) builds nothing of its own and is compiled into every module that cimports
it (editing it rebuilds those). Set ``DQUIC_ONLY=dquic._codec,dquic._ranges``
to build just those (handy while another module is being edited), ``DQUIC_TRACE=1`` to build
with Cython line tracing for profiling/coverage, and ``DQUIC_DEBUG=1`` for -O0 -g.

``dquic._protection`` calls libcrypto directly when OpenSSL (>= 1.1.1) headers and library
are found: in ``DQUIC_OPENSSL_DIR`` (its ``include`` and ``lib``) when that is set, and only
there; otherwise through ``pkg-config libcrypto``, then the compiler's default paths. Without
them it uses the ``cryptography`` package only; ``DQUIC_NO_OPENSSL=1`` forces that, and
``DQUIC_REQUIRE_OPENSSL=1`` makes a build that would fall back fail instead (release wheels
and CI set it). Switching between the two in place needs ``build_ext --force`` (the generated
C file is the same, only the compiler flags differ, so an up-to-date build is not redone).
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup


# --- OpenSSL for dquic._protection -------------------------------------------------------------
_OPENSSL_PROBE = r"""
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error "OpenSSL 1.1.1 or newer needed"
#endif
int main(void) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = c != NULL && EVP_chacha20_poly1305() != NULL && EVP_aes_256_gcm() != NULL;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : 1;
}
"""


def _openssl_candidates():
    """(include_dirs, library_dirs, libraries) to try, most specific first."""
    lib = "libcrypto" if sys.platform == "win32" else "crypto"
    root = os.environ.get("DQUIC_OPENSSL_DIR")
    if root:
        # an explicit choice (release builds: the pinned OpenSSL built for the wheel): that one
        # or none, never a system libcrypto found instead
        yield [os.path.join(root, "include")], [os.path.join(root, "lib")], [lib]
        return
    if shutil.which("pkg-config"):
        try:
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libcrypto"], check=True,
                                   capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            flags = None
        if flags is not None:
            words = shlex.split(flags)
            yield ([w[2:] for w in words if w.startswith("-I")], [w[2:] for w in words if w.startswith("-L")],
                   [w[2:] for w in words if w.startswith("-l")] or [lib])
    yield [], [], [lib]
    for root in ("/opt/homebrew/opt/openssl@3", "/usr/local/opt/openssl@3"):
        if os.path.isdir(root):
            yield [os.path.join(root, "include")], [os.path.join(root, "lib")], [lib]


def _openssl_build_args():
    """Extension keyword arguments for linking dquic._protection with libcrypto, or None.

    Each candidate is proven by compiling and linking a small program, so a header without
    its library (or a too-old OpenSSL) falls back cleanly to the ``cryptography`` path.
    """
    required = os.environ.get("DQUIC_REQUIRE_OPENSSL") == "1"
    if os.environ.get("DQUIC_NO_OPENSSL") == "1":
        if required:
            raise SystemExit("dquic: DQUIC_NO_OPENSSL=1 and DQUIC_REQUIRE_OPENSSL=1 contradict each other")
        print("dquic: DQUIC_NO_OPENSSL=1, _protection uses the cryptography package only")
        return None
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    explicit = os.environ.get("DQUIC_OPENSSL_DIR")
    for include_dirs, library_dirs, libraries in _openssl_candidates():
        if explicit and not (os.path.exists(os.path.join(include_dirs[0], "openssl", "evp.h"))
                             and glob.glob(os.path.join(library_dirs[0], "*crypto*"))):
            # the probe below would also pass on the system's OpenSSL, found by default paths
            print(f"dquic: DQUIC_OPENSSL_DIR={explicit!r} holds no include/openssl/evp.h and lib/*crypto*")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(_OPENSSL_PROBE)
            cc = new_compiler()
            customize_compiler(cc)
            try:
                objs = cc.compile([src], output_dir=tmp, include_dirs=include_dirs)
                cc.link_executable(objs, os.path.join(tmp, "probe"), library_dirs=library_dirs,
                                   libraries=libraries)
            except Exception:  # no compiler, no header, no library: try the next, or fall back
                continue
        print(f"dquic: _protection links libcrypto (include {include_dirs or 'default'}, "
              f"libraries {libraries}, library dirs {library_dirs or 'default'})")
        args = {"include_dirs": include_dirs, "library_dirs": library_dirs, "libraries": list(libraries),
                "define_macros": [("DQUIC_HAVE_OPENSSL", "1")]}
        if library_dirs and sys.platform != "win32":
            # load the libcrypto linked against, not whichever the system has first (the
            # wheel repair tools follow this path too, then point it at the vendored copy)
            args["runtime_library_dirs"] = list(library_dirs)
        if sys.platform.startswith("linux"):
            args["libraries"].append("dl")  # dladdr (in libc itself from glibc 2.34 and in musl)
        return args
    if required:
        raise SystemExit("dquic: DQUIC_REQUIRE_OPENSSL=1 but no usable OpenSSL (>= 1.1.1) was found "
                         f"(DQUIC_OPENSSL_DIR={os.environ.get('DQUIC_OPENSSL_DIR', '')!r}): "
                         "refusing to build the cryptography-only fallback")
    print("dquic: no usable OpenSSL (>= 1.1.1) found, _protection uses the cryptography package only")
    return None


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
        kw = {"define_macros": list(macros)}
        if name == "dquic._protection":
            ssl = _openssl_build_args()
            if ssl:
                kw["define_macros"] += ssl.pop("define_macros")
                kw.update(ssl)
        exts.append(Extension(name, [path], extra_compile_args=cflags, **kw))
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "binding": False,
        "linetrace": trace,
    }
    return cythonize(exts, compiler_directives=directives, quiet=True)


setup(ext_modules=extensions())
