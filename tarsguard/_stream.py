"""Streaming checks: the reasoning and the answer as they are generated, then the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._parse import CLOSE_TAG, OPEN_TAG

__all__ = ["TextChunk", "ThinkSplitter"]

Kind = Literal["reasoning", "answer"]


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of the reasoner's output as it was generated: ``kind`` is ``"reasoning"`` or ``"answer"``.

    ``"restart"`` (rare: a replica failed mid-generation and another starts over) voids every chunk before it;
    its ``text`` says why.
    """

    kind: Kind | Literal["restart"]
    text: str


class ThinkSplitter:
    """Splits streamed ``<think>…</think>answer`` text into reasoning and answer pieces as they arrive.

    Text that might be the start of a tag is held back until the next piece settles it; whitespace around
    the tags is dropped, as ``parse_output`` drops it.
    """

    def __init__(self) -> None:
        self._state: Literal["start", "reasoning", "answer"] = "start"
        self._pending = ""
        self._lead = True
        self.closed = False
        """Whether ``</think>`` has been seen."""

    @property
    def state(self) -> Literal["start", "reasoning", "answer"]:
        """Where the splitter is: before the output settled, inside the reasoning, or in the answer."""
        return self._state

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        """The reasoning and answer pieces that ``text`` completes."""
        pieces: list[tuple[Kind, str]] = []
        self._pending += text
        while self._pending:
            if self._lead:
                # Whitespace right after a tag (or at the very start) is layout, not text.
                self._pending = self._pending.lstrip()
                if not self._pending:
                    return pieces
                if self._state != "start":
                    self._lead = False
            if self._state == "start":
                head = self._pending.lstrip()
                if head.startswith(OPEN_TAG):
                    self._state, self._pending = "reasoning", head[len(OPEN_TAG) :]
                elif not head or OPEN_TAG.startswith(head):
                    return pieces  # not settled yet
                else:
                    self._state, self._pending, self._lead = "answer", head, False
            elif self._state == "reasoning":
                at = self._pending.find(CLOSE_TAG)
                if at != -1:
                    before = self._pending[:at].rstrip()
                    if before:
                        pieces.append(("reasoning", before))
                    self.closed = True
                    self._state, self._pending, self._lead = "answer", self._pending[at + len(CLOSE_TAG) :], True
                    continue
                keep = _held_back(self._pending)
                emit = self._pending[: len(self._pending) - keep]
                if emit:
                    pieces.append(("reasoning", emit))
                self._pending = self._pending[len(emit) :]
                return pieces
            else:
                pieces.append(("answer", self._pending))
                self._pending = ""
        return pieces

    def finish(self) -> list[tuple[Kind, str]]:
        """What is still held back once the generation is over."""
        pending, self._pending = self._pending, ""
        if self._state == "reasoning":
            pending = pending.rstrip()
            return [("reasoning", pending)] if pending else []
        pending = pending.strip() if self._state == "start" else pending
        return [("answer", pending)] if pending else []


def _held_back(text: str) -> int:
    """How many trailing characters of reasoning to hold: trailing whitespace and a possible partial tag."""
    for size in range(min(len(CLOSE_TAG) - 1, len(text)), 0, -1):
        if CLOSE_TAG.startswith(text[-size:]):
            rest = text[:-size]
            return size + len(rest) - len(rest.rstrip())
    return len(text) - len(text.rstrip())
