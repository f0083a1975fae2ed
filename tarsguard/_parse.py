"""Splitting a TARS generation into its reasoning and its final answer.

TARS writes ``<think>\\n...reasoning...\\n</think>\\n\\n<answer>`` as plain text. A server running a reasoning
parser may instead return the reasoning in a separate field (``reasoning``, formerly ``reasoning_content``).
Only the model's output is parsed here. Tags in the prompt are neutralised before it is sent (see
``tarsguard._input.neutralise_tags``), but the model may still write more tags than its format has (quoting
text, or by mistake): such an output has several readings, one per place the answer may start, and the guard
keeps the most restrictive decision among them (see ``ParsedOutput.readings``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLOSE_TAG", "OPEN_TAG", "SPLITS", "ParsedOutput", "Reading", "parse_output"]

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

MISSING_OPEN = "missing <think>"
MISSING_CLOSE = "missing </think>: reasoning never finished"
EXTRA_TAGS = "extra <think>/</think> tags"
NO_REASONING = "no reasoning block"
EMPTY_ANSWER = "empty answer"
CUT_OFF = "cut off by max_tokens"
SPLITS = "{tags}: read every split, kept the most restrictive"
TOO_MANY_TAGS = "more than {limit} </think> tags: no decision read"
MAX_CLOSE_TAGS = 8
"""Past this many ``</think>`` tags an output is not read at all (no decision): its readings multiply."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One way to split an output that has more than one: the reasoning and the answer if the answer starts
    (and ends) where ``split`` says."""

    reasoning: str | None
    answer: str
    split: str
    """Where this reading's answer starts and ends, e.g. ``after </think> #2 of 2``."""


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """The reasoning/answer split of one generation, and what was unusual about its format."""

    reasoning: str | None
    answer: str
    complete: bool
    """False when the reasoning or the answer was cut off, so no decision can be read."""
    issues: tuple[str, ...] = ()
    readings: tuple[Reading, ...] = ()
    """Every reading of an output whose tags allow more than one split, the parse's own (the answer after the
    last ``</think>``) among them: the answer after each ``</think>`` (the server's reasoning field counts as one
    before the content), and, where a tag follows, that answer cut at the tag. Empty when there is one reading.
    An empty answer is a reading too: it reads no decision. Such an output's issues say so (``SPLITS``)."""

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

    if text.count(CLOSE_TAG) > MAX_CLOSE_TAGS:
        issues.append(TOO_MANY_TAGS.format(limit=MAX_CLOSE_TAGS))
        thought = reasoning.strip() if reasoning else None
        return ParsedOutput(thought, "", complete=False, issues=tuple(issues))

    if reasoning:
        # The server already split the output; the content is the answer. If a </think> still came in the
        # content, only what follows it is the answer: reasoning text must never be read as the answer.
        close_at = text.rfind(CLOSE_TAG)
        answer = _strip_tags(text if close_at == -1 else text[close_at + len(CLOSE_TAG) :])
        if OPEN_TAG in text or CLOSE_TAG in text:
            issues.append(EXTRA_TAGS)
        if not answer:
            issues.append(EMPTY_ANSWER)
        readings = () if truncated else _readings(text, reasoning.strip(), issues)
        return ParsedOutput(
            reasoning.strip(),
            answer,
            complete=not truncated and bool(answer),
            issues=tuple(issues),
            readings=readings,
        )

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
    readings = () if truncated else _readings(text, None, issues)
    return ParsedOutput(
        reasoning_text,
        answer,
        complete=not truncated and bool(answer),
        issues=tuple(issues),
        readings=readings,
    )


def _readings(text: str, reasoning: str | None, issues: list[str]) -> tuple[Reading, ...]:
    """Every reading of ``text`` when its tags allow more than one (see ``ParsedOutput.readings``), else none;
    adds the ``SPLITS`` issue when there are several.

    ``reasoning`` is the server's separate reasoning field: the content itself is then one place the answer
    may start.
    """
    starts: list[int] = [0] if reasoning is not None else []
    at = text.find(CLOSE_TAG)
    while at != -1:
        starts.append(at + len(CLOSE_TAG))
        at = text.find(CLOSE_TAG, at + 1)
    first = starts[0] if starts else 0
    if len(starts) < 2 and OPEN_TAG not in text[first:]:
        return ()
    closes = len(starts) - (reasoning is not None)
    if closes > 1:
        issues.append(SPLITS.format(tags=f"{closes} </think> tags"))
    elif closes == 1:
        issues.append(SPLITS.format(tags="a tag after </think>"))
    else:
        issues.append(SPLITS.format(tags="a tag in the answer"))
    readings: list[Reading] = []
    for number, start in enumerate(starts, 1):
        where = f"after </think> #{number - (reasoning is not None)} of {closes}" if start else "the whole content"
        head = text[: start - len(CLOSE_TAG)] if start else ""
        thought = _strip_tags(head.lstrip().removeprefix(OPEN_TAG))
        if reasoning is not None:
            thought = f"{reasoning}\n{thought}".strip()
        tail = text[start:]
        readings.append(Reading(thought or None, _strip_tags(tail), where))
        cut = min((i for i in (tail.find(OPEN_TAG), tail.find(CLOSE_TAG)) if i != -1), default=-1)
        if cut != -1:
            readings.append(Reading(thought or None, _strip_tags(tail[:cut]), f"{where}, up to the next tag"))
    return tuple(readings)


def _strip_tags(text: str) -> str:
    if OPEN_TAG in text or CLOSE_TAG in text:
        text = text.replace(OPEN_TAG, "").replace(CLOSE_TAG, "")
    return text.strip()
