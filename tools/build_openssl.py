#!/usr/bin/env python3
"""Build the OpenSSL that release wheels link and carry: a pinned 3.x release, checksum-verified.

The release workflow runs this once per build machine/container (cibuildwheel's ``before-all``,
pyproject.toml) with ``DQUIC_OPENSSL_DIR`` set; the wheels are then built against that prefix
(setup.py uses ``DQUIC_OPENSSL_DIR`` alone when it is set, ``DQUIC_REQUIRE_OPENSSL=1`` fails a
build without it) and the repair step (tools/repair_wheel.py) copies its libcrypto into each
wheel. Only libcrypto and libssl are built (no programs, tests, docs, engines or modules).

    python tools/build_openssl.py [--prefix DIR] [--jobs N] [--source TARBALL]
    python tools/build_openssl.py --print-version

``--prefix`` defaults to ``$DQUIC_OPENSSL_DIR``. Per platform:

* Linux (manylinux2014, musllinux_1_2 containers; any glibc or musl system): ``linux-x86_64`` /
  ``linux-aarch64`` with the container's compiler; the core Perl modules OpenSSL's Configure
  needs (RHEL-family images split them out of ``perl``) are installed with yum/dnf/apk when
  missing;
* macOS: ``darwin64-x86_64-cc`` / ``darwin64-arm64-cc`` for the machine's architecture, with
  ``-mmacosx-version-min=$MACOSX_DEPLOYMENT_TARGET`` (the wheel's minimum macOS; delocate refuses
  a library that needs a newer one);
* Windows: ``VC-WIN64A`` with nmake, in a Visual Studio developer environment with NASM and a
  Windows Perl (Strawberry Perl) on PATH, as the release workflow sets up.

A new OpenSSL release gets in by changing VERSION and SHA256 below (README, "Releasing").
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

#: The OpenSSL release the wheels carry (3.5: a long-term-support series) and the SHA-256 of
#: its source tarball as published beside it (openssl-VERSION.tar.gz.sha256).
VERSION = "3.5.9"
SHA256 = "603f5602e2eef00d77fbd429d34dcd5822bb301757a1bc9cdb24c670f1eb859a"
URL = f"https://github.com/openssl/openssl/releases/download/openssl-{VERSION}/openssl-{VERSION}.tar.gz"

OPTIONS = ["shared", "no-tests", "no-docs", "no-apps", "no-legacy", "no-module", "no-engine", "no-comp"]


def log(msg: str) -> None:
    print(f"build_openssl: {msg}", flush=True)


def run(cmd, cwd=None, env=None) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(dest: str, source) -> str:
    path = os.path.join(dest, f"openssl-{VERSION}.tar.gz")
    if source:
        shutil.copyfile(source, path)
    else:
        for attempt in range(1, 4):
            log(f"downloading {URL}")
            try:
                with urllib.request.urlopen(URL, timeout=120) as r, open(path, "wb") as f:
                    shutil.copyfileobj(r, f)
                break
            except OSError as exc:
                if attempt == 3:
                    sys.exit(f"build_openssl: cannot download {URL}: {exc} (--source takes a local copy)")
                log(f"download failed ({exc}), retrying")
                time.sleep(5 * attempt)
    got = sha256(path)
    if got != SHA256:
        sys.exit(f"build_openssl: SHA-256 mismatch for openssl-{VERSION}.tar.gz: {got}, expected {SHA256}")
    log(f"openssl-{VERSION}.tar.gz: SHA-256 verified")
    return path


PERL_MODULES = ["IPC::Cmd", "FindBin", "File::Compare", "File::Copy", "Time::Local"]


def perl_ready(perl: str) -> bool:
    return subprocess.run([perl, *(f"-M{m}" for m in PERL_MODULES), "-e", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def linux_prerequisites() -> None:
    """Perl with the core modules Configure uses, and make."""
    if shutil.which("perl") and perl_ready("perl") and shutil.which("make"):
        return
    if shutil.which("apk"):
        run(["apk", "add", "--no-cache", "perl", "make", "linux-headers"])
    elif shutil.which("dnf"):
        run(["dnf", "install", "-y", "perl-core", "make"])
    elif shutil.which("yum"):
        run(["yum", "install", "-y", "perl-core", "make"])
    if not (shutil.which("perl") and perl_ready("perl")):
        sys.exit(f"build_openssl: needs Perl 5 with {', '.join(PERL_MODULES)}")


def windows_perl() -> str:
    # Configure needs a native Windows Perl; Git for Windows' MSYS perl produces broken makefiles
    for candidate in (r"C:\Strawberry\perl\bin\perl.exe", shutil.which("perl")):
        if candidate and os.path.exists(candidate) and "Git" not in candidate:
            return candidate
    sys.exit("build_openssl: needs a Windows Perl (Strawberry Perl) for a VC build")


def configure_args(prefix: str):
    """(perl, Configure target, extra flags, make command) for this machine."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        linux_prerequisites()
        target = {"x86_64": "linux-x86_64", "amd64": "linux-x86_64", "aarch64": "linux-aarch64",
                  "arm64": "linux-aarch64"}.get(machine)
        if target is None:
            sys.exit(f"build_openssl: no OpenSSL target chosen for Linux on {machine}")
        return "perl", target, [], ["make"]
    if sys.platform == "darwin":
        arch = os.environ.get("DQUIC_OPENSSL_ARCH") or machine
        target = {"x86_64": "darwin64-x86_64-cc", "arm64": "darwin64-arm64-cc"}.get(arch)
        if target is None:
            sys.exit(f"build_openssl: no OpenSSL target chosen for macOS on {arch}")
        minimum = os.environ.get("MACOSX_DEPLOYMENT_TARGET") or ("11.0" if arch == "arm64" else "10.13")
        return "perl", target, [f"-mmacosx-version-min={minimum}"], ["make"]
    if sys.platform == "win32":
        if machine not in ("amd64", "x86_64"):
            sys.exit(f"build_openssl: no OpenSSL target chosen for Windows on {machine}")
        for tool in ("cl", "nmake", "nasm"):
            if not shutil.which(tool):
                sys.exit(f"build_openssl: {tool} not on PATH (a Visual Studio developer "
                         "environment with NASM is needed)")
        return windows_perl(), "VC-WIN64A", [], ["nmake"]
    sys.exit(f"build_openssl: unsupported platform {sys.platform}")


def library_files(prefix: str):
    if sys.platform == "win32":
        return [os.path.join(prefix, "bin", "libcrypto-3-x64.dll"), os.path.join(prefix, "lib", "libcrypto.lib")]
    if sys.platform == "darwin":
        return [os.path.join(prefix, "lib", "libcrypto.3.dylib")]
    return [os.path.join(prefix, "lib", "libcrypto.so.3")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default=os.environ.get("DQUIC_OPENSSL_DIR"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--source", help="a local copy of the tarball (still checksum-verified)")
    ap.add_argument("--print-version", action="store_true", help="print the pinned version and exit")
    args = ap.parse_args()
    if args.print_version:
        print(VERSION)
        return
    if not args.prefix:
        sys.exit("build_openssl: give --prefix or set DQUIC_OPENSSL_DIR")
    prefix = os.path.abspath(args.prefix)
    stamp = os.path.join(prefix, "dquic-openssl-version.txt")
    if os.path.exists(stamp) and open(stamp).read().strip() == f"{VERSION} {SHA256}" \
            and all(os.path.exists(f) for f in library_files(prefix)):
        log(f"OpenSSL {VERSION} already built in {prefix}")
        return
    perl, target, flags, make = configure_args(prefix)
    with tempfile.TemporaryDirectory() as work:
        tarball = fetch(work, args.source)
        with tarfile.open(tarball) as tf:
            # the archive is checksum-verified: extract it as it is (the filter argument only
            # silences the warning of Pythons that have it)
            tf.extractall(work, **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))
        src = os.path.join(work, f"openssl-{VERSION}")
        run([perl, "Configure", target, *OPTIONS, f"--prefix={prefix}",
             f"--openssldir={os.path.join(prefix, 'ssl')}", "--libdir=lib", *flags], cwd=src)
        jobs = [] if make == ["nmake"] else [f"-j{args.jobs}"]
        run([*make, *jobs, "build_libs"], cwd=src)
        run([*make, "install_dev"], cwd=src)
        shutil.copyfile(os.path.join(src, "LICENSE.txt"), os.path.join(prefix, "LICENSE.txt"))
    missing = [f for f in library_files(prefix) if not os.path.exists(f)]
    if missing:
        sys.exit(f"build_openssl: the build did not produce {missing}")
    with open(stamp, "w") as f:
        f.write(f"{VERSION} {SHA256}\n")
    log(f"OpenSSL {VERSION} ({target}) installed in {prefix}")


if __name__ == "__main__":
    main()
