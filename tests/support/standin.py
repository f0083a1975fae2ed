"""The SmolLM2-135M stand-in for the test-suite; the code lives in :mod:`tarsguard._standin` (``tarsguard demo``
uses it too).

The stand-in is NOT a safety model: a tiny general chat model with no safety training, used only to exercise
real code paths. Nothing it outputs is evidence about the safety behaviour of TARS or of tarsguard's verdicts.

Usage::

    python -m tests.support.standin [DEST]     # default DEST: <repo>/.cache/standin-smollm2
"""

from __future__ import annotations

import sys
from pathlib import Path

from tarsguard._standin import (
    _CHATML_TEMPLATE,
    GGUF_NAME,
    MARKER_NAME,
    SERVED_NAME,
    WHEEL_REQUIREMENT,
    build_standin,
    find_gguf,
    is_built,
)
from tarsguard._standin import main as _main

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".cache" / "standin-smollm2"

__all__ = [
    "DEFAULT_DEST",
    "GGUF_NAME",
    "MARKER_NAME",
    "REPO_ROOT",
    "SERVED_NAME",
    "WHEEL_REQUIREMENT",
    "_CHATML_TEMPLATE",
    "build_standin",
    "find_gguf",
    "is_built",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """Build the stand-in into DEST (default ``<repo>/.cache/standin-smollm2``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(not a.startswith("-") for a in args):
        args.append(str(DEFAULT_DEST))
    return _main(args)


if __name__ == "__main__":
    sys.exit(main())
