"""Keys on the command line: the ``keygen`` and ``pubkey`` commands, key pair files and public keys
given as arguments."""
from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence, TextIO

from ._common import EXIT_OK, EXIT_USAGE, CommandFailed, _strerror


def run_keygen(args: argparse.Namespace, out: TextIO) -> int:
    """``keygen FILE``: write a fresh key pair (mode 0600) and print its public key."""
    from ..keys import KeyPair

    if os.path.exists(args.file) and not args.force:
        raise CommandFailed(f"{args.file} exists (use --force to replace it)", EXIT_USAGE)
    pair = KeyPair.generate()
    pair.save(args.file, overwrite=args.force)
    out.write(pair.public_b64 + "\n")
    return EXIT_OK


def _load_keypair(path: str):
    from ..keys import KeyPair

    try:
        return KeyPair.load(path)
    except FileNotFoundError:
        raise CommandFailed(f"cannot read key file {path}: no such file (create one with "
                            f"'dquic keygen {path}')", EXIT_USAGE) from None
    except OSError as exc:
        raise CommandFailed(f"cannot read key file {path}: {_strerror(exc)}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CommandFailed(f"{path} is not a dquic key file ({exc}; 'dquic keygen' writes "
                            "one)", EXIT_USAGE) from None


def run_pubkey(args: argparse.Namespace, out: TextIO) -> int:
    """``pubkey FILE``: print the public key (base64) of a key pair file."""
    out.write(_load_keypair(args.file).public_b64 + "\n")
    return EXIT_OK


def _parse_keys(values: Optional[Sequence[str]]) -> Optional[List[bytes]]:
    """Public keys given on the command line: base64/hex text, or a file holding one (a key pair
    file yields its public key)."""
    from ..keys import KeyPair, load_public

    if not values:
        return None
    keys = []
    for v in values:
        if os.path.isfile(v):
            try:
                keys.append(KeyPair.load(v).public)
                continue
            except ValueError:
                pass
            try:
                with open(v, "r", encoding="ascii") as f:
                    v = f.read(4096)
            except OSError as exc:
                raise CommandFailed(f"cannot read public key file {v}: {_strerror(exc)}",
                                    EXIT_USAGE) from None
            except UnicodeDecodeError:
                raise CommandFailed(f"{v} is not a key file", EXIT_USAGE) from None
        try:
            keys.append(load_public(v))
        except (TypeError, ValueError) as exc:
            raise CommandFailed(f"bad public key {v.strip()!r}: {exc} (a public key is what "
                                "'dquic keygen' or 'dquic pubkey' prints, or a key file)",
                                EXIT_USAGE) from None
    return keys

