"""The backend interface: one method that streams a generation, one that reports health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._config import Timeout
from .._types import Health, SamplingParams

__all__ = [
    "Backend",
    "GenerationEnd",
    "GenerationEvent",
    "GenerationRequest",
    "GenerationRestart",
    "TextDelta",
    "TokenLogprob",
]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: validated chat messages, sampling parameters and limits.

    ``extra_body`` holds further request fields for backends that speak the OpenAI wire format (for vLLM:
    ``structured_outputs``, ``logprobs``, ``top_logprobs``); the HTTP backend sends them as they are, and other
    backends ignore them.
    """

    messages: Sequence[Mapping[str, str]]
    sampling: SamplingParams
    timeout: Timeout
    stream: bool = True
    model: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)


class TextDelta(NamedTuple):
    """Generated text: ``content`` as generated, ``reasoning`` from a server-side reasoning parser.

    A backend may merge several generation steps that arrived together into one delta; ``content_steps``
    and ``reasoning_steps`` say how many (for token accounting; ignored where the text is empty).
    """

    content: str = ""
    reasoning: str = ""
    content_steps: int = 1
    reasoning_steps: int = 1


class TokenLogprob(NamedTuple):
    """One generated token's log-probability, and the most likely tokens at its position (``top``)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationEnd:
    """The last event of a generation: why it stopped, what it cost, and who served it."""

    finish_reason: str | None = None
    model: str | None = None
    request_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    """Per generated token, when the request asked for logprobs and the backend returns them (HTTP, not
    streamed); ``None`` otherwise."""


@dataclass(frozen=True, slots=True)
class GenerationRestart:
    """Everything generated so far is void: the generation starts again from the beginning (another replica)."""

    reason: str


GenerationEvent = TextDelta | GenerationRestart | GenerationEnd


@runtime_checkable
class Backend(Protocol):
    """Something that generates text for chat messages: a server over HTTP, an in-process engine, a script.

    ``generate`` yields ``TextDelta`` events as text is produced (one event with all of it when the backend
    does not stream) and ends with exactly one ``GenerationEnd``. A backend that moves a failed generation
    elsewhere yields ``GenerationRestart`` first; what came before it is discarded. Failures raise ``TarsGuardError``
    subclasses. Closing the iterator early must stop the generation.
    """

    kind: str
    """A short name recorded in traces: ``http``, ``scripted``, ..."""

    @property
    def endpoint(self) -> str | None:
        """Where generations happen, safe to log (never holds a secret)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the generation for ``request``."""
        ...

    async def health(self, *, timeout: Timeout) -> Health:
        """Report whether the backend can serve, and which models it has."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources."""
        ...
