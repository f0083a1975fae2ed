"""Long prompts: windows that each fit the guard model's context, and the most restrictive of several verdicts."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

from ._exceptions import ContextLengthExceeded
from ._types import Assessment, Decision, Timings, Usage, Verdict

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "LONG_PROMPTS",
    "MAX_WINDOWS",
    "MIN_BUDGET_TOKENS",
    "TYPICAL_BYTES_PER_TOKEN",
    "WINDOW_CONCURRENCY",
    "LongPrompts",
    "combine",
    "estimate_tokens",
    "restrictiveness",
    "windows",
]

LongPrompts = Literal["windows", "reject"]
"""What a guard does with a prompt longer than its model's context: check it in windows, or reject it."""
LONG_PROMPTS: tuple[LongPrompts, ...] = ("windows", "reject")

DEFAULT_CONTEXT_TOKENS = 32768
"""TARS-7B's context length: the limit assumed when the server does not report one and none is configured."""
ASSUMED_FIT_TOKENS = 8192
"""A prompt whose estimate plus ``max_tokens`` stays under this is sent without looking the context up."""
TEMPLATE_TOKENS = 64
"""The chat template's own tokens around the messages (Qwen2.5's inserts a default system prompt)."""
MESSAGE_TOKENS = 8
"""The template's tokens around each message."""
TYPICAL_BYTES_PER_TOKEN = 4
"""Bytes of text per token in typical English: a prompt that fits at this rate is sent whole to a server that
reports its context (it refuses, rather than cuts, a prompt that does not fit)."""
MIN_WINDOW_TOKENS = 256
"""The smallest window worth checking; a context that leaves less beside ``max_tokens`` cannot be screened."""
MAX_WINDOWS = 64
"""A prompt that needs more windows than this is rejected rather than checked."""
WINDOW_CONCURRENCY = 4
"""Windows of one prompt checked at the same time."""
MIN_BUDGET_TOKENS = TEMPLATE_TOKENS + 2 * MESSAGE_TOKENS + MIN_WINDOW_TOKENS
"""The fewest prompt tokens beside ``max_tokens`` that a context must leave for a prompt to be screened."""

_RANK = {Decision.DECLINED: 0, Decision.PARTIAL: 1, Decision.UNDETERMINED: 2, Decision.ANSWERED: 3}


def estimate_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """An upper bound on the prompt tokens of ``messages``: one per UTF-8 byte of text, plus the template's.

    A byte-level BPE tokenizer (Qwen2.5's, so TARS's) never needs more than one token per byte.
    """
    return TEMPLATE_TOKENS + sum(MESSAGE_TOKENS + len(m["content"].encode("utf-8")) for m in messages)


def windows(messages: Sequence[Mapping[str, str]], budget: int) -> list[list[dict[str, str]]]:
    """``messages`` cut into conversations that each estimate to at most ``budget`` prompt tokens.

    Every message's text is cut into pieces that overlap by an eighth of a piece, so that text cut at a
    piece's end is also read whole at the start of the next; pieces of nothing but white space are left out.
    Pieces are packed in order into windows; each window ends with a user turn: its own last piece when that
    is one of the final user message, else the end of the final user message (the request the conversation
    leads to), so that every window is read as that request's context. Identical windows are checked once.

    Raises ``ContextLengthExceeded`` when ``budget`` leaves no room for a window, or more than ``MAX_WINDOWS``
    windows would be needed.
    """
    room = budget - TEMPLATE_TOKENS
    if budget < MIN_BUDGET_TOKENS:
        raise ContextLengthExceeded(
            f"the guard model's context leaves {max(budget, 0)} tokens for the prompt beside max_tokens; "
            f"at least {MIN_BUDGET_TOKENS} are needed to check it in windows"
        )
    last = len(messages) - 1
    question = messages[-1]["content"].strip().encode("utf-8")
    context = any(m["content"].strip() for m in messages[:last])
    # The end of the request closes the windows of earlier turns: room is kept for it only where there are some.
    tail = _decode(question[max(0, len(question) - room // 4) :], start=True) if context else ""
    reserve = MESSAGE_TOKENS + len(tail.encode("utf-8")) if context else 0
    piece_room = room - MESSAGE_TOKENS - reserve
    pieces: list[tuple[int, str, int]] = []  # (message index, text, estimated tokens)
    for index, message in enumerate(messages):
        for text in _pieces(message["content"], piece_room):
            if text.strip():
                pieces.append((index, text, MESSAGE_TOKENS + len(text.encode("utf-8"))))
    out: list[list[dict[str, str]]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    group: list[tuple[int, str, int]] = []
    used = 0

    def flush() -> None:
        window = [{"role": messages[i]["role"], "content": text} for i, text, _ in group]
        if group[-1][0] != last:
            window.append({"role": "user", "content": tail})
        key = tuple((m["role"], m["content"]) for m in window)
        if key not in seen:
            seen.add(key)
            out.append(window)

    for piece in pieces:
        if group and used + piece[2] + reserve > room:
            flush()
            group, used = [], 0
        group.append(piece)
        used += piece[2]
    if group:
        flush()
    if len(out) > MAX_WINDOWS:
        raise ContextLengthExceeded(
            f"the prompt would need {len(out)} windows of the guard model's context; a guard checks at most "
            f"{MAX_WINDOWS}",
            limit=budget,
        )
    return out


def _pieces(text: str, room: int) -> list[str]:
    """``text`` cut into pieces of at most ``room`` UTF-8 bytes, each overlapping the one before by an eighth."""
    data = text.encode("utf-8")
    if len(data) <= room:
        return [text]
    overlap = room // 8
    pieces: list[str] = []
    start = 0
    while True:
        end = min(start + room, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never cut inside a character
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        if end >= len(data):
            return pieces
        start = end - overlap
        while data[start] & 0xC0 == 0x80:
            start += 1


def _decode(data: bytes, *, start: bool) -> str:
    """``data`` as text, dropping a character cut at its start."""
    while start and data and data[0] & 0xC0 == 0x80:
        data = data[1:]
    return data.decode("utf-8")


def restrictiveness(reading: Assessment | Verdict) -> tuple[int, float]:
    """A sort key: the most restrictive decision first.

    Declined, then partial, then undetermined (no decision read), then answered; a more confident decline or
    partial answer before a less confident one, a less confident answer before a more confident one.
    """
    decision, confidence = reading.decision, reading.confidence
    return _RANK[decision], confidence if decision is Decision.ANSWERED else -confidence


def combine(verdicts: Sequence[Verdict], *, note: str, total_ms: float) -> Verdict:
    """One verdict for a prompt checked in parts: the most restrictive part's, with ``note`` first in its evidence.

    A verdict that does not allow the prompt always wins over one that does; among the rest the order of
    ``restrictiveness`` decides. The trace is the chosen part's, with a new id, the whole check's wall time and
    the token counts of all parts.
    """
    keys = [(v.allowed, *restrictiveness(v)) for v in verdicts]
    index = keys.index(min(keys))
    chosen = verdicts[index]
    usage = _total_usage([v.trace.usage for v in verdicts])
    trace = chosen.trace.model_copy(
        update={
            "verdict_id": uuid.uuid4().hex,
            "created_at": datetime.now(UTC),
            "usage": usage,
            "timings": Timings(total_ms=total_ms),
        }
    )
    evidence = (f"{note}; part {index + 1} of {len(verdicts)} gave the most restrictive verdict", *chosen.evidence)
    return chosen.model_copy(update={"evidence": evidence, "trace": trace})


def _total_usage(usages: Sequence[Usage]) -> Usage:
    def total(name: str) -> int | None:
        values = [getattr(u, name) for u in usages]
        return None if any(v is None for v in values) else sum(values)

    return Usage(
        prompt_tokens=total("prompt_tokens"),
        completion_tokens=total("completion_tokens"),
        reasoning_tokens=total("reasoning_tokens"),
        answer_tokens=total("answer_tokens"),
        split_estimated=any(u.split_estimated for u in usages),
    )
