"""A detector that asks a second, slower detector only when the first one is unsure."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from .._exceptions import ConfigurationError, TarsGuardError
from .._sync import LoopThread
from .._types import Assessment, Decision
from . import DecisionDetector

__all__ = ["CascadeDetector"]

logger = logging.getLogger("tarsguard")

DEFAULT_BELOW = 0.8


class CascadeDetector:
    """Reads each answer with ``fast``; asks ``judge`` for a second opinion only when ``fast`` is less sure
    than ``below``.

    A reading at or above ``below`` stands as it is, and the judge is not called: most checks pay nothing
    for the second opinion. Below it, the judge's reading replaces the fast one. When the judge fails (an
    error, a timeout, no label), the fast reading stands and the evidence says so: a failed second opinion
    never changes the decision.

    The evidence opens with which detector decided and why, and the assessment's ``detector`` (the verdict's
    ``trace.detector`` in a ``Guard``) names the detector that decided, e.g. ``linear@3 via cascade@1 below
    0.8``. ``name`` names the whole cascade (it keys the verdict cache).

    A ``Guard`` awaits ``aassess`` (so it cannot stop generations early with a cascade); ``assess`` calls the
    fast detector directly and runs an async judge on the cascade's own event loop thread.
    """

    version = "1"

    def __init__(self, fast: DecisionDetector, judge: DecisionDetector, *, below: float = DEFAULT_BELOW) -> None:
        if not 0.0 < below <= 1.0:
            raise ConfigurationError(f"below must be in (0, 1]; got {below}")
        self._fast = fast
        self._judge = judge
        self._below = below
        self._fast_async: Callable[..., Coroutine[Any, Any, Assessment]] | None = _async_assess(fast)
        self._judge_async: Callable[..., Coroutine[Any, Any, Assessment]] | None = _async_assess(judge)
        self._loop: LoopThread | None = None
        self._loop_lock = threading.Lock()

    @property
    def name(self) -> str:
        """``cascade@<version>(<fast> below <threshold> -> <judge>)``."""
        return f"cascade@{self.version}({self._fast.name} below {self._below:g} -> {self._judge.name})"

    @property
    def fast(self) -> DecisionDetector:
        """The detector that reads every answer."""
        return self._fast

    @property
    def judge(self) -> DecisionDetector:
        """The detector asked for a second opinion."""
        return self._judge

    @property
    def below(self) -> float:
        """The confidence under which the judge is asked."""
        return self._below

    def needs_judge(self, reading: Assessment) -> bool:
        """Whether a fast reading is unsure enough to ask the judge."""
        return reading.confidence < self._below

    async def aassess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        """The fast reading, or the judge's when the fast one is unsure."""
        if self._fast_async is not None:
            first = await self._fast_async(answer, reasoning=reasoning, prompt=prompt)
        else:
            first = self._fast.assess(answer, reasoning=reasoning, prompt=prompt)
        if not self.needs_judge(first):
            return self._kept(first)
        try:
            if self._judge_async is not None:
                second = await self._judge_async(answer, reasoning=reasoning, prompt=prompt)
            else:
                second = self._judge.assess(answer, reasoning=reasoning, prompt=prompt)
        except Exception as exc:  # the second opinion is optional: any failure leaves the fast reading
            return self._failed(first, exc)
        return self._judged(first, second)

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        """Synchronous ``aassess``."""
        first = self._fast.assess(answer, reasoning=reasoning, prompt=prompt)
        if not self.needs_judge(first):
            return self._kept(first)
        try:
            if self._judge_async is not None:
                with self._loop_lock:
                    if self._loop is None:
                        self._loop = LoopThread(name="tarsguard-cascade")
                    loop = self._loop
                second = loop.run(self._judge_async(answer, reasoning=reasoning, prompt=prompt))
            else:
                second = self._judge.assess(answer, reasoning=reasoning, prompt=prompt)
        except Exception as exc:
            return self._failed(first, exc)
        return self._judged(first, second)

    def close(self) -> None:
        """Stop the event loop thread that ``assess`` started (the detectors are left open)."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()

    # -- readings ----------------------------------------------------------------------------------------

    def _by(self, detector: DecisionDetector) -> str:
        return f"{detector.name} via cascade@{self.version} below {self._below:g}"

    def _fast_line(self, first: Assessment) -> str:
        return f"{self._fast.name} read {first.decision.value} at confidence {first.confidence:.2f}"

    def _kept(self, first: Assessment) -> Assessment:
        why = f"{self._fast_line(first)} (>= {self._below:g}): decided without a second opinion"
        return first.model_copy(update={"evidence": (why, *first.evidence), "detector": self._by(self._fast)})

    def _judged(self, first: Assessment, second: Assessment) -> Assessment:
        if second.decision is Decision.UNDETERMINED:
            reason = "; ".join(second.evidence) or "no label"
            return self._fallback(first, f"gave no decision ({reason})")
        why = f"{self._fast_line(first)} (< {self._below:g}): {self._judge.name} decided as the second opinion"
        fast_said = f"the fast reading was {first.decision.value} at {first.confidence:.2f}"
        evidence = (why, *second.evidence, fast_said)
        return second.model_copy(update={"evidence": evidence, "detector": self._by(self._judge)})

    def _failed(self, first: Assessment, exc: Exception) -> Assessment:
        kind = exc.kind if isinstance(exc, TarsGuardError) else type(exc).__name__
        detail = str(exc) or type(exc).__name__
        logger.warning(
            "second opinion from %s failed (%s: %s); the fast reading stands", self._judge.name, kind, detail
        )
        return self._fallback(first, f"failed ({kind}: {detail})")

    def _fallback(self, first: Assessment, what: str) -> Assessment:
        why = f"{self._fast_line(first)} (< {self._below:g}); the second opinion from {self._judge.name} {what}"
        evidence = (why, "the fast reading stands", *first.evidence)
        return first.model_copy(update={"evidence": evidence, "detector": self._by(self._fast)})


def _async_assess(detector: DecisionDetector) -> Callable[..., Coroutine[Any, Any, Assessment]] | None:
    method = getattr(detector, "aassess", None)
    return method if method is not None and inspect.iscoroutinefunction(method) else None
