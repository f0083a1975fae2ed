"""An in-memory backend that replays scripted TARS-style outputs, for tests and demos."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from .._config import Timeout
from .._scripted_server import DEFAULT_CONTENT, split_tokens
from .._types import Health
from ._base import GenerationEnd, GenerationEvent, GenerationRequest, TextDelta

__all__ = ["ScriptedBackend", "ScriptedOutput"]


@dataclass(frozen=True, slots=True)
class ScriptedOutput:
    """One scripted generation: text, an optional separate reasoning field, and how it ended."""

    content: str = ""
    reasoning: str | None = None
    finish_reason: str = "stop"
    seconds_per_token: float = 0.0


ScriptItem = str | ScriptedOutput | BaseException
Script = Sequence[ScriptItem] | Callable[[Sequence[Mapping[str, str]]], ScriptItem]


class ScriptedBackend:
    """Replays a script: items in order (the last repeats), or a function of the messages.

    A ``str`` item is the generated content; an exception item is raised; a ``ScriptedOutput`` controls the
    reasoning field, finish reason and pacing. Every request is recorded in ``requests``.
    """

    kind = "scripted"

    def __init__(self, script: Script = (), *, model: str = "scripted-tars") -> None:
        self._script = script
        self._served = 0
        self.model = model
        self.requests: list[GenerationRequest] = []
        self.closed = False

    @property
    def endpoint(self) -> str:
        """``scripted://<model>``."""
        return f"scripted://{self.model}"

    def _next(self, request: GenerationRequest) -> ScriptItem:
        if callable(self._script):
            return self._script(request.messages)
        if not self._script:
            return DEFAULT_CONTENT
        item = self._script[min(self._served, len(self._script) - 1)]
        self._served += 1
        return item

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield the next scripted output, token by token when the request streams."""
        self.requests.append(request)
        item = self._next(request)
        if isinstance(item, BaseException):
            raise item
        output = ScriptedOutput(content=item) if isinstance(item, str) else item
        reasoning_pieces = split_tokens(output.reasoning or "")
        content_pieces = split_tokens(output.content)
        if request.stream:
            for piece in reasoning_pieces:
                await _pace(output.seconds_per_token)
                yield TextDelta(reasoning=piece)
            for piece in content_pieces:
                await _pace(output.seconds_per_token)
                yield TextDelta(content=piece)
        else:
            await _pace(output.seconds_per_token * (len(reasoning_pieces) + len(content_pieces)))
            yield TextDelta(content=output.content, reasoning=output.reasoning or "")
        prompt_tokens = sum(len(split_tokens(m["content"])) for m in request.messages)
        yield GenerationEnd(
            finish_reason=output.finish_reason,
            model=request.model or self.model,
            request_id=f"scripted-{len(self.requests)}",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(reasoning_pieces) + len(content_pieces),
        )

    async def health(self, *, timeout: Timeout) -> Health:
        """Always healthy."""
        return Health(ok=True, endpoint=self.endpoint, backend=self.kind, models=(self.model,))

    async def aclose(self) -> None:
        """Mark the backend closed."""
        self.closed = True


async def _pace(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
