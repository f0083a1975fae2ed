"""A single ``tarsguard check`` shows a live status on a terminal: tokens so far and the time spent."""

from __future__ import annotations

import io

from rich.console import Console

from tarsguard import Decision, Guard
from tarsguard._live import _Status, check_with_status
from tarsguard.testing import Reply, ScriptedBackend, ScriptedServer

OUTPUT = "<think>\nThe user asks about processes. " + "It is a normal admin task. " * 8 + "\n</think>\n\nUse kill PID."


def test_on_a_terminal_the_status_counts_tokens_and_time() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ScriptedServer([Reply(OUTPUT, tokens_per_second=200)]) as server, Guard(server.base_url) as guard:
        verdict = check_with_status(guard, "How do I kill a Python process?", {}, console)
    assert verdict.decision is Decision.ANSWERED and verdict.answer == "Use kill PID."
    shown = out.getvalue()
    assert "checking:" in shown and "tokens so far" in shown and " s" in shown
    assert "answer)" in shown


def test_the_status_reads_the_clock_while_no_token_comes() -> None:
    status = _Status()
    assert "waiting for the first token" in str(status.__rich__())
    status.started -= 3
    status.reasoning, status.answer = 5, 2
    text = str(status.__rich__())
    assert "7 tokens so far (5 reasoning, 2 answer)" in text and text.endswith(" s") and "3." in text


def test_without_a_terminal_nothing_is_shown() -> None:
    out = io.StringIO()
    with Guard(backend=ScriptedBackend([OUTPUT])) as guard:
        verdict = check_with_status(guard, "hi", {}, Console(file=out, force_terminal=False))
    assert verdict.answer == "Use kill PID." and out.getvalue() == ""
