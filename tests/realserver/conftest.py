"""The ``realserver`` tier: one real vLLM server per test session, serving the SmolLM2 stand-in.

The stand-in (SmolLM2-135M-Instruct, see :mod:`tests.support.standin`) is a tiny general chat
model used to exercise real code paths (HTTP, SSE streaming, usage, error mapping, model
auto-detection). It is not a safety model: these tests never assert anything about which
decision it "makes", only that the decision is read and reported consistently.

Every test collected from this folder gets ``pytest.mark.realserver``, so the tier can be
selected with ``-m realserver`` or left out with ``-m "not realserver"``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # make ``tests.support`` importable however pytest was launched
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.fixtures import require_vllm  # noqa: E402
from tests.support.standin import DEFAULT_DEST, is_built  # noqa: E402
from tests.support.vllm_server import DEFAULT_MAX_MODEL_LEN, RealServer, session_server  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_MODEL_LEN = DEFAULT_MAX_MODEL_LEN
LOG_DIR = REPO_ROOT / ".cache" / "realserver-logs"

_timings: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.realserver)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings:
        return
    parts = [f"{name} {seconds:.1f}s" for name, seconds in _timings.items()]
    terminalreporter.write_line("realserver: " + ", ".join(parts))


@pytest.fixture(scope="session")
def vllm_real_server() -> Iterator[RealServer]:
    """The session's vLLM server with the stand-in (built once, cached under .cache/)."""
    require_vllm()
    was_built = is_built(DEFAULT_DEST)
    started = time.monotonic()
    with session_server(LOG_DIR) as server:
        _timings["stand-in build and time to /health" if not was_built else "time to /health"] = (
            time.monotonic() - started
        )
        yield server


@pytest.fixture(scope="session")
def vllm_base_url(vllm_real_server: RealServer) -> str:
    """``http://127.0.0.1:PORT/v1`` of the session's vLLM server."""
    return vllm_real_server.base_url
