"""Splitting a TARS generation into its reasoning and its final answer.

TARS writes ``<think>\\n...reasoning...\\n</think>\\n\\n<answer>`` as plain text. A server running a reasoning
parser may instead return the reasoning in a separate field (``reasoning``, formerly ``reasoning_content``).
Only the model's output is parsed here; nothing in the prompt can move the split.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLOSE_TAG", "OPEN_TAG", "ParsedOutput", "parse_output"]

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

MISSING_OPEN = "missing <think>"
MISSING_CLOSE = "missing </think>: reasoning never finished"
EXTRA_TAGS = "extra <think>/</think> tags"
NO_REASONING = "no reasoning block"
EMPTY_ANSWER = "empty answer"
CUT_OFF = "cut off by max_tokens"


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """The reasoning/answer split of one generation, and what was unusual about its format."""

    reasoning: str | None
    answer: str
    complete: bool
    """False when the reasoning or the answer was cut off, so no decision can be read."""
    issues: tuple[str, ...] = ()

    @property
    def format_ok(self) -> bool:
        """Whether the output had exactly the expected ``<think>…</think>`` answer format."""
        return not self.issues


def parse_output(
    content: str | None,
    reasoning: str | None = None,
    *,
    finish_reason: str | None = None,
) -> ParsedOutput:
    """Split a generation into reasoning and answer.

    ``content`` is the generated text; ``reasoning`` is the server's separate reasoning field, if any.
    A ``finish_reason`` of ``"length"`` marks the output as cut off.
    """
    text = content or ""
    issues: list[str] = []
    truncated = finish_reason == "length"
    if truncated:
        issues.append(CUT_OFF)

    if reasoning:
        # The server already split the output; the content is the answer. If a </think> still came in the
        # content, only what follows it is the answer: reasoning text must never be read as the answer.
        close_at = text.rfind(CLOSE_TAG)
        answer = _strip_tags(text if close_at == -1 else text[close_at + len(CLOSE_TAG) :])
        if OPEN_TAG in text or CLOSE_TAG in text:
            issues.append(EXTRA_TAGS)
        if not answer:
            issues.append(EMPTY_ANSWER)
        return ParsedOutput(reasoning.strip(), answer, complete=not truncated and bool(answer), issues=tuple(issues))

    close_at = text.rfind(CLOSE_TAG)
    if close_at == -1:
        open_at = text.find(OPEN_TAG)
        if open_at != -1:
            # Reasoning started but never closed: the generation stopped mid-thought.
            issues.append(MISSING_CLOSE)
            thought = _strip_tags(text[open_at + len(OPEN_TAG) :])
            if text.count(OPEN_TAG) > 1:
                issues.append(EXTRA_TAGS)
            return ParsedOutput(thought, "", complete=False, issues=tuple(issues))
        # A plain answer with no reasoning block at all.
        answer = text.strip()
        issues.append(NO_REASONING)
        if not answer:
            issues.append(EMPTY_ANSWER)
        return ParsedOutput(None, answer, complete=not truncated and bool(answer), issues=tuple(issues))

    head, tail = text[:close_at], text[close_at + len(CLOSE_TAG) :]
    stripped_head = head.lstrip()
    if stripped_head.startswith(OPEN_TAG):
        stripped_head = stripped_head[len(OPEN_TAG) :]
    else:
        issues.append(MISSING_OPEN)
    if OPEN_TAG in stripped_head or CLOSE_TAG in stripped_head or OPEN_TAG in tail:
        issues.append(EXTRA_TAGS)
    reasoning_text = _strip_tags(stripped_head)
    answer = _strip_tags(tail)
    if not answer:
        issues.append(EMPTY_ANSWER)
    return ParsedOutput(
        reasoning_text,
        answer,
        complete=not truncated and bool(answer),
        issues=tuple(issues),
    )


def _strip_tags(text: str) -> str:
    if OPEN_TAG in text or CLOSE_TAG in text:
        text = text.replace(OPEN_TAG, "").replace(CLOSE_TAG, "")
    return text.strip()
