"""dquic uses only public interfaces of CPython and of the cryptography package: a private
module may change in any release and silently move users to another path (or break them)."""
from __future__ import annotations

import re
from pathlib import Path

import dquic

PACKAGE = Path(dquic.__file__).resolve().parent
PRIVATE = [
    re.compile(r"^\s*(from|import)\s+_(hashlib|ssl|socket|ctypes|thread|asyncio|struct)\b", re.M),
    re.compile(r"cryptography\.hazmat\.bindings"),
    re.compile(r"^\s*from\s+cryptography[\w.]*\s+import\s+_", re.M),
]


def test_no_private_module_is_imported():
    offenders = []
    sources = [p for ext in ("*.py", "*.pyx", "*.pxd") for p in PACKAGE.rglob(ext)]
    assert len(sources) > 10
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in PRIVATE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {match.group(0).strip()}")
    assert not offenders, offenders
