"""``protect``: put the guard in front of a chatbot function, sync or async, plain or streaming."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Generic, TypedDict, TypeVar, overload

from .._config import Timeout
from .._exceptions import ConfigurationError, InvalidInput
from .._types import Verdict
from ._core import (
    DEFAULT_SCOPE,
    AnyGuard,
    Mode,
    OnDecline,
    Part,
    Scope,
    Screener,
    attach,
    check_on_decline,
    check_options,
    decline_reply,
    race,
    run_in_thread,
    screened_parts,
)

__all__ = ["GuardedAsyncIterator", "GuardedIterator", "ProtectOptions", "protect"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_PROMPT_NAMES = ("prompt", "messages")


class ProtectOptions(TypedDict, total=False):
    """The keyword options of ``protect`` (and of ``Guard.protect`` / ``AsyncGuard.protect``)."""

    mode: Mode
    on_decline: OnDecline
    screen: Scope
    timeout: float | Timeout | None
    prompt_arg: str | None


_END = object()


@overload
def protect(
    guard: AnyGuard,
    fn: F,
    *,
    mode: Mode = ...,
    on_decline: OnDecline = ...,
    screen: Scope = ...,
    timeout: float | Timeout | None = ...,
    prompt_arg: str | None = ...,
) -> F: ...


@overload
def protect(
    guard: AnyGuard,
    fn: None = ...,
    *,
    mode: Mode = ...,
    on_decline: OnDecline = ...,
    screen: Scope = ...,
    timeout: float | Timeout | None = ...,
    prompt_arg: str | None = ...,
) -> Callable[[F], F]: ...


def protect(
    guard: AnyGuard,
    fn: Callable[..., Any] | None = None,
    *,
    mode: Mode = "screen",
    on_decline: OnDecline = "answer",
    screen: Scope = DEFAULT_SCOPE,
    timeout: float | Timeout | None = None,
    prompt_arg: str | None = None,
) -> Any:
    """Guard a chatbot callable: ``protect(guard, fn)``, or ``@protect(guard, mode=...)`` as a decorator.

    ``fn`` may be sync or async, and may return its reply or yield it in pieces (a generator or async
    generator). Its prompt is the argument named ``prompt_arg``, else the one named ``prompt`` or
    ``messages``, else its first argument (``self`` and ``cls`` skipped): a string, or chat messages.

    ``mode``: ``"screen"`` checks first and calls ``fn`` only when the verdict allows it; ``"parallel"``
    starts both at once, holds ``fn``'s reply until the verdict is in and cancels ``fn`` on a decline;
    ``"answer"`` replies with the reasoner's own answer and never calls ``fn``. ``screen`` chooses what is
    checked (see ``Scope``): every part of the conversation the model reads (``"all"``, the default), the
    conversation up to the latest user turn and what it leaves out (``"conversation"``), or only the latest
    user turn (``"last"``); any part that is not allowed blocks the call. ``on_decline``: ``"answer"`` (the
    reasoner's own complete decline, else ``DEFAULT_DECLINE_MESSAGE``), ``"raise"`` (raise ``Declined``), any
    other string (that message), or a callable taking the verdict (awaited when it returns an awaitable).

    A check that fails follows the guard's ``on_error``; a guard that would raise fails closed here.
    A ``str`` reply comes back as ``GuardedText`` (``reply.verdict``); other replies carry the verdict in a
    ``tarsguard_verdict`` attribute where they can (``tarsguard.verdict_of(reply)`` reads either), and a
    streamed reply's iterator carries it once the verdict is in. A sync ``fn`` cannot be interrupted: in
    parallel mode a declined call runs on in a worker thread and its reply is dropped, and a sync generator
    is closed at the first item after the decline.
    """
    check_options(mode, screen)
    check_on_decline(on_decline)
    screener = Screener(guard, timeout, reply_from_tars=mode == "answer")

    def decorate(target: Callable[..., Any]) -> Any:
        if not callable(target):
            raise ConfigurationError(f"protect() needs a callable, got {type(target).__name__}")
        protected = _Protected(target, screener, mode, on_decline, screen, _locator(target, prompt_arg))
        return protected.wrapper()

    return decorate if fn is None else decorate(fn)


def _locator(fn: Callable[..., Any], prompt_arg: str | None) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A function finding the prompt among the arguments of a call to ``fn``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = [p for p in params if p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD]
    if prompt_arg is not None:
        if params and not any(p.name == prompt_arg for p in named) and not any(p.kind is p.VAR_KEYWORD for p in params):
            raise ConfigurationError(f"{_name(fn)} has no parameter {prompt_arg!r}")
        name: str | None = prompt_arg
    else:
        name = next((p.name for p in named if p.name in _PROMPT_NAMES), None)
        if name is None:
            name = next((p.name for p in named if p.name not in ("self", "cls")), None)
    index = next((i for i, p in enumerate(positional) if p.name == name), None)
    if not params:
        index = 0
    default = next((p.default for p in named if p.name == name), inspect.Parameter.empty)

    def locate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name is not None and name in kwargs:
            return kwargs[name]
        if index is not None and index < len(args):
            return args[index]
        if default is not inspect.Parameter.empty:
            return default
        raise InvalidInput(f"no prompt in the call to {_name(fn)} (expected argument {name or 0!r})")

    return locate


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


class _Protected:
    """One protected callable: the options, and the flows for each kind of callable."""

    def __init__(
        self,
        fn: Callable[..., Any],
        screener: Screener,
        mode: Mode,
        on_decline: OnDecline,
        scope: Scope,
        locate: Callable[[tuple[Any, ...], dict[str, Any]], Any],
    ) -> None:
        self.fn = fn
        self.screener = screener
        self.mode = mode
        self.on_decline = on_decline
        self.scope = scope
        self.locate = locate

    def prompt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Part]:
        return screened_parts(self.locate(args, kwargs), self.scope)

    def wrapper(self) -> Callable[..., Any]:
        fn = self.fn
        if inspect.isasyncgenfunction(fn):

            def stream_async(*args: Any, **kwargs: Any) -> GuardedAsyncIterator[Any]:
                return GuardedAsyncIterator(self, self.prompt(args, kwargs), args, kwargs)

            return functools.wraps(fn)(stream_async)
        if inspect.isgeneratorfunction(fn):

            def stream(*args: Any, **kwargs: Any) -> GuardedIterator[Any]:
                return GuardedIterator(self, self.prompt(args, kwargs), args, kwargs)

            return functools.wraps(fn)(stream)
        if _is_async(fn):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(args, kwargs)

            return functools.wraps(fn)(call_async)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(args, kwargs)

        return functools.wraps(fn)(call)

    # -- a reply returned whole ----------------------------------------------------------------------

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prompt = self.prompt(args, kwargs)
        if self.mode == "parallel":
            verdict, task = await race(self.screener.ascreen(prompt), self.fn(*args, **kwargs))
            if verdict.allowed:
                return attach(await task, verdict)
        else:
            verdict = await self.screener.ascreen(prompt)
            if verdict.allowed and self.mode == "screen":
                return attach(await self.fn(*args, **kwargs), verdict)
        reply = await self.refuse_async(verdict)
        return attach(reply, verdict)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prompt = self.prompt(args, kwargs)
        if self.mode == "parallel":
            future = run_in_thread(self.fn, *args, **kwargs)
            try:
                verdict = self.screener.screen(prompt)
            except BaseException:
                future.cancel()
                raise
            if verdict.allowed:
                return attach(future.result(), verdict)
            future.cancel()  # stops it only if it has not started; a running call's reply is dropped
        else:
            verdict = self.screener.screen(prompt)
            if verdict.allowed and self.mode == "screen":
                return attach(self.fn(*args, **kwargs), verdict)
        return attach(self.refuse(verdict), verdict)

    def refuse(self, verdict: Verdict) -> Any:
        """The reply when ``fn`` is not called: the reasoner's answer in answer mode, else the decline."""
        if self.mode == "answer" and verdict.allowed and verdict.answer:
            return verdict.answer
        return decline_reply(verdict, self.on_decline)

    async def refuse_async(self, verdict: Verdict) -> Any:
        reply = self.refuse(verdict)
        return await reply if inspect.isawaitable(reply) else reply


class GuardedAsyncIterator(Generic[T]):
    """The async iterator a protected async generator function returns; carries the verdict once it is in."""

    tarsguard_verdict: Verdict | None

    def __init__(
        self, protected: _Protected, prompt: list[Part], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.tarsguard_verdict = None
        self._items = self._run(protected, prompt, args, kwargs)

    def __aiter__(self) -> GuardedAsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        item: T = await self._items.__anext__()
        return item

    async def aclose(self) -> None:
        """Stop the stream and the generator behind it."""
        await self._items.aclose()

    async def _run(
        self, protected: _Protected, prompt: list[Part], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        screener, mode = protected.screener, protected.mode
        if mode != "parallel":
            verdict = self.tarsguard_verdict = await screener.ascreen(prompt)
            if not (verdict.allowed and mode == "screen"):
                yield await protected.refuse_async(verdict)
                return
            source = protected.fn(*args, **kwargs)
            try:
                async for item in source:
                    yield item
            finally:
                await source.aclose()
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.ensure_future(_pump(protected.fn(*args, **kwargs), queue))
        try:
            verdict = self.tarsguard_verdict = await screener.ascreen(prompt)
            if not verdict.allowed:
                pump.cancel()
                yield await protected.refuse_async(verdict)
                return
            while (item := await queue.get()) is not _END:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            pump.cancel()


class _Failure:
    """An exception the generator raised, in the queue where its next item would be."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _pump(source: Any, queue: asyncio.Queue[Any]) -> None:
    """Read ``source`` into ``queue`` (its items, then the end or its failure)."""
    try:
        async for item in source:
            queue.put_nowait(item)
        queue.put_nowait(_END)
    except Exception as exc:
        queue.put_nowait(_Failure(exc))
    finally:
        await source.aclose()


class GuardedIterator(Generic[T]):
    """The iterator a protected generator function returns; carries the verdict once it is in."""

    tarsguard_verdict: Verdict | None

    def __init__(
        self, protected: _Protected, prompt: list[Part], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.tarsguard_verdict = None
        self._items = self._run(protected, prompt, args, kwargs)

    def __iter__(self) -> GuardedIterator[T]:
        return self

    def __next__(self) -> T:
        item: T = next(self._items)
        return item

    def close(self) -> None:
        """Stop the stream and the generator behind it."""
        self._items.close()

    def _run(
        self, protected: _Protected, prompt: list[Part], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Generator[Any, None, None]:
        screener, mode = protected.screener, protected.mode
        if mode != "parallel":
            verdict = self.tarsguard_verdict = screener.screen(prompt)
            if not (verdict.allowed and mode == "screen"):
                yield protected.refuse(verdict)
                return
            with _closing(protected.fn(*args, **kwargs)) as source:
                yield from source
            return
        future = screener.submit(prompt)
        with _closing(protected.fn(*args, **kwargs)) as source:
            held: list[Any] = []
            finished = False
            try:
                # Items are held until the verdict is in; it is looked at as each item arrives.
                while not future.done():
                    try:
                        held.append(next(source))
                    except StopIteration:
                        finished = True
                        break
                verdict = self.tarsguard_verdict = future.result()
            except BaseException:
                future.cancel()
                raise
            if not verdict.allowed:
                source.close()
                yield protected.refuse(verdict)
                return
            yield from held
            if not finished:
                yield from source


class _closing:
    """Close a generator on exit (``contextlib.closing`` for objects that may lack ``close``)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __enter__(self) -> Any:
        return self.source

    def __exit__(self, *exc: object) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
