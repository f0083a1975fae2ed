"""In-process generation with Hugging Face transformers, on CPU or GPU, with concurrent requests batched."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._config import DEFAULT_TIMEOUT, Timeout
from .._exceptions import BackendError, BackendUnavailable, ConfigurationError, TarsGuardError
from .._types import Health, SamplingParams
from ._base import GenerationEnd, GenerationEvent, GenerationRequest, TextDelta
from ._embedded import ModelSource, announce, hub_access, load_error, model_source

if TYPE_CHECKING:
    import os

    import torch

__all__ = ["TransformersBackend"]

_STOP = object()


class TransformersBackend:
    """Generates in this process with Hugging Face transformers: a hub id, a local folder, or a GGUF file.

    The model loads on the first generation (or ``load()``), in bf16 on CUDA and fp32 on CPU unless ``dtype``
    says otherwise, and the prompt goes through the model's chat template. Generation runs on one worker
    thread; requests that arrive within ``batch_window`` seconds of each other (or wait while a batch runs)
    are generated together, left-padded, up to ``max_batch_size`` at a time. Each request streams its own
    tokens as they are generated; closing its iterator drops it from the batch.
    """

    kind = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_size: int = 8,
        batch_window: float = 0.02,
        revision: str | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
        quiet: bool = False,
    ) -> None:
        if max_batch_size < 1:
            raise ConfigurationError("max_batch_size must be >= 1")
        if not 0 <= batch_window < 10:
            raise ConfigurationError("batch_window must be between 0 and 10 seconds")
        self._source: ModelSource = model_source(model, gguf_file)
        self.model = name or self._source.name
        self._device = device
        self._dtype = dtype
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        self._revision = revision
        self._local_files_only = local_files_only
        self._trust_remote_code = trust_remote_code
        self._quiet = quiet
        self._lock = threading.Lock()
        self._runner: _Runner | None = None
        self._failure: TarsGuardError | None = None
        self._closed = False

    @property
    def endpoint(self) -> str:
        """``transformers://<model>`` (a local path or a hub id; never a secret)."""
        gguf = f"/{self._source.gguf_file}" if self._source.gguf_file else ""
        return f"transformers://{self._source.location}{gguf}"

    @property
    def device(self) -> str | None:
        """The device the model runs on, once loaded."""
        return self._runner.device if self._runner is not None else None

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._runner is not None

    def stats(self) -> dict[str, int]:
        """Work done so far: ``batches`` run, ``largest_batch``, ``generated_tokens`` (all rows), ``dropped``
        (requests closed before they finished)."""
        runner = self._runner
        return dict(runner.counters) if runner is not None else {}

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self._source.location!r}, device={self.device!r})"

    def load(self) -> None:
        """Load the model and tokenizer now (otherwise the first generation does); safe to call twice."""
        self._ensure_runner()

    def _ensure_runner(self) -> _Runner:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the transformers backend is closed")
            if self._runner is not None:
                return self._runner
            if self._failure is not None:
                raise self._failure
            try:
                if hub_access(self._source):
                    self._local_files_only = True
                self._runner = self._start_runner()
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise
                self._failure = load_error(self._source, exc, backend="transformers")
                raise self._failure from exc
            return self._runner

    def _start_runner(self) -> _Runner:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _torch_dtype(torch, self._dtype) or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        source = self._source
        announce(
            f"loading {source.location}{' / ' + source.gguf_file if source.gguf_file else ''} with transformers "
            f"on {device} ({str(dtype).removeprefix('torch.')}) ...",
            quiet=self._quiet,
        )
        started = time.monotonic()
        options: dict[str, Any] = {"revision": self._revision, "trust_remote_code": self._trust_remote_code}
        if self._local_files_only is not None:
            options["local_files_only"] = self._local_files_only
        if source.gguf_file:
            options["gguf_file"] = source.gguf_file
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        tokenizer: Any = AutoTokenizer.from_pretrained(source.location, **options)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError(
                f"the tokenizer of {source.location} has no chat template; use a chat (instruct) model"
            )
        model: Any = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **options)
        model.to(device)
        model.eval()
        if device == "cpu":
            _attend_grouped_heads_in_place(model)
        announce(f"{self.model} loaded in {time.monotonic() - started:.1f}s", quiet=self._quiet)
        runner = _Runner(model, tokenizer, device, self.model, self.max_batch_size, self.batch_window)
        runner.start()
        return runner

    async def _running(self) -> _Runner:
        runner = self._runner
        if runner is None:
            runner = await asyncio.to_thread(self._ensure_runner)
        return runner

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the generation for ``request``: one ``TextDelta`` per token (or one in all), then the end."""
        runner = await self._running()
        job = _Job(
            messages=[dict(m) for m in request.messages],
            sampling=request.sampling,
            stream=request.stream,
            loop=asyncio.get_running_loop(),
        )
        runner.submit(job)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, GenerationEnd):
                    return
        finally:
            job.cancelled = True

    async def health(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Health:
        """Healthy once the model is loaded (this loads it) and its worker thread runs."""
        started = time.perf_counter()
        try:
            runner = await self._running()
        except TarsGuardError as exc:
            # A failed load is a failure, not a latency: no latency_ms.
            return Health(ok=False, endpoint=self.endpoint, backend=self.kind, detail=str(exc))
        alive = runner.alive
        return Health(
            ok=alive,
            endpoint=self.endpoint,
            backend=self.kind,
            models=(self.model,),
            max_model_len=runner.context_length,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=None if alive else "the generation thread has stopped",
            extra={"device": runner.device, "dtype": runner.dtype, "max_batch_size": self.max_batch_size},
        )

    async def aclose(self) -> None:
        """Stop the worker thread (requests still waiting fail) and release the model."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.to_thread(runner.stop)


_GROUPED_SDPA = "tarsguard_grouped_sdpa"


def _attend_grouped_heads_in_place(model: Any) -> None:
    """Switch a CPU model on ``sdpa`` attention to a variant for padded decoding steps of grouped-query models.

    transformers' ``sdpa`` copies each key/value head once per query head it serves whenever an attention mask is
    given, as in every step of a left-padded batch; torch's own grouped-query support does the same sums without the
    copies (identical results; a step of 8 rows at 300 tokens of context took ~100 ms instead of ~125 on the test
    machine). Prompts and single unpadded rows still go through ``sdpa`` itself.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if _GROUPED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(_GROUPED_SDPA, _grouped_sdpa)
        AttentionMaskInterface.register(_GROUPED_SDPA, sdpa_mask)
    model.set_attn_implementation(_GROUPED_SDPA)


def _grouped_sdpa(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
) -> tuple[Any, None]:
    """``sdpa`` attention, with one-token queries under a mask reading grouped key/value heads directly."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if attention_mask is None or query.shape[2] != 1 or groups == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _torch_dtype(torch: Any, name: str | None) -> Any:
    if name is None or name == "auto":
        return None
    value = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ConfigurationError(f"dtype must be a torch dtype name such as 'bfloat16' or 'float32'; got {name!r}")
    return value


@dataclass(eq=False)
class _Job:
    """One request as the worker thread sees it; events go back to the requester's loop."""

    messages: list[dict[str, str]]
    sampling: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    request_id: str = field(default_factory=lambda: f"tf-{uuid.uuid4().hex}")
    cancelled: bool = False
    """Set by the requester when it stops listening; the worker drops the job at its next step."""

    def send(self, event: GenerationEvent | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the requester's loop is closed: nobody is listening any more
            self.cancelled = True


class _Outbox:
    """Events of one decoding step, handed to each requester's loop in one wake-up rather than one per event."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, GenerationEvent]]] = {}

    def add(self, job: _Job, event: GenerationEvent) -> None:
        self._by_loop.setdefault(job.loop, []).append((job, event))

    def flush(self) -> None:
        by_loop, self._by_loop = self._by_loop, {}
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the requester's loop is closed: nobody is listening any more
                for job, _ in items:
                    job.cancelled = True


def _deliver(items: list[tuple[_Job, GenerationEvent]]) -> None:
    for job, event in items:
        job.events.put_nowait(event)


class _Runner:
    """The worker thread that owns the model: forms batches from waiting jobs and decodes them."""

    def __init__(
        self, model: Any, tokenizer: Any, device: str, name: str, max_batch_size: int, batch_window: float
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.name = name
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        self.context_length: int | None = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else min(self.eos_ids, default=0)
        self._inbox: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tarsguard-transformers", daemon=True)
        self._stopping = False
        self.counters = {
            "batches": 0,
            "largest_batch": 0,
            "generated_tokens": 0,
            "dropped": 0,
            "prefix_hits": 0,
            "joined": 0,
        }
        self._prefix: tuple[list[int], list[tuple[Any, Any]]] | None = None
        """The last prompt prefix whose keys and values were kept (one row), reused by prompts that share it."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        # Only plain growing caches can take a prefix computed apart (not sliding windows or linear attention).
        self._plain_cache = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)

    def _new_cache(self) -> Any:
        """An empty cache for a batch: layers that grow in place for plain caches, transformers' own otherwise."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if self._plain_cache:
            layer = _growing_layer()
            cache.layers = [layer() for _ in cache.layers]
        return cache

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: _Job) -> None:
        if self._stopping or not self._thread.is_alive():
            raise BackendUnavailable("the transformers backend is closed")
        self._inbox.put(job)

    def stop(self) -> None:
        self._stopping = True
        self._inbox.put(_STOP)
        self._thread.join()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                item.send(BackendUnavailable("the transformers backend was closed before this request ran"))
        self.model = self.tokenizer = None

    def _serve(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    self._run(batch)
                except Exception as exc:
                    error = BackendError(f"transformers generation failed: {type(exc).__name__}: {exc}")
                    for job in batch:
                        job.send(error)

    def _next_batch(self) -> list[_Job] | None:
        first = self._inbox.get()
        if first is _STOP:
            return None
        assert isinstance(first, _Job)
        batch = [first]
        self._take_waiting(batch, self.max_batch_size, time.monotonic() + self.batch_window)
        return batch

    def _take_waiting(self, jobs: list[_Job], limit: int, deadline: float | None) -> None:
        """Move jobs from the inbox to ``jobs`` until it holds ``limit``, waiting for them until ``deadline``
        (``None``: only those already waiting)."""
        while len(jobs) < limit:
            try:
                if deadline is None:
                    item = self._inbox.get_nowait()
                else:
                    item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if item is _STOP:
                self._inbox.put(_STOP)  # finish this batch, then stop
                return
            assert isinstance(item, _Job)
            jobs.append(item)

    def _run(self, jobs: list[_Job]) -> None:
        """Decode ``jobs`` together; jobs that arrive meanwhile join at a step's end while there is room.

        Every job that joins is appended to ``jobs``, so that a failure reaches it too.
        """
        import torch

        outbox = _Outbox()
        counters = self.counters
        batch = self._prefill(jobs, outbox)
        if batch is None:
            return
        counters["batches"] += 1
        counters["largest_batch"] = max(counters["largest_batch"], len(batch.slots))
        batch = batch.padded()
        while True:
            if self._stopping:
                for slot in batch.slots:
                    if slot is not None:
                        slot.job.send(BackendUnavailable("the transformers backend was closed during the generation"))
                return
            tokens = self._choose(batch.logits, batch.slots)
            live = self._advance(batch.slots, tokens)
            joined = self._join(len(live), jobs, outbox) if self._plain_cache else None
            outbox.flush()
            if joined is not None:
                # Finished rows leave, the new rows come in, and the batch is padded to a fast shape again.
                joining, first_tokens = joined
                tokens = [*(tokens[i] for i in live), *first_tokens]
                rows = len(tokens)
                counters["largest_batch"] = max(counters["largest_batch"], rows)
                batch = (_Batch.merged(batch.take(live), joining, self._new_cache()) if live else joining).padded()
                tokens += [tokens[0]] * (len(batch.slots) - rows)
            elif not live:
                return
            elif (size := _batch_shape(len(live))) < len(batch.slots):
                # A finished row keeps its slot (its tokens are ignored) until the batch can shrink to a cheaper shape.
                padding = [i for i, slot in enumerate(batch.slots) if slot is None][: size - len(live)]
                kept = sorted(live + padding)
                batch = batch.take(kept)
                tokens = [tokens[i] for i in kept]
            step = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.slots), 1))], dim=1)
            out = self.model(
                input_ids=step,
                attention_mask=batch.mask,
                position_ids=batch.positions,
                past_key_values=batch.cache,
                use_cache=True,
            )
            batch.positions = batch.positions + 1
            batch.logits = out.logits[:, -1, :]

    def _advance(self, slots: list[_Row | None], tokens: list[int]) -> list[int]:
        """Give each row its token; finished and dropped rows leave their slots (``None``). Returns the live slots."""
        counters = self.counters
        live = []
        for i, slot in enumerate(slots):
            if slot is None:
                continue
            counters["generated_tokens"] += 1
            if slot.job.cancelled:
                counters["dropped"] += 1
                slots[i] = None
            elif slot.push(tokens[i]):
                slots[i] = None
            else:
                live.append(i)
        return live

    def _join(self, running: int, jobs: list[_Job], outbox: _Outbox) -> tuple[_Batch, list[int]] | None:
        """Waiting jobs, up to the room beside ``running`` rows: prompted, with their first tokens (or ``None``)."""
        waiting: list[_Job] = []
        self._take_waiting(waiting, self.max_batch_size - running, None)
        if not waiting:
            return None
        jobs += waiting
        self.counters["joined"] += len(waiting)
        joining = self._prefill(waiting, outbox)
        if joining is None:
            return None
        tokens = self._choose(joining.logits, joining.slots)
        live = self._advance(joining.slots, tokens)
        if not live:
            return None
        return joining.take(live), [tokens[i] for i in live]

    def _prefill(self, jobs: list[_Job], outbox: _Outbox) -> _Batch | None:
        """Run the prompts of ``jobs`` (left-padded, one row each): their cache and next-token logits."""
        import torch

        rows: list[_Row] = []
        for job in jobs:
            if job.cancelled:
                continue
            try:
                rows.append(self._row(job, outbox))
            except TarsGuardError as exc:
                job.send(exc)
        if not rows:
            return None
        prompts = [row.prompt for row in rows]
        # The prompts' shared beginning (the chat template's system turn, at least) is computed once and kept:
        # its keys and values are copied into every row, and only the rest of each prompt is run.
        shared = self._shared_prefix(prompts)
        cache = self._new_cache()
        for layer, (keys, values) in enumerate(shared):
            cache.update(keys.expand(len(prompts), -1, -1, -1), values.expand(len(prompts), -1, -1, -1), layer)
        done = shared[0][0].shape[-2] if shared else 0
        # Layout per row: [shared prefix][padding][rest of the prompt]; the mask skips the padding.
        width = max(len(prompt) for prompt in prompts) - done
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), done + width), dtype=torch.long)
        mask[:, :done] = 1
        for i, prompt in enumerate(prompts):
            rest = prompt[done:]
            ids[i, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            mask[i, done + width - len(rest) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, done:]
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return _Batch(cache, mask, positions[:, -1:] + 1, list(rows), out.logits[:, -1, :])

    def _shared_prefix(self, prompts: list[list[int]]) -> list[tuple[Any, Any]]:
        """Keys and values (one row, per layer) of the longest beginning every prompt shares, if worth it.

        At least one token of each prompt is left to run, so every row gets its own next-token logits.
        """
        import torch
        from transformers import DynamicCache

        limit = min(len(p) for p in prompts) - 1
        common = prompts[0][:limit]
        for prompt in prompts[1:]:
            common = common[: _common_length(common, prompt)]
        kept = self._prefix
        if kept is not None:
            reuse = _common_length(kept[0], common)
            if reuse >= _MIN_SHARED:
                self.counters["prefix_hits"] += 1
                return [(k[:, :, :reuse], v[:, :, :reuse]) for k, v in kept[1]]
        if len(common) < _MIN_SHARED or not self._plain_cache:
            return []
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([common], dtype=torch.long, device=self.device)
        self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        states = [(getattr(layer, "keys"), getattr(layer, "values")) for layer in cache.layers]  # noqa: B009
        self._prefix = (common, states)
        return states

    def _row(self, job: _Job, outbox: _Outbox) -> _Row:
        tok = self.tokenizer
        try:
            text = tok.apply_chat_template(job.messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:
            raise BackendError(f"the chat template of {self.name} failed: {type(exc).__name__}: {exc}") from exc
        prompt: list[int] = list(tok(text, add_special_tokens=False)["input_ids"])
        budget = job.sampling.max_tokens
        if self.context_length is not None:
            room = self.context_length - len(prompt)
            if room < 1:
                raise BackendError(
                    f"the prompt has {len(prompt)} tokens; {self.name} takes at most {self.context_length}"
                )
            budget = min(budget, room)
        return _Row(job, prompt, budget, _Detokenizer(tok), self.eos_ids, self.name, self.device, outbox)

    def _choose(self, logits: torch.Tensor, rows: Sequence[_Row | None]) -> list[int]:
        import torch

        if all(row is None or row.job.sampling.temperature == 0 for row in rows):
            return [int(t) for t in logits.argmax(dim=-1).tolist()]
        chosen: list[int] = []
        for i, row in enumerate(rows):
            if row is None:
                chosen.append(self.pad_id)
                continue
            params = row.job.sampling
            if params.temperature == 0:
                chosen.append(int(logits[i].argmax()))
                continue
            probs = torch.softmax(logits[i].float() / params.temperature, dim=-1)
            if params.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            chosen.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return chosen


@dataclass(eq=False)
class _Batch:
    """Rows decoding together: their keys and values, attention mask, next positions, slots and latest logits.

    Rows are left-padded to one length; the mask marks padding. A slot is ``None`` for a finished row or a
    padding copy, whose tokens are ignored.
    """

    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    slots: list[_Row | None]
    logits: torch.Tensor

    def take(self, index: list[int]) -> _Batch:
        """Keep the rows at ``index``, in that order (in place); a repeated row comes back as padding."""
        if index == list(range(len(self.slots))):
            return self
        import torch

        at = torch.tensor(index, device=self.mask.device)
        self.cache.batch_select_indices(at)
        self.mask, self.positions, self.logits = self.mask[at], self.positions[at], self.logits[at]
        slots: list[_Row | None] = []
        for n, i in enumerate(index):
            slots.append(self.slots[i] if i not in index[:n] else None)
        self.slots = slots
        return self

    def padded(self) -> _Batch:
        """The batch (in place) with copies of its first row appended up to a shape with fast kernels."""
        rows = len(self.slots)
        return self.take([*range(rows), *[0] * (_batch_shape(rows) - rows)])

    @staticmethod
    def merged(a: _Batch, b: _Batch, cache: Any) -> _Batch:
        """The rows of ``a`` then ``b`` in ``cache`` (empty), the shorter side left-padded; columns that are padding
        in every row go."""
        import torch
        from torch.nn.functional import pad

        length = max(a.mask.shape[1], b.mask.shape[1])
        mask = torch.cat([pad(m, (length - m.shape[1], 0)) for m in (a.mask, b.mask)])
        start = int(mask.any(dim=0).int().argmax())
        for layer, (x, y) in enumerate(zip(a.cache.layers, b.cache.layers, strict=True)):
            keys, values = (
                torch.cat([pad(t, (0, 0, length - t.shape[-2], 0)) for t in pair])[:, :, start:]
                for pair in ((x.keys, y.keys), (x.values, y.values))
            )
            cache.update(keys, values, layer)
        return _Batch(
            cache,
            mask[:, start:],
            torch.cat([a.positions, b.positions]),
            a.slots + b.slots,
            torch.cat([a.logits, b.logits]),
        )


class _Detokenizer:
    """Turns one row's tokens into text as they come, holding back bytes of an unfinished character."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        decode = self._tok.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self.ids[self._prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return str(after[len(before) :])
        return ""


class _Row:
    """One request inside a running batch: its budget, stop rules and the text it has released so far."""

    def __init__(
        self,
        job: _Job,
        prompt: list[int],
        budget: int,
        detokenizer: _Detokenizer,
        eos_ids: frozenset[int],
        name: str,
        device: str,
        outbox: _Outbox,
    ) -> None:
        self.job = job
        self.prompt = prompt
        self.budget = budget
        self.detok = detokenizer
        self.eos_ids = eos_ids
        self.name = name
        self.stops = tuple(s for s in job.sampling.stop or () if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.pending_steps = 0
        self.released: list[str] = []
        self.released_steps = 0
        self.generator: Any = None
        self.outbox = outbox
        """Where the row's events wait until the step's end (shared by every row of its batch)."""
        if job.sampling.seed is not None and job.sampling.temperature > 0:
            import torch

            self.generator = torch.Generator(device=device).manual_seed(job.sampling.seed)

    def push(self, token: int) -> bool:
        """Take the next token; release what is certain; return whether the row has finished."""
        generated = len(self.detok.ids) + 1
        if token in self.eos_ids:
            self.detok.ids.append(token)
            self._release(self.pending, self.pending_steps + 1)
            return self._finish("stop")
        self.pending += self.detok.push(token)
        self.pending_steps += 1
        if self.stops:
            # Released text never holds the start of a stop string: the last ``_hold`` characters wait here.
            hits = [at for at in (self.pending.find(s) for s in self.stops) if at != -1]
            if hits:
                self._release(self.pending[: min(hits)], self.pending_steps)
                return self._finish("stop")
        if generated >= self.budget:
            self._release(self.pending, self.pending_steps)
            return self._finish("length")
        if self.stops:
            cut = len(self.pending) - self._hold
            if cut > 0:
                text, self.pending = self.pending[:cut], self.pending[cut:]
                self._release(text, self.pending_steps)
                self.pending_steps = 0
        elif self.pending:
            self._release(self.pending, self.pending_steps)
            self.pending, self.pending_steps = "", 0
        return False

    def _release(self, text: str, steps: int) -> None:
        if not text:
            return
        self.released_steps += steps
        if self.job.stream:
            self.outbox.add(self.job, TextDelta(content=text, content_steps=max(1, steps)))
        else:
            self.released.append(text)

    def _finish(self, reason: str) -> bool:
        job = self.job
        if not job.stream:
            self.outbox.add(job, TextDelta(content="".join(self.released), content_steps=max(1, len(self.detok.ids))))
        self.outbox.add(
            job,
            GenerationEnd(
                finish_reason=reason,
                model=self.name,
                request_id=job.request_id,
                prompt_tokens=len(self.prompt),
                completion_tokens=len(self.detok.ids),
            ),
        )
        return True


_MIN_SHARED = 8
"""Shared prompt tokens below which computing them apart is not worth a forward pass of its own."""
_SPARE_STEPS = 128
"""Room a growing cache layer leaves for later tokens, at least (a quarter of its length when that is more)."""


@functools.cache
def _growing_layer() -> type[Any]:
    """A plain cache layer that writes each step's keys and values into room kept spare at its end.

    transformers' ``DynamicLayer`` concatenates at every step, copying the whole layer: on the test machine that was
    ~10 ms of a ~90 ms step for 8 rows at 100 tokens, and it grows with the length.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        _room: tuple[Any, Any] | None = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            keys: Any = self.keys
            length = keys.shape[-2] if keys.numel() else 0
            end = length + key_states.shape[-2]
            room = self._room
            if (
                room is None
                or end > room[0].shape[-2]
                or room[0].shape[0] != key_states.shape[0]
                or (length and keys.data_ptr() != room[0].data_ptr())  # rows were selected: a new tensor
            ):
                capacity = end + max(_SPARE_STEPS, end // 4)
                room = tuple(s.new_empty((*s.shape[:2], capacity, s.shape[-1])) for s in (key_states, value_states))
                if length:
                    room[0][:, :, :length] = keys
                    room[1][:, :, :length] = self.values
                self._room = room
            room[0][:, :, length:end] = key_states
            room[1][:, :, length:end] = value_states
            self.keys, self.values = room[0][:, :, :end], room[1][:, :, :end]
            return self.keys, self.values

    return GrowingLayer


def _batch_shape(live: int) -> int:
    """The batch size a step runs at with ``live`` unfinished rows: one row, or a multiple of four.

    Matrix kernels for a handful of rows are much slower at some sizes (on the 2-core test machine a step with 2, 3
    or 7 rows took 90-120 ms against 75-85 ms with 4, 5, 6 or 8), and a padding row costs next to nothing, so a
    batch is padded up to the next multiple of four once its prompts have run and, as rows finish, keeps them as
    padding.
    """
    return 1 if live == 1 else -(-live // 4) * 4


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Sequence):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)
