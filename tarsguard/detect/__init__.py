"""Decision detection: reading answered / declined / partial from the reasoner's answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._lazy import lazy_getattr
from .._types import Assessment

if TYPE_CHECKING:
    from ._cascade import CascadeDetector
    from ._judge import LLMJudgeDetector
    from ._linear import LinearDetector
    from ._patterns import PatternDetector
    from ._served_judge import ServedJudgeDetector

__all__ = [
    "CascadeDetector",
    "DecisionDetector",
    "LLMJudgeDetector",
    "LinearDetector",
    "PatternDetector",
    "ServedJudgeDetector",
    "classify",
    "default_detector",
]

# Detectors load on first use (PEP 562): importing this package (as every Guard does) costs almost nothing.
_LAZY = {
    "CascadeDetector": "._cascade",
    "LLMJudgeDetector": "._judge",
    "LinearDetector": "._linear",
    "PatternDetector": "._patterns",
    "ServedJudgeDetector": "._served_judge",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


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


_DEFAULT: LinearDetector | None = None


def default_detector() -> DecisionDetector:
    """The detector every guard uses unless told otherwise: a ``LinearDetector`` with the shipped weights."""
    global _DEFAULT
    if _DEFAULT is None:
        from ._linear import LinearDetector

        _DEFAULT = LinearDetector()
    return _DEFAULT


def classify(answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
    """Read whether ``answer`` answered, declined or partially answered, with the default detector."""
    return default_detector().assess(answer, reasoning=reasoning, prompt=prompt)
