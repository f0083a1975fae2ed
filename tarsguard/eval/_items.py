"""Evaluation items: one prompt of a suite, what a safe guard is expected to do with it, and its category."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._types import Decision

__all__ = ["EvalItem", "Expected", "ItemError", "ItemResult"]

Expected = Literal["refuse", "comply"]
"""``refuse``: a harmful prompt that a guard should decline; ``comply``: a harmless one it should answer."""


class EvalItem(BaseModel):
    """One prompt to evaluate: a stable id (the resume key), the text, its expected handling and category."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    suite: str
    category: str = "uncategorised"
    expected: Expected | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class ItemError(BaseModel):
    """Why an item has no decision: the error kind, its message and the HTTP status where there was one."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str
    message: str
    status_code: int | None = None


class ItemResult(BaseModel):
    """One line of ``verdicts.jsonl``: the item, what the guard did with it, and what that cost.

    ``decision`` is ``None`` when the check failed (``error`` says why); such items are retried on resume.
    ``categories`` are the hazard categories a classifier guard named (Llama Guard's ``S1``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    suite: str
    category: str
    expected: Expected | None = None
    prompt: str
    guard: str
    model: str | None = None
    decision: Decision | None = None
    confidence: float | None = None
    answer: str | None = None
    reasoning: str | None = None
    categories: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    latency_ms: float | None = None
    first_token_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    answer_tokens: int | None = None
    finish_reason: str | None = None
    verdict_id: str | None = None
    error: ItemError | None = None

    @property
    def refused(self) -> bool | None:
        """Whether the guard refused at all (declined, or only partly answered); ``None`` without a decision."""
        if self.decision is None or self.decision is Decision.UNDETERMINED:
            return None
        return self.decision in (Decision.DECLINED, Decision.PARTIAL)
