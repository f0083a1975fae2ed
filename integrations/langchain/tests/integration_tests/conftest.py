"""The real-server tier: the session's vLLM server serving the SmolLM2 stand-in, under two names.

The stand-in (see the repository's ``tests/support/standin.py``) is a tiny general chat model that exercises
real code paths (HTTP, SSE streaming, usage, model override); it is NOT a safety model, so these tests never
assert which decision it "makes", only that decisions are read and reported consistently.

Every test here gets the ``realserver`` marker, so ``-m "not realserver"`` leaves the tier out.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[4]
if str(REPO_ROOT) not in sys.path:  # make the repository's ``tests.support`` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.fixtures import require_vllm  # noqa: E402
from tests.support.vllm_server import session_server  # noqa: E402

HERE = Path(__file__).resolve().parent
LOG_DIR = REPO_ROOT / ".cache" / "realserver-logs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.realserver)


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of the session's vLLM server (shared with the repository's own real-server
    tier when both run in one session), serving the stand-in under two names."""
    require_vllm()
    with session_server(LOG_DIR) as server:
        yield server.base_url
