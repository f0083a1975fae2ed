"""What ``protect``, ``wrap_openai`` and the proxy share: what to screen, checks that fail closed, declines."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from .._config import Timeout
from .._exceptions import ConfigurationError, InvalidInput, TarsGuardError
from .._guard import AsyncGuard, Guard, error_verdict
from .._input import Prompt
from .._sync import LoopThread
from .._types import Verdict

__all__ = [
    "DEFAULT_DECLINE_MESSAGE",
    "MODES",
    "SCOPES",
    "AnyGuard",
    "Declined",
    "GuardedText",
    "Mode",
    "OnDecline",
    "Scope",
    "Screener",
    "attach",
    "completion_payload",
    "decline_text",
    "screened_prompt",
    "stream_payloads",
    "verdict_of",
]

T = TypeVar("T")

Mode = Literal["screen", "parallel", "answer"]
"""``screen``: check, then call the chatbot if allowed. ``parallel``: both at once, the chatbot's reply held
until the verdict and cancelled on a decline. ``answer``: the reasoner's own answer is the reply."""
Scope = Literal["last", "conversation"]
"""What is checked: the latest user turn, or the conversation up to it."""
OnDecline = str | Callable[[Verdict], Any]
"""``"answer"`` (the reasoner's answer), ``"raise"`` (raise ``Declined``), another string (that message),
or a callable mapping the verdict to the reply."""
AnyGuard = Guard | AsyncGuard

MODES: tuple[Mode, ...] = ("screen", "parallel", "answer")
SCOPES: tuple[Scope, ...] = ("last", "conversation")
DEFAULT_DECLINE_MESSAGE = "Sorry, I can't help with that."
"""The reply to a decline when the reasoner gave no answer of its own (a failed check)."""

_VERDICT_ATTR = "tarsguard_verdict"


class Declined(TarsGuardError):
    """The guard did not allow the prompt (declined, partial, or a check that failed closed).

    Raised by protected callables and wrapped clients configured with ``on_decline="raise"``.
    """

    kind = "declined"

    def __init__(self, verdict: Verdict) -> None:
        decision, verdict_id = verdict.decision.value, verdict.trace.verdict_id
        super().__init__(f"the guard did not allow the prompt: {decision} (verdict {verdict_id})")
        self.verdict = verdict


class GuardedText(str):
    """A reply (a ``str``) that carries the verdict it was given under."""

    tarsguard_verdict: Verdict

    def __new__(cls, text: str, verdict: Verdict) -> GuardedText:
        obj = super().__new__(cls, text)
        obj.tarsguard_verdict = verdict
        return obj

    def __getnewargs__(self) -> tuple[str, Verdict]:  # type: ignore[override]
        return str(self), self.tarsguard_verdict

    @property
    def verdict(self) -> Verdict:
        """The guard's verdict on the prompt this reply answers."""
        return self.tarsguard_verdict


def attach(result: T, verdict: Verdict) -> T:
    """``result`` carrying ``verdict``: a ``str`` becomes ``GuardedText``; other objects get an attribute where
    they take one (results that cannot, such as ``None``, ``dict`` or ``tuple``, are returned as they are)."""
    if isinstance(result, str):
        return GuardedText(result, verdict)  # type: ignore[return-value]
    with contextlib.suppress(AttributeError, TypeError):
        # object.__setattr__ keeps the verdict out of pydantic models' fields and their JSON.
        object.__setattr__(result, _VERDICT_ATTR, verdict)
    return result


def verdict_of(result: object) -> Verdict | None:
    """The verdict a protected call's result or a wrapped client's response carries, if any."""
    verdict = getattr(result, _VERDICT_ATTR, None)
    return verdict if isinstance(verdict, Verdict) else None


def check_options(mode: str, scope: str) -> None:
    """Raise ``ConfigurationError`` for an unknown mode or scope."""
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if scope not in SCOPES:
        raise ConfigurationError(f"screen must be one of {', '.join(SCOPES)}; got {scope!r}")


# -- what to screen ------------------------------------------------------------------------------------


def screened_prompt(prompt: Any, scope: Scope) -> Prompt:
    """The part of ``prompt`` (a string, or chat messages in OpenAI's format) that the guard checks.

    ``last``: the text of the latest user turn that has text. ``conversation``: the text turns up to and
    including that one, ``developer`` turns as ``system``, tool turns and text-less assistant turns left out.
    Raises ``InvalidInput`` when no user turn has text, or a screened turn has content other than text.
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise InvalidInput(f"expected a prompt string or a list of chat messages, got {type(prompt).__name__}")
    last = text = None
    for index in range(len(prompt) - 1, -1, -1):
        if _field(prompt[index], "role") == "user":
            content = _field(prompt[index], "content")
            text = _text(content, index, strict=True) if content is not None else ""
            if text.strip():
                last = index
                break
    if last is None or text is None:
        raise InvalidInput("the conversation has no user turn with text to screen")
    if scope == "last":
        return text
    messages: list[dict[str, str]] = []
    for index in range(last + 1):
        message = prompt[index]
        role = _field(message, "role")
        if role in ("tool", "function"):
            continue
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise InvalidInput(f"message {index} has role {role!r}")
        content = _field(message, "content")
        if content is None:
            continue
        turn = _text(content, index, strict=role != "assistant")
        if turn or role == "user":
            messages.append({"role": role, "content": turn})
    return messages


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def _text(content: Any, index: int, *, strict: bool) -> str:
    """The text of a message's content; non-text parts raise when ``strict``, else are skipped."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part in content:
            kind, text = _field(part, "type"), _field(part, "text")
            if kind == "text" and isinstance(text, str):
                texts.append(text)
            elif strict:
                raise InvalidInput(f"message {index} has {kind or 'non-text'} content; only text can be screened")
        return "\n".join(texts)
    raise InvalidInput(f"message {index} has content of type {type(content).__name__}; expected text")


# -- declines --------------------------------------------------------------------------------------------


def decline_text(verdict: Verdict, message: str | None = None) -> str:
    """The reply to a decline: ``message`` if given, else the reasoner's answer, else a default message."""
    if message is not None:
        return message
    return verdict.answer.strip() or DEFAULT_DECLINE_MESSAGE


def decline_reply(verdict: Verdict, on_decline: OnDecline) -> Any:
    """The reply to a decline per ``on_decline`` (see ``OnDecline``); raises ``Declined`` for ``"raise"``."""
    if on_decline == "raise":
        raise Declined(verdict)
    if on_decline == "answer":
        return decline_text(verdict)
    if isinstance(on_decline, str):
        return on_decline
    return on_decline(verdict)


def check_on_decline(on_decline: object) -> None:
    """Raise ``ConfigurationError`` unless ``on_decline`` is a string or a callable."""
    if not (isinstance(on_decline, str) or callable(on_decline)):
        raise ConfigurationError('on_decline must be "answer", "raise", a message, or a callable taking the verdict')


def completion_payload(
    *, text: str, refusal: bool, model: str, verdict: Verdict, choices: int = 1, created: int | None = None
) -> dict[str, Any]:
    """A chat completion in OpenAI's format whose reply is ``text`` (also as ``refusal`` for a decline)."""
    message = {"role": "assistant", "content": text, "refusal": text if refusal else None}
    return {
        "id": f"chatcmpl-tarsguard-{verdict.trace.verdict_id}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {"index": i, "message": message, "finish_reason": "stop", "logprobs": None} for i in range(choices)
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def stream_payloads(
    *, text: str, refusal: bool, model: str, verdict: Verdict, choices: int = 1, include_usage: bool = False
) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion whose reply is ``text``, in OpenAI's format."""
    head = {
        "id": f"chatcmpl-tarsguard-{verdict.trace.verdict_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    delta = {"role": "assistant", "content": text, "refusal": text if refusal else None}
    chunks: list[dict[str, Any]] = [
        {**head, "choices": [{"index": i, "delta": delta, "finish_reason": None, "logprobs": None}]}
        for i in range(choices)
    ]
    chunks += [
        {**head, "choices": [{"index": i, "delta": {}, "finish_reason": "stop", "logprobs": None}]}
        for i in range(choices)
    ]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
    return chunks


# -- checks ----------------------------------------------------------------------------------------------


class Screener:
    """Checks prompts with a ``Guard`` or an ``AsyncGuard``, from sync or async code.

    A check that raises (a guard with ``on_error="raise"``, the default) fails closed here: it gives an
    undetermined verdict recording the error with the ``decline`` policy. ``InvalidInput`` and
    ``ConfigurationError`` are still raised. Guards with ``on_error="decline"`` or ``"allow"`` keep their policy.
    """

    def __init__(
        self, guard: AnyGuard, timeout: float | Timeout | None = None, *, reply_from_tars: bool = False
    ) -> None:
        if not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"expected a Guard or an AsyncGuard, got {type(guard).__name__}")
        self.guard = guard
        self._timeout = timeout
        # Where another model writes the reply, TARS's answer only has to settle the decision: stop it early
        # (unless the guard was configured otherwise). Where TARS's answer is the reply, let it finish.
        self._early_stop = None if reply_from_tars else guard.early_stop_when_screening

    async def acheck(self, prompt: Prompt) -> Verdict:
        """The verdict on ``prompt``, from async code."""
        guard = self.guard
        started = time.perf_counter()
        try:
            if isinstance(guard, AsyncGuard):
                return await guard.check(prompt, timeout=self._timeout, early_stop=self._early_stop)
            call = functools.partial(guard.check, prompt, timeout=self._timeout)
            return await asyncio.get_running_loop().run_in_executor(_executor(), call)
        except (InvalidInput, ConfigurationError):
            raise
        except TarsGuardError as exc:
            return failed_verdict(guard, exc, started)

    def check(self, prompt: Prompt) -> Verdict:
        """The verdict on ``prompt``, from sync code (also from inside a running event loop)."""
        guard = self.guard
        started = time.perf_counter()
        try:
            if isinstance(guard, Guard):
                return guard.check(prompt, timeout=self._timeout, early_stop=self._early_stop)
            return _loop_thread().run(guard.check(prompt, timeout=self._timeout, early_stop=self._early_stop))
        except (InvalidInput, ConfigurationError):
            raise
        except TarsGuardError as exc:
            return failed_verdict(guard, exc, started)

    def submit(self, prompt: Prompt) -> concurrent.futures.Future[Verdict]:
        """Start checking ``prompt`` in the background, from sync code."""
        return _executor().submit(self.check, prompt)


def failed_verdict(guard: AnyGuard, error: TarsGuardError, started: float) -> Verdict:
    """An undetermined verdict for a check that raised ``error``, failing closed."""
    return error_verdict(
        error,
        policy="decline",
        backend=guard.backend,
        sampling=guard.sampling,
        detector=guard.detector.name,
        started=started,
    )


async def race(
    check: Awaitable[Verdict],
    call: Coroutine[Any, Any, T],
    close: Callable[[T], Awaitable[object]] | None = None,
) -> tuple[Verdict, asyncio.Task[T]]:
    """Run ``check`` and ``call`` at once; return the verdict and the call's task.

    Unless the verdict allows it, the call is cancelled, or, where it already finished, its result is
    passed to ``close``.
    """
    task = asyncio.ensure_future(call)
    try:
        verdict = await check
    except BaseException:
        discard(task, close)
        raise
    if not verdict.allowed:
        discard(task, close)
    return verdict, task


def discard(task: asyncio.Future[Any], close: Callable[[Any], Awaitable[object]] | None = None) -> None:
    """Cancel ``task``; if it finishes anyway (or already had), ``close`` its result in the background."""
    task.cancel()

    def finished(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None and close is not None:
            _background(close(done.result()))

    task.add_done_callback(finished)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(work: Awaitable[object]) -> None:
    future = asyncio.ensure_future(work)
    _BACKGROUND.add(future)
    future.add_done_callback(_BACKGROUND.discard)
    future.add_done_callback(_consume)


_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_loop: LoopThread | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for sync checks and sync chatbot calls that must run beside something else."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="tarsguard-protect")
        return _pool


def _loop_thread() -> LoopThread:
    """The event loop that runs an ``AsyncGuard``'s checks for sync callers."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = LoopThread("tarsguard-protect-loop")
        return _loop


def run_in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
    """Start ``call`` on a worker thread, in a copy of the caller's context."""
    return _executor().submit(contextvars.copy_context().run, call, *args, **kwargs)
