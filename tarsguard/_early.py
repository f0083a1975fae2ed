"""Early verdicts: close the reasoner's stream once the answer so far settles the decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._types import Assessment, Decision

__all__ = ["EarlyStop"]


@dataclass(frozen=True, slots=True)
class EarlyStop:
    """When a check may end the generation before the model finishes its answer.

    While the answer streams in, the guard's detector reads it every ``every`` tokens once it has
    ``min_answer_tokens``; the first reading at or above ``confidence``, or the last of ``steady_readings``
    readings in a row that agree at or above ``steady_confidence``, becomes the verdict and the stream is closed,
    so the server stops generating. The defaults come from the offline table of ``bench/early_verdict.py``: over
    2,608 public answers of real models, the early decision agreed with the full-answer decision 99.54% of the
    time and left 49.8% of the answer tokens unwritten (the most saved at >= 99.5% agreement).
    """

    confidence: float = 0.95
    min_answer_tokens: int = 40
    min_decline_tokens: int = 80
    """A refusal is often followed by an offer of other help, which makes it partial: a decline waits longer."""
    every: int = 4
    steady_readings: int = 3
    """0 switches the agreeing-readings rule off."""
    steady_confidence: float = 0.9
    plain_answer: bool = False
    """The model writes no ``<think>`` block (a chat model, not a reasoner): its output is read as the answer from
    the first token. Otherwise the answer starts after ``</think>``, and an output without one is never stopped
    early (its verdict's ``format_issues`` say so)."""

    def __post_init__(self) -> None:
        for name in ("confidence", "steady_confidence"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigurationError(f"EarlyStop.{name} must be in (0, 1]; got {value!r}")
        if self.min_answer_tokens < 1 or self.every < 1 or self.min_decline_tokens < self.min_answer_tokens:
            raise ConfigurationError(
                "EarlyStop needs min_answer_tokens >= 1, every >= 1 and min_decline_tokens >= min_answer_tokens"
            )
        if self.steady_readings < 0:
            raise ConfigurationError(f"EarlyStop.steady_readings must be >= 0; got {self.steady_readings!r}")

    def due(self, answer_tokens: int, last_read: int) -> bool:
        """Whether the detector should read the answer now, at ``answer_tokens``, last read at ``last_read``."""
        if answer_tokens < self.min_answer_tokens:
            return False
        # Readings thin out as the answer grows: a long answer that is still unclear costs O(log n) readings.
        return answer_tokens - last_read >= max(self.every, last_read // 8)

    def settles(self, readings: Sequence[Assessment], answer_tokens: int) -> bool:
        """Whether this answer's readings so far (oldest first; the last is of ``answer_tokens``) settle the verdict."""
        reading = readings[-1]
        if reading.decision is Decision.UNDETERMINED or answer_tokens < (
            self.min_decline_tokens if reading.decision is Decision.DECLINED else self.min_answer_tokens
        ):
            return False
        if reading.confidence >= self.confidence:
            return True
        steady = self.steady_readings
        return 0 < steady <= len(readings) and all(
            r.decision is reading.decision and r.confidence >= self.steady_confidence for r in readings[-steady:]
        )
