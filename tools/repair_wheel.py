#!/usr/bin/env python3
"""Repair a built wheel so that it carries its libcrypto, and refuse one that does not.

    python tools/repair_wheel.py WHEEL DEST_DIR [--archs x86_64|arm64] [--allow-no-openssl]

Runs the platform's repair tool (cibuildwheel's repair step calls this; so does
tools/check_dist.sh on Linux):

* Linux: ``auditwheel repair`` (copies libcrypto into ``dquic.libs/`` under a unique name,
  points the extension's RPATH at it, tags the wheel manylinux/musllinux);
* macOS: ``delocate-wheel --require-archs ARCHS`` (into ``dquic/.dylibs/``);
* Windows: ``delvewheel repair`` (into ``dquic.libs/``), with ``$DQUIC_OPENSSL_DIR/bin`` added
  to the DLL search path.

Then it checks the repaired wheel: a libcrypto must be inside it (unless
``--allow-no-openssl``: a deliberate fallback build), and the OpenSSL licence is added next
to it (``dquic.libs/`` or ``dquic/.dylibs/``, as ``LICENSE-OpenSSL.txt``, from
``$DQUIC_OPENSSL_DIR/LICENSE.txt`` written by tools/build_openssl.py) with the wheel's RECORD
updated. ``DQUIC_OPENSSL_DIR`` also tells auditwheel where the library lives when the
extension's RPATH does not.
"""
from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

LIBCRYPTO = re.compile(r"(^|/)(lib)?crypto[-.\w]*\.(so(\.\d+)*|dylib|dll)$", re.I)


def log(msg: str) -> None:
    print(f"repair_wheel: {msg}", flush=True)


def run(cmd, env=None) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def repair(wheel: str, dest: str, archs) -> str:
    openssl_dir = os.environ.get("DQUIC_OPENSSL_DIR")
    env = dict(os.environ)
    before = set(glob.glob(os.path.join(dest, "*.whl")))
    if sys.platform.startswith("linux"):
        if openssl_dir:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (os.path.join(openssl_dir, "lib"), env.get("LD_LIBRARY_PATH")) if p)
        run([tool("auditwheel"), "repair", "-w", dest, wheel], env=env)
    elif sys.platform == "darwin":
        cmd = [tool("delocate-wheel"), "-w", dest, "-v", wheel]
        if archs:
            cmd[1:1] = ["--require-archs", archs]
        run(cmd, env=env)
    elif sys.platform == "win32":
        cmd = [tool("delvewheel"), "repair", "-w", dest, "-v", wheel]
        if openssl_dir:
            cmd[2:2] = ["--add-path", os.path.join(openssl_dir, "bin")]
        run(cmd, env=env)
    else:
        sys.exit(f"repair_wheel: no repair tool for {sys.platform}")
    made = sorted(set(glob.glob(os.path.join(dest, "*.whl"))) - before)
    if len(made) != 1:
        sys.exit(f"repair_wheel: expected one repaired wheel in {dest}, found {made}")
    return made[0]


def tool(name: str) -> str:
    """The repair tool beside this interpreter (a venv's bin/ or Scripts/), else on PATH."""
    here = os.path.dirname(sys.executable)
    for candidate in (os.path.join(here, name), os.path.join(here, name + ".exe")):
        if os.path.exists(candidate):
            return candidate
    found = shutil.which(name)
    if not found:
        sys.exit(f"repair_wheel: {name} not found (pip install it)")
    return found


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def add_file(wheel: str, arcname: str, data: bytes) -> None:
    """Add ``arcname`` to the wheel, with its line in RECORD."""
    with zipfile.ZipFile(wheel) as zf:
        items = [(info, zf.read(info)) for info in zf.infolist()]
    record_name = next(i.filename for i, _ in items if i.filename.endswith(".dist-info/RECORD"))
    fd, tmp = tempfile.mkstemp(suffix=".whl", dir=os.path.dirname(wheel))
    os.close(fd)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info, content in items:
            if info.filename == arcname:
                continue
            if info.filename == record_name:
                lines = [ln for ln in content.decode().splitlines() if ln and not ln.startswith(arcname + ",")]
                lines.insert(len(lines) - 1, f"{arcname},{_record_hash(data)},{len(data)}")
                content = ("\n".join(lines) + "\n").encode()
                # RECORD stays last
                pending = (info, content)
                continue
            out.writestr(info, content)
        out.writestr(arcname, data)
        out.writestr(*pending)
    os.replace(tmp, wheel)


def check(wheel: str, allow_none: bool) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    vendored = [n for n in names if LIBCRYPTO.search(n) and ("dquic.libs/" in n or "/.dylibs/" in n)]
    if not vendored:
        if allow_none:
            log(f"{os.path.basename(wheel)}: no libcrypto inside (a fallback build, as asked)")
            return
        sys.exit(f"repair_wheel: {os.path.basename(wheel)} carries no libcrypto: refusing it "
                 "(built without DQUIC_OPENSSL_DIR / DQUIC_REQUIRE_OPENSSL?)")
    for n in vendored:
        log(f"vendored: {n}")
    licence_src = os.path.join(os.environ.get("DQUIC_OPENSSL_DIR") or "", "LICENSE.txt")
    if os.environ.get("DQUIC_OPENSSL_DIR") and os.path.exists(licence_src):
        arcname = os.path.dirname(vendored[0]) + "/LICENSE-OpenSSL.txt"
        with open(licence_src, "rb") as f:
            add_file(wheel, arcname, f.read())
        log(f"added {arcname}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel")
    ap.add_argument("dest_dir")
    ap.add_argument("--archs", help="macOS: the architectures delocate must find (cibuildwheel's {delocate_archs})")
    ap.add_argument("--allow-no-openssl", action="store_true",
                    help="accept a wheel without libcrypto (a deliberate cryptography-only build)")
    args = ap.parse_args()
    os.makedirs(args.dest_dir, exist_ok=True)
    repaired = repair(os.path.abspath(args.wheel), os.path.abspath(args.dest_dir), args.archs)
    check(repaired, args.allow_no_openssl)
    log(f"repaired: {repaired}")


if __name__ == "__main__":
    main()
