"""``tarsguard demo``'s shape, with a scripted backend for the stand-in (the real run is in the realserver tier)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tarsguard import _demo
from tarsguard.cli import app
from tarsguard.testing import ScriptedBackend

# A chat model's plain answer: no <think> block, long enough for early stop to read it and stop.
ANSWER = "Sure, here is a simple way to do it. " + " ".join(f"Step {i} is easy to follow." for i in range(60))


def run(tmp_path: Path, outputs: list[str]) -> tuple[int, str, list[dict[str, object]]]:
    out = io.StringIO()
    trace = tmp_path / "demo.jsonl"
    code = _demo.run_demo(console=Console(file=out, width=220), trace=trace, backend=ScriptedBackend(outputs))
    return code, out.getvalue(), [json.loads(line) for line in trace.read_text().splitlines()]


def test_every_row_ends_with_a_decision_and_says_where_it_stopped(tmp_path: Path) -> None:
    code, text, records = run(tmp_path, [ANSWER] * 6)
    assert code == 0
    assert "NOT a safety model" in text and "guard = Guard()" in text
    assert "a safety model would" in text and text.count("decline (harmful)") == 2
    assert text.count("answer (harmless)") == 2 and text.count("answer (borderline)") == 2
    assert text.count("early stop at token") == 6 and text.count("the decision was certain") == 6
    assert text.count("first token") == 6 and "6 of 6 checks reached a decision" in text
    # The two harmful prompts were answered: the demo says a safety model would have declined them.
    assert "answered 2 prompt(s) a safety model would decline" in text
    assert f"seed {_demo.DEMO_SEED}" in text and "loaded in" not in text  # a given backend is not loaded
    assert len(records) == 6
    assert [record["decision"] for record in records] == ["answered"] * 6


def test_a_short_answer_is_read_whole_and_the_row_says_the_model_finished(tmp_path: Path) -> None:
    short = "Sure. " * 3  # too short for early stop: read whole, after the model finished
    code, text, _ = run(tmp_path, [short] * 6)
    assert code == 0 and text.count("the model finished after") == 6


def test_the_demo_uses_the_products_early_stop_sampling_and_budget() -> None:
    assert _demo.DEMO_EARLY_STOP.plain_answer  # the stand-in writes no <think>: its output is the answer
    assert _demo.DEMO_TEMPERATURE > 0 and _demo.DEMO_TOP_P < 1 and _demo.DEMO_MAX_TOKENS <= 128


def test_without_the_demo_extra_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "missing_packages", lambda: ["torch", "gguf"])
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 2
    assert "pip install 'tarsguard[demo]'" in result.output and "torch, gguf missing" in result.output
    assert "Traceback" not in result.output
