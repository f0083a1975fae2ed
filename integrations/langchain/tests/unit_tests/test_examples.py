"""The LangChain examples run end to end against their default scripted TARS server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def _run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rag_example_answers_and_blocks() -> None:
    out = _run("langchain_rag.py")
    assert "scripted TARS server" in out
    assert out.count("-> answered") == 2
    assert "-> blocked (declined" in out and "can't help with that" in out
    assert "chunks: 'From the docs:" in out


def test_agent_example_answers_and_blocks() -> None:
    out = _run("langchain_agent.py")
    assert "[agent model; decision answered] How about Bubbles" in out
    assert "[guard (model not called); decision declined] I'm sorry" in out
