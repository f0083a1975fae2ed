"""A live status line on a terminal while one check runs: how much the reasoner has written, and for how long."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from ._stream import TextChunk
from ._types import Verdict

if TYPE_CHECKING:
    from ._guard import Guard, SamplingOverrides

__all__ = ["check_with_status"]


class _Status:
    """The status text, read afresh at every refresh so that the elapsed time moves while no token arrives."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.reasoning = 0
        self.answer = 0

    def __rich__(self) -> Text:
        elapsed = time.monotonic() - self.started
        tokens = self.reasoning + self.answer
        if not tokens:
            return Text(f"checking: waiting for the first token, {elapsed:.1f} s")
        return Text(
            f"checking: {tokens} tokens so far ({self.reasoning} reasoning, {self.answer} answer), {elapsed:.1f} s"
        )


def check_with_status(guard: Guard, prompt: str, sampling: SamplingOverrides, console: Console) -> Verdict:
    """``guard.check(prompt)``, showing a live status on ``console`` when it is a terminal (each streamed piece
    counts as a token: exact on vLLM, which sends one per token; a guard that does not stream shows the time)."""
    if not console.is_terminal:
        return guard.check(prompt, **sampling)
    status = _Status()
    verdict: Verdict | None = None
    with console.status(status):
        for event in guard.stream(prompt, **sampling):
            if isinstance(event, Verdict):
                verdict = event
            elif isinstance(event, TextChunk):
                if event.kind == "restart":
                    status.reasoning = status.answer = 0
                elif event.kind == "reasoning":
                    status.reasoning += 1
                else:
                    status.answer += 1
    if verdict is None:  # the stream always ends with its verdict
        raise RuntimeError("the check's stream ended without a verdict")
    return verdict
