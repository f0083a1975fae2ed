"""ChatTARS: the TARS reasoner as a LangChain chat model, with its reasoning, verdict and usage."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError
from tarsguard import (
    AsyncGuard,
    Backend,
    ConfigurationError,
    DecisionDetector,
    Guard,
    SamplingOverrides,
    SamplingParams,
    TextChunk,
    Timeout,
    Verdict,
)

from ._loop import iterate_sync, run_sync
from ._messages import chat_messages

__all__ = ["ChatTARS"]

_SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed")
_CALL_KEYS = frozenset({*_SAMPLING_KEYS, "model", "timeout", "stream"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's checks: the prompt, the guard that checks it, and its options."""

    prompt: list[dict[str, str]]
    guard: Guard | AsyncGuard
    timeout: float | None
    sampling: SamplingOverrides
    model: str | None
    request_model: str | None
    """A model other than the guard's, asked for in this call."""


class ChatTARS(BaseChatModel):
    """TARS as a chat model: the answer as the message content, the reasoning beside it, the verdict in metadata.

    Give it a ``Guard``/``AsyncGuard`` (its whole configuration applies: backend, detector, sampling, timeout,
    error policy, cache, tracing), a tarsguard ``backend``, or a ``base_url`` (else ``TARSGUARD_BASE_URL``) of
    a vLLM or OpenAI-compatible server. Each reply is one tarsguard check, never stopped early.

    The reply is an ``AIMessage`` whose content is TARS's answer. The reasoning is a ``reasoning`` content
    block (``message.content_blocks``; in ``content`` itself with ``output_version="v1"``) and
    ``additional_kwargs["reasoning_content"]``. ``response_metadata`` holds ``model_name``,
    ``finish_reason``, ``tarsguard_decision``, ``tarsguard_allowed`` (the verdict's ``allowed``: answered with at
    least the guard's ``min_confidence``) and the whole ``tarsguard_verdict``; ``usage_metadata`` the
    token counts, reasoning tokens included. Streams reasoning chunks, then answer chunks, as generated.

    ```python
    from langchain_tarsguard import ChatTARS

    llm = ChatTARS(base_url="http://localhost:8000/v1")
    message = llm.invoke("How do I kill a Python process?")
    message.content, message.response_metadata["tarsguard_decision"]
    ```
    """

    guard: Any = Field(default=None, exclude=True)
    """A tarsguard guard that runs the checks. With ``on_error="decline"``/``"allow"`` a failed check is a
    reply with no content and an undetermined verdict, not an exception."""
    backend: Any = Field(default=None, exclude=True)
    """A tarsguard backend to generate with (instead of ``guard`` or ``base_url``)."""
    detector: Any = Field(default=None, exclude=True)
    """Reads the decision for the verdict (with ``backend``/``base_url``; a guard brings its own); default:
    tarsguard's default detector."""
    base_url: str | None = Field(default_factory=from_env("TARSGUARD_BASE_URL", default=None))
    """``http://HOST:PORT/v1`` of the server, when neither ``guard`` nor ``backend`` is given."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env("TARSGUARD_API_KEY", default=None))
    """Sent as a Bearer token to ``base_url``; never logged or traced."""
    model_name: str | None = Field(default_factory=from_env("TARSGUARD_MODEL", default=None), alias="model")
    """The served model; default: the guard's, else the first one the server lists."""
    temperature: float | None = None
    """Default: the guard's, else 0.6 (the TARS authors' setting)."""
    top_p: float | None = None
    max_tokens: int | None = None
    """Default: the guard's, else 4096."""
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    """Seconds for the whole generation; default: the guard's, else tarsguard's (300 s)."""
    max_retries: int = 2
    """Retries of connect errors, 429 and 5xx (with ``base_url`` only; a given backend keeps its own)."""
    streaming: bool = False
    """Whether ``invoke`` streams (so callbacks see each token)."""
    min_confidence: float | None = None
    """The confidence an answered decision needs for the verdict to allow the prompt
    (``response_metadata["tarsguard_allowed"]``), with ``backend``/``base_url``; a guard brings its own.
    Default: ``TARSGUARD_MIN_CONFIDENCE``, else tarsguard's default."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    _guard: Guard | AsyncGuard = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        guard, backend, detector = self.guard, self.backend, self.detector
        if guard is not None and not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"guard must be a tarsguard Guard or AsyncGuard, got {type(guard).__name__}")
        if guard is not None and backend is not None:
            raise ConfigurationError("pass either guard= or backend=, not both")
        if backend is not None and not isinstance(backend, Backend):
            raise ConfigurationError(
                f"backend must implement tarsguard's Backend protocol, got {type(backend).__name__}"
            )
        if detector is not None and not isinstance(detector, DecisionDetector):
            raise ConfigurationError(f"detector must have assess() and name, got {type(detector).__name__}")
        if guard is not None and detector is not None:
            raise ConfigurationError("pass the detector to the guard (Guard(detector=...)), not to ChatTARS")
        if guard is not None and self.min_confidence is not None:
            raise ConfigurationError("pass min_confidence to the guard (Guard(min_confidence=...)), not to ChatTARS")
        if self.timeout is not None:
            Timeout.of(self.timeout)  # a bad value fails here, not on the first call
        if guard is None:
            if backend is not None:
                guard = AsyncGuard(
                    backend=backend,
                    model=self.model_name,
                    timeout=self.timeout,
                    detector=detector,
                    min_confidence=self.min_confidence,
                )
            elif self.base_url:
                guard = AsyncGuard(
                    self.base_url,
                    model=self.model_name,
                    api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
                    max_retries=self.max_retries,
                    timeout=self.timeout,
                    detector=detector,
                    min_confidence=self.min_confidence,
                )
            else:
                raise ConfigurationError(
                    "ChatTARS needs a server: pass base_url='http://HOST:PORT/v1' (or set TARSGUARD_BASE_URL), "
                    "guard=, or backend="
                )
        self._guard = guard
        self._sampling({})

    # -- LangChain's view of the model -----------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "chat-tars"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self._model_label(),
            "endpoint": self._guard.backend.endpoint,
            **self._sampling({}).model_dump(exclude_none=True),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        sampling = self._sampling(kwargs)
        params = LangSmithParams(
            ls_provider="tarsguard",
            ls_model_name=kwargs.get("model") or self._model_label(),
            ls_model_type="chat",
            ls_temperature=sampling.temperature,
            ls_max_tokens=sampling.max_tokens,
        )
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _configured_model(self) -> str | None:
        return self.model_name or getattr(self._guard.backend, "model", None)

    def _model_label(self) -> str:
        return self._configured_model() or "TARS"

    def _sampling(self, kwargs: Mapping[str, Any], stop: list[str] | None = None) -> SamplingParams:
        changes: dict[str, Any] = {key: getattr(self, key) for key in _SAMPLING_KEYS if getattr(self, key) is not None}
        changes.update({key: kwargs[key] for key in _SAMPLING_KEYS if kwargs.get(key) is not None})
        stops = stop if stop is not None else self.stop
        if stops:
            changes["stop"] = tuple(stops)
        defaults = self._guard.sampling
        if not changes:
            return defaults
        try:
            return SamplingParams.model_validate({**defaults.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid sampling parameters: {exc}") from None

    def _call(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]) -> _Call:
        unknown = set(kwargs) - _CALL_KEYS
        if unknown:
            raise ConfigurationError(f"ChatTARS does not take {', '.join(sorted(unknown))}")
        params = self._sampling(kwargs, stop)
        sampling: SamplingOverrides = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            sampling["seed"] = params.seed
        if params.stop:
            sampling["stop"] = params.stop
        model = kwargs.get("model") or None
        return _Call(
            prompt=chat_messages(messages),
            guard=self._guard,
            timeout=kwargs.get("timeout", self.timeout),
            sampling=sampling,
            model=model or self.model_name,
            request_model=None if model == self._configured_model() else model,
        )

    # -- generation ------------------------------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._call(messages, stop, kwargs)
        guard = call.guard
        items: Iterator[TextChunk | Verdict]
        if isinstance(guard, Guard):
            items = guard.stream(
                call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
            )
        else:
            items = iterate_sync(
                guard.stream(
                    call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
                )
            )
        for item in items:
            yield _chunk(item, call.model)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._call(messages, stop, kwargs)
        guard = call.guard
        items: AsyncIterator[TextChunk | Verdict]
        if isinstance(guard, AsyncGuard):
            items = guard.stream(
                call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
            )
        else:
            items = _in_thread(
                guard.stream(
                    call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
                )
            )
        async for item in items:
            yield _chunk(item, call.model)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._call(messages, stop, kwargs)
        guard = call.guard
        if isinstance(guard, Guard):
            verdict = guard.check(
                call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
            )
        else:
            verdict = run_sync(
                guard.check(
                    call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
                )
            )
        return _result(verdict, call.model)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._call(messages, stop, kwargs)
        guard = call.guard
        if isinstance(guard, AsyncGuard):
            verdict = await guard.check(
                call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
            )
        else:
            verdict = await asyncio.to_thread(
                lambda: guard.check(
                    call.prompt, timeout=call.timeout, early_stop=False, model=call.request_model, **call.sampling
                )
            )
        return _result(verdict, call.model)


async def _in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """A blocking iterator's items, each fetched on a worker thread so that the event loop keeps running."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chattars-stream")

    def step() -> list[T]:
        return context.run(list, itertools.islice(items, 1))

    def close() -> None:
        closer = getattr(items, "close", None)
        if closer is not None:
            context.run(closer)

    try:
        while batch := await loop.run_in_executor(worker, step):
            yield batch[0]
    finally:
        # A single worker: the close waits for a step still in flight instead of racing it.
        closing = loop.run_in_executor(worker, close)
        worker.shutdown(wait=False)
        await closing


def _chunk(item: TextChunk | Verdict, model: str | None) -> ChatGenerationChunk:
    if isinstance(item, TextChunk):
        if item.kind == "restart":  # a replica failed mid-generation; chunks already out cannot be taken back
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs={"tarsguard_restart": item.text})
            )
        if item.kind == "reasoning":
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": item.text})
            )
        return ChatGenerationChunk(message=AIMessageChunk(content=item.text))
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata=_usage_metadata(item),
            response_metadata=_response_metadata(item, model),
            chunk_position="last",
        ),
        generation_info={"finish_reason": item.trace.finish_reason},
    )


def _result(verdict: Verdict, model: str | None) -> ChatResult:
    additional = {"reasoning_content": verdict.reasoning} if verdict.reasoning else {}
    metadata = _response_metadata(verdict, model)
    message = AIMessage(
        content=verdict.answer,
        additional_kwargs=additional,
        response_metadata=metadata,
        usage_metadata=_usage_metadata(verdict),
    )
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info={"finish_reason": verdict.trace.finish_reason})],
        llm_output={"model_name": metadata["model_name"]},
    )


def _response_metadata(verdict: Verdict, model: str | None) -> dict[str, Any]:
    trace = verdict.trace
    return {
        # The name asked for wins: a server may report another name of the same model.
        "model_name": model or trace.model or "",
        "finish_reason": trace.finish_reason,
        "request_id": trace.request_id,
        "tarsguard_decision": verdict.decision.value,
        "tarsguard_confidence": verdict.confidence,
        "tarsguard_allowed": verdict.allowed,
        "tarsguard_verdict_id": trace.verdict_id,
        "tarsguard_verdict": verdict.model_dump(mode="json"),
    }


def _usage_metadata(verdict: Verdict) -> UsageMetadata | None:
    usage = verdict.trace.usage
    if usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    metadata = UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )
    if usage.reasoning_tokens is not None:
        metadata["output_token_details"] = {"reasoning": usage.reasoning_tokens}
    return metadata
