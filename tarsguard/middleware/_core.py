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
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .._cache import VerdictCache, cache_key
from .._config import Timeout
from .._exceptions import ConfigurationError, InvalidInput, TarsGuardError
from .._guard import AsyncGuard, Guard, error_verdict
from .._input import Prompt, check_strings
from .._sync import LoopThread
from .._types import Decision, Verdict

__all__ = [
    "DEFAULT_DECLINE_MESSAGE",
    "DEFAULT_SCOPE",
    "MODES",
    "SCOPES",
    "AnyGuard",
    "Declined",
    "GuardedText",
    "Mode",
    "OnDecline",
    "Part",
    "Scope",
    "Screener",
    "attach",
    "completion_payload",
    "decline_text",
    "own_decline",
    "screened_parts",
    "stream_payloads",
    "verdict_of",
]

T = TypeVar("T")

Mode = Literal["screen", "parallel", "answer"]
"""``screen``: check, then call the chatbot if allowed. ``parallel``: both at once, the chatbot's reply held
until the verdict and cancelled on a decline. ``answer``: the reasoner's own answer is the reply."""
Scope = Literal["all", "conversation", "last"]
"""What is checked. ``all`` (the default): everything in the request that the model reads and the client wrote,
each part on its own: the latest user turn, earlier user turns, system and developer turns, assistant turns
(a prefill after the latest user turn among them), tool results, tool calls' names and arguments, and
messages' names. ``conversation``: the conversation up to the latest user turn as one prompt, and, each on
its own, what that leaves out: messages after it (an assistant prefill), tool results, tool calls and names.
``last``: only the latest user turn's text."""
OnDecline = str | Callable[[Verdict], Any]
"""``"answer"`` (the reasoner's answer), ``"raise"`` (raise ``Declined``), another string (that message),
or a callable mapping the verdict to the reply."""
AnyGuard = Guard | AsyncGuard

MODES: tuple[Mode, ...] = ("screen", "parallel", "answer")
SCOPES: tuple[Scope, ...] = ("all", "conversation", "last")
DEFAULT_SCOPE: Scope = "all"
DEFAULT_DECLINE_MESSAGE = "Sorry, I can't help with that."
"""The reply to a prompt the guard did not allow when the reasoner gave no complete decline of its own (a failed,
cut-off, malformed or not confident enough check)."""

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


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a request that the guard checks on its own."""

    where: str
    """Which part of the request it is, in words: ``the latest user turn``, ``message 0 (system)``..."""
    prompt: Prompt
    """What the guard checks: a text, or (``conversation``) chat messages ending with a user turn."""


def screened_parts(prompt: Any, scope: Scope = DEFAULT_SCOPE) -> list[Part]:
    """The parts of ``prompt`` (a string, or chat messages in OpenAI's format) that the guard checks, the
    latest user turn (or, for ``conversation``, the conversation up to it) first; see ``Scope``.

    Empty texts are left out and a text that repeats is listed once. Raises ``InvalidInput`` when no user turn
    has text, a message has an unknown role, or a screened part holds content other than text (an assistant
    turn's other content, such as audio, is skipped).
    """
    check_strings(prompt)  # text that cannot be encoded is invalid before anything is sent
    if isinstance(prompt, str):
        return [Part("the prompt", prompt)]
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise InvalidInput(f"expected a prompt string or a list of chat messages, got {type(prompt).__name__}")
    last, text = _latest_user_turn(prompt)
    if scope == "last":
        return [Part("the latest user turn", text)]
    if scope == "conversation":
        parts = [Part("the conversation up to the latest user turn", _conversation(prompt, last))]
    else:
        parts = [Part("the latest user turn", text)]
    seen = {text}

    def add(where: str, piece: str) -> None:
        if piece.strip() and piece not in seen:
            seen.add(piece)
            parts.append(Part(where, piece))

    for index, message in enumerate(prompt):
        role = _field(message, "role")
        if role not in _ROLES:
            raise InvalidInput(f"message {index} has role {role!r}")
        in_conversation = scope == "conversation" and index <= last and role not in ("tool", "function")
        if index != last and not in_conversation:
            add(f"message {index} ({role})", _message_text(message, index, role))
        if role == "assistant":
            for call in _tool_calls(message):
                add(f"a tool call of message {index}", call)
        name = _field(message, "name")
        if isinstance(name, str):
            add(f"the name of message {index}", name)
    return parts


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _latest_user_turn(prompt: Sequence[Any]) -> tuple[int, str]:
    """The index and text of the latest user turn that has text."""
    for index in range(len(prompt) - 1, -1, -1):
        if _field(prompt[index], "role") == "user":
            content = _field(prompt[index], "content")
            text = _text(content, index, strict=True) if content is not None else ""
            if text.strip():
                return index, text
    raise InvalidInput("the conversation has no user turn with text to screen")


def _conversation(prompt: Sequence[Any], last: int) -> list[dict[str, str]]:
    """The system, user and assistant text turns up to and including ``last``, ``developer`` turns as system."""
    messages: list[dict[str, str]] = []
    for index in range(last + 1):
        message = prompt[index]
        role = _field(message, "role")
        if role in ("tool", "function"):
            continue
        if role not in _ROLES:
            raise InvalidInput(f"message {index} has role {role!r}")
        turn = _message_text(message, index, role)
        if turn or role == "user":
            messages.append({"role": "system" if role == "developer" else role, "content": turn})
    return messages


def _message_text(message: Any, index: int, role: str) -> str:
    """The text of a message the model reads: its content, and an assistant's refusal."""
    content = _field(message, "content")
    text = "" if content is None else _text(content, index, strict=role != "assistant")
    refusal = _field(message, "refusal") if role == "assistant" else None
    if isinstance(refusal, str) and refusal.strip():
        text = f"{text}\n{refusal}" if text else refusal
    return text


def _tool_calls(message: Any) -> list[str]:
    """The texts of an assistant turn's tool calls (and legacy function call): each function's name and arguments."""
    calls = _field(message, "tool_calls")
    calls = list(calls) if isinstance(calls, Sequence) and not isinstance(calls, (str, bytes, bytearray)) else []
    legacy = _field(message, "function_call")
    functions = [_field(call, "function") for call in calls] + ([legacy] if legacy is not None else [])
    texts = []
    for function in functions:
        if function is None:
            continue
        pieces = (_field(function, "name"), _field(function, "arguments"))
        texts.append("\n".join(piece for piece in pieces if isinstance(piece, str) and piece.strip()))
    return texts


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
            if kind == "refusal":
                text = _field(part, "refusal")
            if kind in ("text", "refusal") and isinstance(text, str):
                texts.append(text)
            elif strict:
                raise InvalidInput(f"message {index} has {kind or 'non-text'} content; only text can be screened")
        return "\n".join(texts)
    raise InvalidInput(f"message {index} has content of type {type(content).__name__}; expected text")


# -- declines --------------------------------------------------------------------------------------------


def decline_text(verdict: Verdict, message: str | None = None) -> str:
    """The reply to a prompt the guard did not allow: ``message`` if given; else the reasoner's own answer when
    it is a complete decline (see ``own_decline``); else ``DEFAULT_DECLINE_MESSAGE``."""
    if message is not None:
        return message
    return verdict.answer.strip() if own_decline(verdict) else DEFAULT_DECLINE_MESSAGE


def own_decline(verdict: Verdict) -> bool:
    """Whether the reasoner's answer may be served as the reply to a decline: a declined or partial answer that
    the reasoner finished (``finish_reason`` ``stop``, not stopped early) in its expected format, with no error.

    Anything else (undetermined, cut off by ``max_tokens`` or the reasoning budget, malformed, an answer below
    the guard's threshold, a failed check) may hold text nobody has checked, so it never is.
    """
    trace = verdict.trace
    return (
        verdict.decision in (Decision.DECLINED, Decision.PARTIAL)
        and trace.error is None
        and trace.format_ok
        and trace.finish_reason == "stop"
        and trace.stopped is None
        and bool(verdict.answer.strip())
    )


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
    """Checks prompts, and the parts of a request (``screened_parts``), with a ``Guard`` or an ``AsyncGuard``,
    from sync or async code.

    A check that raises (a guard with ``on_error="raise"``, the default) fails closed here: it gives an
    undetermined verdict recording the error with the ``decline`` policy (``fail_closed=False`` raises it
    instead). ``InvalidInput`` and ``ConfigurationError`` are always raised. Guards with ``on_error="decline"``
    or ``"allow"`` keep their policy.

    A request's parts are checked at once and the strictest verdict wins. Parts other than the first (a system
    prompt sent with every request, earlier turns) are checked once and then answered from the guard's verdict
    cache, or, for a guard without one, from the screener's own (``GATE_CACHE_SIZE`` verdicts, one hour).
    """

    def __init__(
        self,
        guard: AnyGuard,
        timeout: float | Timeout | None = None,
        *,
        reply_from_tars: bool = False,
        fail_closed: bool = True,
    ) -> None:
        if not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"expected a Guard or an AsyncGuard, got {type(guard).__name__}")
        self.guard = guard
        self._timeout = timeout
        self._fail_closed = fail_closed
        # Where another model writes the reply, TARS's answer only has to settle the decision: stop it early
        # (unless the guard was configured otherwise). Where TARS's answer is the reply, let it finish.
        self._early_stop = None if reply_from_tars else guard.early_stop_when_screening
        self._verdicts = VerdictCache(GATE_CACHE_SIZE) if guard.cache is None else None

    async def acheck(self, prompt: Prompt) -> Verdict:
        """The verdict on ``prompt``, from async code."""
        guard = self.guard
        started = time.perf_counter()
        try:
            if isinstance(guard, AsyncGuard):
                return await guard.check(prompt, timeout=self._timeout, early_stop=self._early_stop)
            call = functools.partial(guard.check, prompt, timeout=self._timeout, early_stop=self._early_stop)
            return await asyncio.get_running_loop().run_in_executor(_executor(), contextvars.copy_context().run, call)
        except (InvalidInput, ConfigurationError):
            raise
        except TarsGuardError as exc:
            if not self._fail_closed:
                raise
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
            if not self._fail_closed:
                raise
            return failed_verdict(guard, exc, started)

    async def ascreen(self, parts: Sequence[Part]) -> Verdict:
        """The verdict on a request's ``parts`` (see ``screened_parts``), from async code: the strictest."""
        verdicts, todo = self._recalled(parts)
        if todo:
            self._settle(parts, verdicts, todo, await self._gather(parts, todo))
        return _strictest(parts, verdicts)

    def screen(self, parts: Sequence[Part]) -> Verdict:
        """The verdict on a request's ``parts``, from sync code (also from inside a running event loop)."""
        verdicts, todo = self._recalled(parts)
        if len(todo) == 1:
            verdicts[todo[0]] = self._remember(parts[todo[0]], self.check(parts[todo[0]].prompt))
        elif todo:
            self._settle(parts, verdicts, todo, _loop_thread().run(self._gather(parts, todo)))
        return _strictest(parts, verdicts)

    async def _gather(self, parts: Sequence[Part], todo: Sequence[int]) -> list[Any]:
        """The verdicts on ``parts`` at ``todo`` (or the errors in their place), checked at once."""
        return await asyncio.gather(*(self.acheck(parts[i].prompt) for i in todo), return_exceptions=True)

    def submit(self, parts: Sequence[Part]) -> concurrent.futures.Future[Verdict]:
        """Start checking a request's ``parts`` in the background, from sync code."""
        return _executor().submit(self.screen, parts)

    def _recalled(self, parts: Sequence[Part]) -> tuple[list[Verdict | None], list[int]]:
        """The cached verdicts of ``parts`` after the first, and the indices of the parts still to check."""
        if not parts:
            raise InvalidInput("there is nothing to screen")
        verdicts: list[Verdict | None] = [None] * len(parts)
        if self._verdicts is not None:
            for index in range(1, len(parts)):
                key = self._key(parts[index], None)
                verdicts[index] = None if key is None else self._verdicts.get(key)
        return verdicts, [i for i, verdict in enumerate(verdicts) if verdict is None]

    def _settle(
        self, parts: Sequence[Part], verdicts: list[Verdict | None], todo: Sequence[int], results: list[Any]
    ) -> None:
        """Put the checks' ``results`` in place (and in the screener's cache); raise the first error among them."""
        for index, result in zip(todo, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            verdicts[index] = self._remember(parts[index], result)

    def _remember(self, part: Part, verdict: Verdict) -> Verdict:
        if self._verdicts is not None and isinstance(part.prompt, str):
            key = self._key(part, verdict.trace.model)
            if key is not None:
                self._verdicts.put(key, verdict)
        return verdict

    def _key(self, part: Part, served: str | None) -> str | None:
        """The screener's cache key of a text part: the text, the model, the guard's sampling and detector;
        ``None`` while the model is unknown (a backend that finds it on the first check), so that no verdict is
        kept or found under a model other than the one that made it."""
        guard = self.guard
        model = guard._model or getattr(guard.backend, "model", None) or served
        if not model:
            return None
        variant = f"gate early_stop={self._early_stop}"
        messages = [{"role": "user", "content": str(part.prompt)}]
        return cache_key(messages, model, guard.sampling, guard.detector.name, variant)


GATE_CACHE_SIZE = 1024
"""Verdicts a screener keeps, for guards without a verdict cache of their own, so that a repeated part of a
request (a system prompt sent every time) is checked once."""

_STRICTNESS = {Decision.DECLINED: 0, Decision.PARTIAL: 1}


def _strictest(parts: Sequence[Part], verdicts: Sequence[Verdict | None]) -> Verdict:
    """The verdict that decides a request: the first part's when every part is allowed, else the strictest
    verdict that is not (a decline, then a partial answer, then the rest), naming its part in the evidence."""
    checked = [(index, verdict) for index, verdict in enumerate(verdicts) if verdict is not None]
    blocked = [(index, verdict) for index, verdict in checked if not verdict.allowed]
    if not blocked:
        return checked[0][1]
    index, verdict = min(blocked, key=lambda item: (_STRICTNESS.get(item[1].decision, 2), item[0]))
    if len(parts) > 1 and index > 0:
        where = f"screened part: {parts[index].where}"
        verdict = verdict.model_copy(update={"evidence": (where, *verdict.evidence)})
    return verdict


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
