"""ChatTARS: the TARS reasoner as a LangChain chat model, with its reasoning, verdict and usage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError
from tarsguard import AsyncGuard, Backend, ConfigurationError, DecisionDetector, Guard, SamplingParams, Timeout, Verdict
from tarsguard.backends import GenerationRequest

from ._generation import Delta, Finished, generate
from ._loop import iterate_sync, run_sync
from ._messages import chat_messages

__all__ = ["ChatTARS"]

_SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed")
_CALL_KEYS = frozenset({*_SAMPLING_KEYS, "model", "timeout", "stream"})


class ChatTARS(BaseChatModel):
    """TARS as a chat model: the answer as the message content, the reasoning beside it, the verdict in metadata.

    Give it a ``Guard``/``AsyncGuard`` (its backend, detector, sampling and tracing are used), a tarsguard
    ``backend``, or a ``base_url`` (else ``TARSGUARD_BASE_URL``) of a vLLM or OpenAI-compatible server.

    The reply is an ``AIMessage`` whose content is TARS's answer. The reasoning is a ``reasoning`` content
    block (``message.content_blocks``; in ``content`` itself with ``output_version="v1"``) and
    ``additional_kwargs["reasoning_content"]``. ``response_metadata`` holds ``model_name``,
    ``finish_reason``, ``tarsguard_decision`` and the whole ``tarsguard_verdict``; ``usage_metadata`` the
    token counts, reasoning tokens included. Streams reasoning chunks, then answer chunks, as generated.

    ```python
    from langchain_tarsguard import ChatTARS

    llm = ChatTARS(base_url="http://localhost:8000/v1")
    message = llm.invoke("How do I kill a Python process?")
    message.content, message.response_metadata["tarsguard_decision"]
    ```
    """

    guard: Any = Field(default=None, exclude=True)
    """A tarsguard guard whose backend, detector, default sampling and tracer ChatTARS uses."""
    backend: Any = Field(default=None, exclude=True)
    """A tarsguard backend to generate with (instead of ``guard`` or ``base_url``)."""
    detector: Any = Field(default=None, exclude=True)
    """Reads the decision for the verdict; default: the guard's, else tarsguard's default detector."""
    base_url: str | None = Field(default_factory=from_env("TARSGUARD_BASE_URL", default=None))
    """``http://HOST:PORT/v1`` of the server, when neither ``guard`` nor ``backend`` is given."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env("TARSGUARD_API_KEY", default=None))
    """Sent as a Bearer token to ``base_url``; never logged or traced."""
    model_name: str | None = Field(default_factory=from_env("TARSGUARD_MODEL", default=None), alias="model")
    """The served model; default: the first one the server lists."""
    temperature: float | None = None
    """Default: the guard's, else 0.6 (the TARS authors' setting)."""
    top_p: float | None = None
    max_tokens: int | None = None
    """Default: the guard's, else 4096."""
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    """Seconds for the whole generation; default: tarsguard's (300 s)."""
    max_retries: int = 2
    """Retries of connect errors, 429 and 5xx (with ``base_url`` only; a given backend keeps its own)."""
    streaming: bool = False
    """Whether ``invoke`` streams (so callbacks see each token)."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    _backend: Backend = PrivateAttr()
    _detector: DecisionDetector = PrivateAttr()
    _defaults: SamplingParams = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        guard, backend = self.guard, self.backend
        if guard is not None and not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"guard must be a tarsguard Guard or AsyncGuard, got {type(guard).__name__}")
        if guard is not None and backend is not None:
            raise ConfigurationError("pass either guard= or backend=, not both")
        if guard is not None:
            backend = guard.backend
            self._defaults = guard.sampling
        else:
            self._defaults = SamplingParams()
        if backend is None:
            if not self.base_url:
                raise ConfigurationError(
                    "ChatTARS needs a server: pass base_url='http://HOST:PORT/v1' (or set TARSGUARD_BASE_URL), "
                    "guard=, or backend="
                )
            from tarsguard.backends.http import HTTPBackend

            api_key = self.api_key.get_secret_value() if self.api_key is not None else None
            backend = HTTPBackend(self.base_url, api_key=api_key, model=self.model_name, max_retries=self.max_retries)
        elif not isinstance(backend, Backend):
            raise ConfigurationError(
                f"backend must implement tarsguard's Backend protocol, got {type(backend).__name__}"
            )
        self._backend = backend
        if self.detector is not None:
            if not isinstance(self.detector, DecisionDetector):
                raise ConfigurationError(f"detector must have assess() and name, got {type(self.detector).__name__}")
            self._detector = self.detector
        elif guard is not None:
            self._detector = guard.detector
        else:
            from tarsguard.detect import default_detector

            self._detector = default_detector()
        if self.timeout is not None:
            Timeout.of(self.timeout)  # a bad value fails here, not on the first call
        self._sampling({})

    # -- LangChain's view of the model -----------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "chat-tars"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self._model_label(),
            "endpoint": self._backend.endpoint,
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

    def _model_label(self) -> str:
        return self.model_name or getattr(self._backend, "model", None) or "TARS"

    def _sampling(self, kwargs: Mapping[str, Any], stop: list[str] | None = None) -> SamplingParams:
        changes: dict[str, Any] = {key: getattr(self, key) for key in _SAMPLING_KEYS if getattr(self, key) is not None}
        changes.update({key: kwargs[key] for key in _SAMPLING_KEYS if kwargs.get(key) is not None})
        stops = stop if stop is not None else self.stop
        if stops:
            changes["stop"] = tuple(stops)
        if not changes:
            return self._defaults
        try:
            return SamplingParams.model_validate({**self._defaults.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid sampling parameters: {exc}") from None

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> GenerationRequest:
        unknown = set(kwargs) - _CALL_KEYS
        if unknown:
            raise ConfigurationError(f"ChatTARS does not take {', '.join(sorted(unknown))}")
        timeout = kwargs.get("timeout", self.timeout)
        return GenerationRequest(
            chat_messages(messages),
            self._sampling(kwargs, stop),
            Timeout.of(timeout),
            stream=True,
            model=kwargs.get("model") or self.model_name,
        )

    # -- generation ------------------------------------------------------------------------------------

    async def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> AsyncIterator[Delta | Finished]:
        request = self._request(messages, stop, kwargs)
        tracer = self.guard.tracer if self.guard is not None else None

        def record(verdict: Verdict) -> None:
            if tracer is not None:
                tracer.record(verdict, prompt=list(request.messages))

        async for item in generate(self._backend, request, self._detector, on_verdict=record):
            yield item

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for item in self._chunks(messages, stop, kwargs):
            yield _chunk(item)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for item in iterate_sync(self._chunks(messages, stop, kwargs)):
            yield _chunk(item)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        async for item in self._chunks(messages, stop, kwargs):
            if isinstance(item, Finished):
                return _result(item)
        raise AssertionError("a generation always ends with its verdict")  # pragma: no cover

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_sync(self._agenerate(messages, stop, **kwargs))


def _chunk(item: Delta | Finished) -> ChatGenerationChunk:
    if isinstance(item, Delta):
        if item.kind == "reasoning":
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": item.text})
            )
        return ChatGenerationChunk(message=AIMessageChunk(content=item.text))
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata=_usage_metadata(item.verdict),
            response_metadata=_response_metadata(item),
            chunk_position="last",
        ),
        generation_info={"finish_reason": item.verdict.trace.finish_reason},
    )


def _result(item: Finished) -> ChatResult:
    additional = {"reasoning_content": item.reasoning} if item.reasoning else {}
    message = AIMessage(
        content=item.answer,
        additional_kwargs=additional,
        response_metadata=_response_metadata(item),
        usage_metadata=_usage_metadata(item.verdict),
    )
    return ChatResult(
        generations=[
            ChatGeneration(message=message, generation_info={"finish_reason": item.verdict.trace.finish_reason})
        ],
        llm_output={"model_name": item.model},
    )


def _response_metadata(item: Finished) -> dict[str, Any]:
    verdict = item.verdict
    trace = verdict.trace
    return {
        "model_name": item.model or "",
        "finish_reason": trace.finish_reason,
        "request_id": trace.request_id,
        "tarsguard_decision": verdict.decision.value,
        "tarsguard_confidence": verdict.confidence,
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
