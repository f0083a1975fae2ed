"""Test doubles: a scripted backend, a scripted OpenAI-compatible HTTP server on 127.0.0.1, a phrase detector.

Use them to exercise faults and edge cases without a model: 5xx, 429 with Retry-After, slow responses,
dropped connections, malformed JSON, truncated streams.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._scripted_server import RecordedRequest, Reply, ScriptedServer
from ._types import Assessment, Decision
from .backends.scripted import ScriptedBackend, ScriptedOutput

__all__ = ["PhraseDetector", "RecordedRequest", "Reply", "ScriptedBackend", "ScriptedOutput", "ScriptedServer"]

DEFAULT_RULES: tuple[tuple[str, Decision], ...] = (
    ("I'm sorry", Decision.DECLINED),
    ("However", Decision.PARTIAL),
)


class PhraseDetector:
    """A detector for tests: the first rule whose phrase the answer contains decides, else ``default``.

    Lets tests that script TARS's answers fix the decisions they expect, independent of the real detector.
    """

    name = "phrases@test"

    def __init__(
        self,
        rules: Sequence[tuple[str, Decision]] = DEFAULT_RULES,
        *,
        default: Decision = Decision.ANSWERED,
        confidence: float = 0.9,
    ) -> None:
        self.rules = tuple(rules)
        self.default = default
        self.confidence = confidence

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        """The decision of the first matching rule."""
        for phrase, decision in self.rules:
            if phrase in answer:
                return Assessment(decision=decision, confidence=self.confidence, evidence=(f'contains "{phrase}"',))
        return Assessment(decision=self.default, confidence=self.confidence, evidence=("no rule matched",))
