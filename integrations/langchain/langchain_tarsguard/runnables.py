"""GuardRunnable and with_guard: screen a runnable's input with TARS, then pass it on, answer, raise or reroute."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import patch_config
from tarsguard import Assessment, AsyncGuard, ConfigurationError, Guard, GuardedText, Timeout, Verdict
from tarsguard.middleware._core import DEFAULT_SCOPE, SCOPES, Part, Screener, decline_text

from ._errors import GuardDeclined
from ._messages import Scope, message_text, screened_parts

__all__ = ["GuardRunnable", "ScreenedText", "with_guard"]

OnDecline = Literal["answer", "raise"] | str | Runnable[Any, Any] | Callable[[Any], Any]
"""``"answer"`` (TARS's answer as the output), ``"raise"`` (``GuardDeclined``), another string (that message
as the output), or a runnable (or function) that gets the original input instead of the chain."""

_END = object()


class ScreenedText(str):
    """A chain's text output carrying the decision detector's ``assessment`` of it (output screening)."""

    assessment: Assessment

    def __new__(cls, text: str, assessment: Assessment) -> ScreenedText:
        obj = super().__new__(cls, text)
        obj.assessment = assessment
        return obj

    def __getnewargs__(self) -> tuple[str, Assessment]:  # type: ignore[override]
        return str(self), self.assessment


class GuardRunnable(Runnable[Any, Any]):
    """Screens a runnable's input with TARS before it runs.

    The input (a string, chat messages, a ``PromptValue``, or a dict holding one under ``input_key``; by
    default the first of ``input``, ``question``, ``query``, ``messages``) is checked by ``guard``. When the
    verdict allows it, the input goes on unchanged: to ``chain`` if there is one (``guard | chain`` and
    ``with_guard(chain, guard)`` build that), else out as the output. Otherwise ``on_decline`` decides:
    TARS's own answer as an ``AIMessage`` (a string when the chain outputs strings), ``GuardDeclined``, a fixed
    message, or a fallback runnable that gets the original input.

    ``screen`` chooses what is checked: every part of the input the model reads (``"all"``, the default: system,
    user and assistant turns, tool results, tool calls and names, each on its own; any part that is not allowed
    blocks), the conversation up to the latest user turn and what it leaves out (``"conversation"``), or only
    the latest user turn (``"last"``). The reply to a decline (``on_decline="answer"``) is TARS's own complete
    decline, else tarsguard's ``DEFAULT_DECLINE_MESSAGE``.

    ``parallel=True`` starts the chain while TARS reasons and discards (cancels) its output on a decline;
    streamed output is held until the verdict. ``screen_output=True`` reads the chain's own answer with the
    guard's decision detector and attaches the assessment (``response_metadata["tarsguard_output"]`` on a
    message, ``ScreenedText.assessment`` on a string).

    Callbacks see the check as a ``tarsguard_check`` run and the verdict as a ``tarsguard_verdict`` run whose
    metadata (``tarsguard_decision``, ``tarsguard_confidence``, ``tarsguard_verdict_id``,
    ``tarsguard_allowed``) and tags (``tarsguard``, ``tarsguard:<decision>``) are also given to the chain's runs.
    A check that fails raises its tarsguard error unless the guard has ``on_error="decline"`` or ``"allow"``.
    """

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        chain: Runnable[Any, Any] | Callable[[Any], Any] | None = None,
        *,
        on_decline: OnDecline = "answer",
        input_key: str | None = None,
        screen: Scope = DEFAULT_SCOPE,
        parallel: bool = False,
        screen_output: bool = False,
        timeout: float | Timeout | None = None,
        name: str = "tarsguard",
    ) -> None:
        if not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"guard must be a tarsguard Guard or AsyncGuard, got {type(guard).__name__}")
        if screen not in SCOPES:
            raise ConfigurationError(f"screen must be one of {', '.join(SCOPES)}; got {screen!r}")
        if isinstance(on_decline, str):
            self._fallback: Runnable[Any, Any] | None = None
        elif isinstance(on_decline, Runnable) or callable(on_decline):
            self._fallback = coerce_to_runnable(on_decline)
        else:
            raise ConfigurationError('on_decline must be "answer", "raise", a message, or a runnable')
        self.guard = guard
        self.chain: Runnable[Any, Any] | None = None if chain is None else coerce_to_runnable(chain)
        if parallel and self.chain is None:
            raise ConfigurationError("parallel=True needs a chain to run beside the check: use guard | chain")
        if screen_output and self.chain is None:
            raise ConfigurationError("screen_output=True needs a chain whose output to screen: use guard | chain")
        self.on_decline = on_decline
        self.input_key = input_key
        self.screen: Scope = screen
        self.parallel = parallel
        self.screen_output = screen_output
        self.timeout = timeout
        self.name = name
        self._screener = Screener(guard, timeout, fail_closed=False)
        self._check_step: Runnable[Any, Verdict] = RunnableLambda(
            self._check_blocking, afunc=self._check_async, name="tarsguard_check"
        )

    def __repr__(self) -> str:
        chain = "" if self.chain is None else f", chain={self.chain!r}"
        return f"GuardRunnable(guard={self.guard!r}{chain}, on_decline={self.on_decline!r}, parallel={self.parallel})"

    def _options(self) -> dict[str, Any]:
        return {
            "on_decline": self.on_decline,
            "input_key": self.input_key,
            "screen": self.screen,
            "parallel": self.parallel,
            "screen_output": self.screen_output,
            "timeout": self.timeout,
            "name": self.name,
        }

    def with_chain(self, chain: Runnable[Any, Any] | Callable[[Any], Any]) -> GuardRunnable:
        """This guard in front of ``chain`` (after any chain it already guards)."""
        nxt = coerce_to_runnable(chain)
        return GuardRunnable(self.guard, nxt if self.chain is None else self.chain | nxt, **self._options())

    def __or__(self, other: Any) -> GuardRunnable:  # type: ignore[override]
        """``guard | chain`` guards the chain: on a decline it does not run."""
        return self.with_chain(other)

    # -- the check -----------------------------------------------------------------------------------

    def _check_blocking(self, parts: list[Part]) -> Verdict:
        return self._screener.screen(parts)

    async def _check_async(self, parts: list[Part]) -> Verdict:
        return await self._screener.ascreen(parts)

    def _prompt(self, value: Any) -> list[Part]:
        return screened_parts(value, input_key=self.input_key, scope=self.screen)

    # -- what follows the verdict ----------------------------------------------------------------------

    def _action(self, verdict: Verdict) -> str:
        if verdict.allowed:
            return "pass"
        if self._fallback is not None:
            return "fallback"
        return "raise" if self.on_decline == "raise" else "answer"

    def _verdict_config(self, config: RunnableConfig, verdict: Verdict) -> RunnableConfig:
        metadata = {
            **(config.get("metadata") or {}),
            "tarsguard_decision": verdict.decision.value,
            "tarsguard_confidence": verdict.confidence,
            "tarsguard_verdict_id": verdict.trace.verdict_id,
            "tarsguard_allowed": verdict.allowed,
        }
        tags = [*(config.get("tags") or []), "tarsguard", f"tarsguard:{verdict.decision.value}"]
        return {**config, "metadata": metadata, "tags": tags}

    def _parallel_config(self, config: RunnableConfig) -> RunnableConfig:
        metadata = {**(config.get("metadata") or {}), "tarsguard_mode": "parallel"}
        return {**config, "metadata": metadata}

    def _summary(self, verdict: Verdict) -> dict[str, Any]:
        return {
            "decision": verdict.decision.value,
            "confidence": verdict.confidence,
            "verdict_id": verdict.trace.verdict_id,
            "allowed": verdict.allowed,
            "evidence": list(verdict.evidence),
        }

    def _mark(self, verdict: Verdict, action: str, config: RunnableConfig) -> None:
        marker: Runnable[Any, dict[str, str]] = RunnableLambda(lambda _: {"action": action}, name="tarsguard_verdict")
        marker.invoke(self._summary(verdict), self._verdict_config(config, verdict))

    async def _amark(self, verdict: Verdict, action: str, config: RunnableConfig) -> None:
        marker: Runnable[Any, dict[str, str]] = RunnableLambda(lambda _: {"action": action}, name="tarsguard_verdict")
        await marker.ainvoke(self._summary(verdict), self._verdict_config(config, verdict))

    def _declined_output(self, verdict: Verdict) -> Any:
        if self.on_decline == "raise":
            raise GuardDeclined(verdict)
        text = decline_text(verdict) if self.on_decline == "answer" else cast(str, self.on_decline)
        if self.chain is not None and _outputs_text(self.chain):
            return GuardedText(text, verdict)
        return AIMessage(
            content=text,
            name=self.name,
            response_metadata={
                "tarsguard_decision": verdict.decision.value,
                "tarsguard_confidence": verdict.confidence,
                "tarsguard_verdict_id": verdict.trace.verdict_id,
                "tarsguard_verdict": verdict.model_dump(mode="json"),
            },
        )

    def _screened(self, output: Any, config: RunnableConfig) -> Any:
        text = message_text(output)
        if not self.screen_output or not text.strip():
            return output
        assessment = self.guard.detector.assess(text)
        self._output_marker(assessment).invoke(None, self._assessment_config(config, assessment))
        return _attach_assessment(output, assessment)

    async def _ascreened(self, output: Any, config: RunnableConfig) -> Any:
        text = message_text(output)
        if not self.screen_output or not text.strip():
            return output
        assessment = self.guard.detector.assess(text)
        await self._output_marker(assessment).ainvoke(None, self._assessment_config(config, assessment))
        return _attach_assessment(output, assessment)

    def _output_marker(self, assessment: Assessment) -> Runnable[Any, Any]:
        return RunnableLambda(lambda _: _assessment_dict(assessment), name="tarsguard_output_check")

    def _assessment_config(self, config: RunnableConfig, assessment: Assessment) -> RunnableConfig:
        metadata = {
            **(config.get("metadata") or {}),
            "tarsguard_output_decision": assessment.decision.value,
            "tarsguard_output_confidence": assessment.confidence,
        }
        tags = [*(config.get("tags") or []), "tarsguard", f"tarsguard_output:{assessment.decision.value}"]
        return {**config, "metadata": metadata, "tags": tags}

    # -- invoke / ainvoke ------------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Screen ``input``, then pass it on (to the chain, if any) or act on the decline."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Screen ``input``, then pass it on (to the chain, if any) or act on the decline."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        prompt = self._prompt(input)
        if self.parallel:
            assert self.chain is not None
            run = contextvars.copy_context().run
            pending = _executor().submit(run, self.chain.invoke, input, self._parallel_config(child))
            try:
                verdict = self._check_step.invoke(prompt, child)
            except BaseException:
                pending.cancel()
                raise
            action = self._action(verdict)
            if action != "pass":
                pending.cancel()  # a sync call already running cannot be interrupted: its output is dropped
            self._mark(verdict, action, child)
            if action == "pass":
                return self._screened(pending.result(), child)
        else:
            verdict = self._check_step.invoke(prompt, child)
            action = self._action(verdict)
            self._mark(verdict, action, child)
        after = self._verdict_config(child, verdict)
        if action == "pass":
            if self.chain is None:
                return input
            return self._screened(self.chain.invoke(input, after), child)
        if action == "fallback":
            assert self._fallback is not None
            return self._fallback.invoke(input, after)
        return self._declined_output(verdict)

    async def _ainvoke(self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        prompt = self._prompt(input)
        if self.parallel:
            assert self.chain is not None
            task = asyncio.ensure_future(self.chain.ainvoke(input, self._parallel_config(child)))
            try:
                verdict = await self._check_step.ainvoke(prompt, child)
            except BaseException:
                await _cancel(task)
                raise
            action = self._action(verdict)
            if action != "pass":
                await _cancel(task)
            await self._amark(verdict, action, child)
            if action == "pass":
                return await self._ascreened(await task, child)
        else:
            verdict = await self._check_step.ainvoke(prompt, child)
            action = self._action(verdict)
            await self._amark(verdict, action, child)
        after = self._verdict_config(child, verdict)
        if action == "pass":
            if self.chain is None:
                return input
            return await self._ascreened(await self.chain.ainvoke(input, after), child)
        if action == "fallback":
            assert self._fallback is not None
            return await self._fallback.ainvoke(input, after)
        return self._declined_output(verdict)

    # -- stream / astream ------------------------------------------------------------------------------

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Screen ``input``, then yield the chain's chunks as they come (or the decline's output)."""
        yield from self._transform_stream_with_config(iter([input]), self._stream, config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Screen ``input``, then yield the chain's chunks as they come (or the decline's output)."""

        async def single() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(single(), self._astream, config, **kwargs):
            yield chunk

    def _stream(
        self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        input = _single(inputs)
        child = patch_config(config, callbacks=run_manager.get_child())
        prompt = self._prompt(input)
        if self.parallel:
            yield from self._stream_parallel(input, prompt, child)
            return
        verdict = self._check_step.invoke(prompt, child)
        action = self._action(verdict)
        self._mark(verdict, action, child)
        after = self._verdict_config(child, verdict)
        if action == "pass":
            if self.chain is None:
                yield input
                return
            yield from self._with_screening(self.chain.stream(input, after), child)
        elif action == "fallback":
            assert self._fallback is not None
            yield from self._fallback.stream(input, after)
        else:
            yield self._declined_output(verdict)

    def _stream_parallel(self, input: Any, prompt: Any, config: RunnableConfig) -> Iterator[Any]:
        assert self.chain is not None
        chunks: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        chain = self.chain

        def produce() -> None:
            try:
                iterator = chain.stream(input, self._parallel_config(config))
                for chunk in iterator:
                    if stop.is_set():
                        cast(Any, iterator).close()
                        break
                    chunks.put(chunk)
            except BaseException as exc:
                chunks.put(_Failure(exc))
            finally:
                chunks.put(_END)

        worker = threading.Thread(target=contextvars.copy_context().run, args=(produce,), daemon=True)
        worker.start()
        try:
            verdict = self._check_step.invoke(prompt, config)
        except BaseException:
            stop.set()
            raise
        action = self._action(verdict)
        if action != "pass":
            stop.set()
        self._mark(verdict, action, config)
        if action == "pass":

            def drain() -> Iterator[Any]:
                while (item := chunks.get()) is not _END:
                    if isinstance(item, _Failure):
                        raise item.error
                    yield item

            yield from self._with_screening(drain(), config)
        elif action == "fallback":
            assert self._fallback is not None
            yield from self._fallback.stream(input, self._verdict_config(config, verdict))
        else:
            yield self._declined_output(verdict)

    async def _astream(
        self, inputs: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[Any]:
        input = None
        async for item in inputs:
            input = item
        child = patch_config(config, callbacks=run_manager.get_child())
        prompt = self._prompt(input)
        held: asyncio.Queue[Any] | None = None
        task: asyncio.Future[None] | None = None
        if self.parallel:
            assert self.chain is not None
            held = asyncio.Queue()
            task = asyncio.ensure_future(_produce(self.chain.astream(input, self._parallel_config(child)), held))
        try:
            verdict = await self._check_step.ainvoke(prompt, child)
        except BaseException:
            if task is not None:
                await _cancel(task)
            raise
        action = self._action(verdict)
        if action != "pass" and task is not None:
            await _cancel(task)
        await self._amark(verdict, action, child)
        after = self._verdict_config(child, verdict)
        if action == "pass":
            if self.chain is None:
                yield input
                return
            source = _drain(held) if held is not None else self.chain.astream(input, after)
            async for chunk in self._awith_screening(source, child):
                yield chunk
        elif action == "fallback":
            assert self._fallback is not None
            async for chunk in self._fallback.astream(input, after):
                yield chunk
        else:
            yield self._declined_output(verdict)

    def _with_screening(self, chunks: Iterator[Any], config: RunnableConfig) -> Iterator[Any]:
        if not self.screen_output:
            yield from chunks
            return
        texts: list[str] = []
        messages = False
        for chunk in chunks:
            texts.append(message_text(chunk))
            messages = messages or isinstance(chunk, BaseMessage)
            yield chunk
        text = "".join(texts)
        if text.strip():
            assessment = self.guard.detector.assess(text)
            self._output_marker(assessment).invoke(None, self._assessment_config(config, assessment))
            if messages:
                yield AIMessageChunk(content="", response_metadata={"tarsguard_output": _assessment_dict(assessment)})

    async def _awith_screening(self, chunks: AsyncIterator[Any], config: RunnableConfig) -> AsyncIterator[Any]:
        texts: list[str] = []
        messages = False
        async for chunk in chunks:
            if self.screen_output:
                texts.append(message_text(chunk))
                messages = messages or isinstance(chunk, BaseMessage)
            yield chunk
        text = "".join(texts)
        if self.screen_output and text.strip():
            assessment = self.guard.detector.assess(text)
            await self._output_marker(assessment).ainvoke(None, self._assessment_config(config, assessment))
            if messages:
                yield AIMessageChunk(content="", response_metadata={"tarsguard_output": _assessment_dict(assessment)})


def with_guard(
    chain: Runnable[Any, Any] | Callable[[Any], Any],
    guard: Guard | AsyncGuard,
    *,
    on_decline: OnDecline = "answer",
    input_key: str | None = None,
    screen: Scope = DEFAULT_SCOPE,
    parallel: bool = False,
    screen_output: bool = False,
    timeout: float | Timeout | None = None,
    name: str = "tarsguard",
) -> GuardRunnable:
    """``chain`` behind ``guard``: the same as ``GuardRunnable(guard, ...) | chain``; see ``GuardRunnable``."""
    return GuardRunnable(
        guard,
        chain,
        on_decline=on_decline,
        input_key=input_key,
        screen=screen,
        parallel=parallel,
        screen_output=screen_output,
        timeout=timeout,
        name=name,
    )


_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """Threads that run sync chains beside their check (parallel mode)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="langchain-tarsguard")
        return _pool


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _single(inputs: Iterator[Any]) -> Any:
    items = list(inputs)
    return items[-1] if items else None


async def _produce(source: AsyncIterator[Any], out: asyncio.Queue[Any]) -> None:
    try:
        async for chunk in source:
            out.put_nowait(chunk)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        out.put_nowait(_Failure(exc))
    finally:
        out.put_nowait(_END)


async def _drain(held: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while (item := await held.get()) is not _END:
        if isinstance(item, _Failure):
            raise item.error
        yield item


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _outputs_text(chain: Runnable[Any, Any]) -> bool:
    try:
        output_type = chain.OutputType
    except Exception:
        return False
    return isinstance(output_type, type) and issubclass(output_type, str)


def _assessment_dict(assessment: Assessment) -> dict[str, Any]:
    return {
        "decision": assessment.decision.value,
        "confidence": assessment.confidence,
        "evidence": list(assessment.evidence),
    }


def _attach_assessment(output: Any, assessment: Assessment) -> Any:
    if isinstance(output, str):
        return ScreenedText(output, assessment)
    if isinstance(output, BaseMessage):
        metadata = {**output.response_metadata, "tarsguard_output": _assessment_dict(assessment)}
        return output.model_copy(update={"response_metadata": metadata})
    return output
