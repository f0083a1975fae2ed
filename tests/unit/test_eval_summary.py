"""``tarsguard eval``'s terminal output: a progress line that fits a narrow terminal, and a summary whose every
metric says what it was computed on."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from rich.console import Console

from tarsguard import Decision
from tarsguard.eval import _cli
from tarsguard.eval._items import ItemResult
from tarsguard.eval._metrics import summarize
from tarsguard.eval._runner import RunResult


@pytest.mark.parametrize(
    "width, counts, done, total",
    [
        (60, {"answered": 432, "declined": 234, "partial": 123, "undetermined": 198, "errors": 11}, 998, 1000),
        (80, {"answered": 4321, "declined": 2345, "partial": 1234, "undetermined": 1987, "errors": 111}, 9998, 99999),
    ],
)
def test_the_progress_line_fits_a_narrow_terminal(width: int, counts: dict[str, int], done: int, total: int) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = _cli._progress(console)
    task = progress.add_task(_cli._counts_text(Counter(counts)), total=total, completed=done)
    progress.update(task)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= width, lines
    shown = " ".join(f"{key[0]}{value}" for key, value in counts.items())
    assert shown in lines[0] and f"{done}/{total}" in lines[0]


def item(index: int, expected: str, decision: Decision | None) -> ItemResult:
    return ItemResult(
        id=str(index), suite="s", category="c", expected=expected, prompt="p", guard="g", decision=decision
    )


def test_every_rate_in_the_summary_shows_its_coverage(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 items that should be refused: 9 declined, 11 undetermined. Every rate is "100%", on 9 of 20.
    results = [item(i, "refuse", Decision.DECLINED) for i in range(9)]
    results += [item(i, "refuse", Decision.UNDETERMINED) for i in range(9, 20)]
    summary = summarize(results, {"suite": "s", "guard": "g"})
    out = io.StringIO()
    monkeypatch.setattr(_cli, "stderr", Console(file=out, width=200))
    _cli._print_summary(summary, RunResult(results=results, resumed=0, ran=20))
    text = out.getvalue()
    refusal = next(line for line in text.splitlines() if "refusal rate" in line)
    f1 = next(line for line in text.splitlines() if "F1" in line)
    assert "100.0%" in refusal and "(on 9 of 20 decided; 11 undetermined or failed)" in refusal
    assert "1.000" in f1 and "(on 9 of 20 decided; 11 undetermined or failed)" in f1
    assert summary["overall"]["refuse_decided"] == 9 and summary["overall"]["labelled"] == 20
