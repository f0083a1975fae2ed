"""Decision detection: reading answered / declined / partial from the reasoner's answer."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._types import Assessment
from ._patterns import PatternDetector

__all__ = ["DecisionDetector", "PatternDetector", "classify", "default_detector"]


@runtime_checkable
class DecisionDetector(Protocol):
    """Reads a decision from an answer (and, as a second signal, the reasoning that led to it)."""

    @property
    def name(self) -> str:
        """A stable ``name@version`` recorded in every trace (and in cache keys)."""
        ...

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        """Return the decision the answer expresses, how sure the detector is, and the evidence."""
        ...


_DEFAULT: PatternDetector | None = None


def default_detector() -> DecisionDetector:
    """The detector every guard uses unless told otherwise."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PatternDetector()
    return _DEFAULT


def classify(answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
    """Read whether ``answer`` answered, declined or partially answered, with the default detector."""
    return default_detector().assess(answer, reasoning=reasoning, prompt=prompt)
