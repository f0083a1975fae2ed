"""Shared fixtures (the repository's own): no TARSGUARD_* variables from the environment; scripted servers."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # make the repository's ``tests.support`` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.fixtures import clean_env, serve  # noqa: E402

__all__ = ["clean_env", "serve"]
