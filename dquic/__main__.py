"""``python -m dquic``: the dquic command line (see ``dquic.cli``)."""
from __future__ import annotations

import sys
from typing import List, Optional

from .cli import main as _cli_main

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    The ``dquic`` console script calls this and exits with its result.
    """
    return _cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
