#!/usr/bin/env python3
"""Check an installed dquic wheel: compiled, on the libcrypto fast path, with its own libcrypto.

    python tools/check_installed_wheel.py [--pinned | --openssl-version PREFIX] [--allow-no-openssl]

Run from outside the source tree against the installed wheel (tools/check_dist.sh and
cibuildwheel's test step do). Fails unless:

* ``dquic`` comes from site-packages and its modules are compiled extensions;
* ``dquic.build_info()`` reports the ``openssl`` backend, a libcrypto whose version string
  starts with ``OpenSSL 3.`` (or PREFIX; with ``--pinned``, the release pinned in
  tools/build_openssl.py beside this script, e.g. ``OpenSSL 3.5.9 ``), loaded from a file
  inside the installation (``openssl_vendored``: the copy the repair tool put there);
* on Linux, that file really is mapped into the process (``/proc/self/maps``) and the
  extension's own libcrypto references resolve to it (the dynamic linker's view, from
  ``LD_DEBUG=bindings`` in a child process, where the C library supports it);
* a packet sealed and opened with the libcrypto backend round-trips, and matches the
  ``cryptography`` backend's bytes.

``--allow-no-openssl`` accepts a fallback build (``DQUIC_NO_OPENSSL=1``) instead, and checks
that it really has no libcrypto of its own.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys


def fail(msg: str) -> None:
    sys.exit(f"check_installed_wheel: FAILED: {msg}")


def linker_bindings(module_file: str, library: str) -> str:
    """Where the dynamic linker bound the extension's EVP_ symbols: "ok", "unsupported", or why not."""
    code = "import dquic._protection"
    env = dict(os.environ, LD_DEBUG="bindings")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    out = r.stderr
    ext = os.path.basename(module_file)
    lines = [ln for ln in out.splitlines() if "binding file" in ln and ext in ln.split(" to ")[0]
             and "`EVP_" in ln]
    if not lines:
        return "unsupported"
    lib = os.path.basename(library)
    wrong = [ln.strip() for ln in lines if lib not in ln.split(" to ")[1]]
    if wrong:
        return "EVP_ symbols bound elsewhere: " + "; ".join(wrong[:3])
    return "ok"


def pinned_version() -> str:
    """VERSION of tools/build_openssl.py (read, not imported: it is a build script)."""
    import ast

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build_openssl.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["VERSION"]:
            return node.value.value
    fail(f"no VERSION in {path}")
    raise AssertionError  # unreachable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--openssl-version", default="OpenSSL 3.", help="required start of the libcrypto version string")
    ap.add_argument("--pinned", action="store_true",
                    help="require the OpenSSL release pinned in tools/build_openssl.py (the release wheels')")
    ap.add_argument("--allow-no-openssl", action="store_true", help="the wheel is a deliberate fallback build")
    args = ap.parse_args()
    if args.pinned:
        args.openssl_version = f"OpenSSL {pinned_version()} "

    here = os.path.realpath(os.getcwd())
    import dquic
    import dquic._codec
    import dquic._protection as protection

    where = os.path.dirname(os.path.realpath(dquic.__file__))
    if "site-packages" not in where.replace("\\", "/").split("/") and "dist-packages" not in where:
        fail(f"dquic imported from {where}, not from an installed wheel")
    if where.startswith(here + os.sep):
        fail(f"dquic imported from the current directory ({where})")
    for mod in (dquic._codec, protection):
        if not mod.__file__.endswith((".so", ".pyd")):
            fail(f"{mod.__name__} is not compiled: {mod.__file__}")
    info = dquic.build_info()
    print("  build_info: " + ", ".join(f"{k}={v}" for k, v in info.items()))

    if args.allow_no_openssl:
        if info["backends"] != ["cryptography"] or info["openssl_library"] is not None:
            fail("expected a cryptography-only build, but it links libcrypto")
        print("  cryptography-only build, as asked")
        return

    if info["backend"] != "openssl":
        fail(f"packet protection uses {info['backend']!r}, not libcrypto (backends {info['backends']})")
    if not (info["openssl_version"] or "").startswith(args.openssl_version):
        fail(f"libcrypto is {info['openssl_version']!r}, expected {args.openssl_version!r}...")
    library = info["openssl_library"]
    if not library or not os.path.exists(library):
        fail(f"the libcrypto file is unknown or missing: {library!r}")
    if not info["openssl_vendored"]:
        fail(f"libcrypto comes from {library}, not from the wheel")

    if sys.platform.startswith("linux"):
        real = os.path.realpath(library)
        with open("/proc/self/maps") as f:
            mapped = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
        if real not in {os.path.realpath(m) for m in mapped if m.startswith("/")}:
            fail(f"{real} is not mapped into this process")
        crypto_maps = sorted(m for m in mapped if "libcrypto" in os.path.basename(m))
        print(f"  libcrypto files mapped: {crypto_maps}")
        verdict = linker_bindings(protection.__file__, library)
        if verdict == "unsupported":
            print("  (the C library does not report symbol bindings: LD_DEBUG=bindings check skipped)")
        elif verdict != "ok":
            fail(verdict)
        else:
            print(f"  the dynamic linker bound {os.path.basename(protection.__file__)}'s EVP_ calls "
                  f"to {os.path.basename(library)}")

    from dquic._protection import OneRttKeys

    header = b"\x41" + b"D" * 8 + b"\x00\x07"
    payload = bytes(range(256)) * 4
    out = {}
    for backend in ("openssl", "cryptography"):
        a = OneRttKeys(bytes(range(32)), bytes(range(1, 33)), "AESGCM", backend=backend)
        b = OneRttKeys(bytes(range(1, 33)), bytes(range(32)), "AESGCM", backend=backend)
        packet = a.sender.encrypt_packet(header, payload, 7)
        if b.receiver.decrypt_packet(packet, 9, 7)[1] != payload:
            fail(f"a packet sealed with the {backend} backend does not open")
        out[backend] = packet
    if out["openssl"] != out["cryptography"]:
        fail("the two backends produce different packets")
    print(f"  libcrypto backend active: {info['openssl_version']} from {library}")


if __name__ == "__main__":
    main()
