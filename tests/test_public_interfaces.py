"""dquic uses only public interfaces of CPython and of the cryptography package: a private
module may change in any release and silently move users to another path (or break them).

Every source file of the installed package is checked (``.py`` through its syntax tree,
``.pyx``/``.pxd`` line by line): no import of a module with a private component (``_hashlib``,
``_ssl``, ``cryptography.hazmat.bindings._rust``, ...) nor of ``cryptography.hazmat.bindings``
(the package's private OpenSSL binding) or ``cryptography.hazmat.backends.openssl``, however it
is written (``import``, ``from ... import``, ``cimport``, ``importlib.import_module``,
``__import__``); no private name taken from another package (``from hmac import _x``,
``hashlib._hashlib``); no private C API of CPython (``_Py*``) in the compiled modules. The
checker itself is tested on examples of each form, so a form it stops seeing fails here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterable, List

import pytest

import dquic

PACKAGE = Path(dquic.__file__).resolve().parent
OWN = {"dquic", "DQUIC"}
# modules that are private in spirit although no component starts with "_"
PRIVATE_MODULES = ("cryptography.hazmat.bindings", "cryptography.hazmat.backends.openssl")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_module(dotted: str) -> bool:
    """True for a module path outside dquic that is private (a ``_x`` component, or listed)."""
    parts = dotted.split(".")
    if not parts[0] or parts[0] in OWN:
        return False
    if any(_private(p) for p in parts):
        return True
    return any(dotted == m or dotted.startswith(m + ".") for m in PRIVATE_MODULES)


_IMPORTERS = {"import_module", "__import__"}


def check_python(text: str) -> List[str]:
    """Private interfaces that Python source ``text`` reaches: ``["line: what", ...]``."""
    found = []
    tree = ast.parse(text)
    aliases = {}  # local name -> module path, for imports of other packages
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if private_module(a.name):
                    found.append(f"{node.lineno}: import {a.name}")
                if a.name.split(".")[0] not in OWN:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in OWN:
                continue
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if private_module(node.module) or private_module(full) or _private(a.name):
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
                aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in _IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and private_module(node.args[0].value):
                found.append(f"{node.lineno}: {name}({node.args[0].value!r})")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        # attribute chains rooted at another package's module: hashlib._hashlib, cryptography.hazmat.bindings
        # (each chain once, from its outermost attribute)
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = []
            cur = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases:
                dotted = ".".join([aliases[cur.id]] + chain[::-1])
                if private_module(dotted):
                    found.append(f"{node.lineno}: {cur.id}.{'.'.join(chain[::-1])}")
    return sorted(set(found), key=lambda f: int(f.split(":")[0]))


_CY_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+(.+)|c?import\s+(.+))$")
_CY_DYNAMIC = re.compile(r"\b(?:import_module|__import__)\(\s*[\"']([\w.]+)[\"']")
_CY_PRIVATE_C_API = re.compile(r"\b_Py[A-Z]\w*")


def _cython_lines(text: str) -> Iterable:
    """(line number, logical line without comments), parenthesised imports joined."""
    pending, start = "", 0
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith(('"', "'")) else raw
        if pending:
            pending += " " + line.strip()
            if ")" in line:
                yield start, pending.replace("(", "").replace(")", "")
                pending = ""
            continue
        if _CY_IMPORT.match(line) and "(" in line and ")" not in line:
            pending, start = line, i
            continue
        yield i, line


def check_cython(text: str) -> List[str]:
    """Private interfaces that Cython source ``text`` (.pyx, .pxd) reaches."""
    found, aliases = [], {}
    for no, line in _cython_lines(text):
        m = _CY_IMPORT.match(line)
        if m:
            module, names, plain = m.groups()
            if module:
                if module.startswith(".") or module.split(".")[0] in OWN:  # relative: our own
                    continue
                for item in names.split(","):
                    name, _, alias = item.strip().partition(" as ")
                    name = name.strip()
                    if not name:
                        continue
                    if private_module(module) or private_module(f"{module}.{name}") or _private(name):
                        found.append(f"{no}: from {module} import {name}")
                    aliases[alias.strip() or name] = f"{module}.{name}"
            else:
                for item in plain.split(","):
                    name, _, alias = item.strip().partition(" as ")
                    name = name.strip()
                    if private_module(name):
                        found.append(f"{no}: import {name}")
                    if name and name.split(".")[0] not in OWN:
                        aliases[alias.strip() or name.split(".")[0]] = name if alias.strip() else name.split(".")[0]
            continue
        for dyn in _CY_DYNAMIC.findall(line):
            if private_module(dyn):
                found.append(f"{no}: import_module({dyn!r})")
        for api in _CY_PRIVATE_C_API.findall(line):
            found.append(f"{no}: private C API {api}")
        for alias, module in aliases.items():
            for chain in re.findall(rf"(?<![\w.]){re.escape(alias)}((?:\.\w+)+)", line):
                if private_module(module + chain):
                    found.append(f"{no}: {alias}{chain}")
    return found


def sources():
    files = [p for ext in ("*.py", "*.pyx", "*.pxd") for p in PACKAGE.rglob(ext)]
    return sorted(files)


def test_the_package_sources_are_all_checked():
    files = {p.name for p in sources()}
    assert len(files) > 10
    # the modules that reach libcrypto and the handshake primitives
    assert {"_noise.py", "handshake.py", "keys.py", "_protection.pyx", "_protection.pxd"} <= files


def test_no_private_interface_is_used():
    offenders = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        check = check_python if path.suffix == ".py" else check_cython
        offenders += [f"{path.relative_to(PACKAGE)}:{hit}" for hit in check(text)]
    assert not offenders, offenders


# The checker sees every form (the handshake once imported _hashlib.hmac_new and
# cryptography.hazmat.bindings._rust.openssl, inside try blocks).
PRIVATE_USES = [
    "import _hashlib",
    "import _ssl as s",
    "from _hashlib import hmac_new",
    "try:\n    from _hashlib import hmac_new as _h\nexcept ImportError:\n    pass",
    "from cryptography.hazmat.bindings._rust import openssl as rust",
    "from cryptography.hazmat.bindings import _rust",
    "from cryptography.hazmat import bindings",
    "import cryptography.hazmat.bindings._rust",
    "from cryptography.hazmat.backends.openssl import backend",
    "from cryptography.hazmat.primitives import _serialization",
    "from hmac import _hashopenssl",
    "import hashlib\nf = hashlib._hashlib.hmac_new",
    "import cryptography\nx = cryptography.hazmat.bindings._rust",
    "import importlib\nm = importlib.import_module('_hashlib')",
    "m = __import__('cryptography.hazmat.bindings._rust')",
]
PUBLIC_USES = [
    "import hashlib\nimport hmac\nd = hmac.digest(b'k', b'm', 'sha256')",
    "from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey",
    "from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305",
    "from dquic._protection import OneRttKeys\nimport dquic._codec",
    "from . import _protection",
    "import hashlib\nh = hashlib.sha256().__class__",
    "def f(self):\n    return self._openssl",
]


@pytest.mark.parametrize("source", PRIVATE_USES)
def test_checker_flags_private_use_in_python(source):
    assert check_python(source), source


@pytest.mark.parametrize("source", PRIVATE_USES)
def test_checker_flags_private_use_in_cython(source):
    assert check_cython(source), source


@pytest.mark.parametrize("source", PUBLIC_USES)
def test_checker_accepts_public_use(source):
    assert check_python(source) == [], source
    assert check_cython(source) == [], source


@pytest.mark.parametrize("source", [
    "from cpython.bytes cimport _PyBytes_Resize",
    'cdef extern from "Python.h":\n    int _PyBytes_Resize(object*, Py_ssize_t)',
    "from libc.string cimport memcpy\nfrom cryptography.hazmat.bindings._rust cimport x",
    "from _hashlib cimport (hmac_new,\n    compare_digest)",
])
def test_checker_flags_private_use_only_cython_can_write(source):
    assert check_cython(source), source


def test_checker_accepts_public_cython():
    ok = ("from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release\n"
          "from dquic._wire cimport (be_read,\n    be_write)\n"
          "cdef bint _openssl  # a private attribute of our own\n"
          "from libc.stdint cimport uint64_t\n")
    assert check_cython(ok) == []
