"""``wrap_openai``: the guard inside an ``openai.OpenAI`` / ``openai.AsyncOpenAI`` client's chat completions."""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

import openai
from openai import AsyncStream, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion

from .._config import Timeout
from .._exceptions import ConfigurationError
from .._guard import AsyncGuard, Guard
from .._types import Verdict
from ._core import (
    DEFAULT_SCOPE,
    AnyGuard,
    Declined,
    Mode,
    OnDecline,
    Scope,
    Screener,
    attach,
    check_on_decline,
    check_options,
    completion_payload,
    decline_reply,
    race,
    run_in_thread,
    screened_parts,
    stream_payloads,
)

__all__ = ["wrap_openai"]

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)

_RAW_HEADER = "x-stainless-raw-response"
_MARK = "__tarsguard_wrapped__"


@overload
def wrap_openai(
    client: openai.OpenAI,
    guard: AnyGuard | None = ...,
    *,
    mode: Mode = ...,
    on_decline: OnDecline = ...,
    screen: Scope = ...,
    timeout: float | Timeout | None = ...,
) -> openai.OpenAI: ...


@overload
def wrap_openai(
    client: openai.AsyncOpenAI,
    guard: AnyGuard | None = ...,
    *,
    mode: Mode = ...,
    on_decline: OnDecline = ...,
    screen: Scope = ...,
    timeout: float | Timeout | None = ...,
) -> openai.AsyncOpenAI: ...


def wrap_openai(
    client: C,
    guard: AnyGuard | None = None,
    *,
    mode: Mode = "screen",
    on_decline: OnDecline = "answer",
    screen: Scope = DEFAULT_SCOPE,
    timeout: float | Timeout | None = None,
) -> C:
    """Screen every ``client.chat.completions.create`` (and ``parse``) call of ``client`` with ``guard``.

    Returns ``client`` itself; calls keep their signature and return types. ``guard`` defaults to a
    ``Guard`` (``AsyncGuard`` for ``AsyncOpenAI``) configured from ``TARSGUARD_*`` variables. A decline
    returns a normal ``ChatCompletion`` (or stream of chunks) whose message has ``refusal`` and ``content``
    set to the decline message: by default the reasoner's own complete decline, else
    ``DEFAULT_DECLINE_MESSAGE``; ``on_decline`` when it is another string or a callable (verdict -> str);
    ``on_decline="raise"`` raises ``Declined``. Results carry the verdict as ``tarsguard_verdict`` (read it
    with ``tarsguard.verdict_of``). ``mode`` and ``screen`` are as for ``protect`` (by default every part of
    ``messages`` the model reads is screened); in parallel mode a stream starts flowing once the verdict
    allows it, and a declined request is cancelled (the sync client cancels a stream once its headers are in;
    a non-streamed sync request cannot be interrupted, and its reply is dropped). Clients made from it with
    ``with_options`` or ``copy`` are screened too. Calls through ``with_raw_response`` /
    ``with_streaming_response`` are screened and raise ``Declined`` on a decline.
    """
    check_options(mode, screen)
    check_on_decline(on_decline)
    is_async = isinstance(client, openai.AsyncOpenAI)
    if not is_async and not isinstance(client, openai.OpenAI):
        raise ConfigurationError(f"expected an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}")
    if guard is None:
        guard = AsyncGuard() if is_async else Guard()
    completions = client.chat.completions
    if getattr(completions.create, _MARK, False):
        raise ConfigurationError("this client is already wrapped")
    wrapper = _Wrapper(Screener(guard, timeout, reply_from_tars=mode == "answer"), mode, on_decline, screen, client)
    if is_async:
        guarded_create, guarded_parse = wrapper.acreate(completions.create), wrapper.acreate(completions.parse)
    else:
        guarded_create, guarded_parse = wrapper.create(completions.create), wrapper.create(completions.parse)
    completions.create = guarded_create  # type: ignore[method-assign]
    completions.parse = guarded_parse  # type: ignore[method-assign]

    copy = client.copy

    @functools.wraps(copy)
    def guarded_copy(*args: Any, **kwargs: Any) -> Any:
        copied = copy(*args, **kwargs)
        return wrap_openai(copied, guard, mode=mode, on_decline=on_decline, screen=screen, timeout=timeout)

    client.copy = client.with_options = guarded_copy  # type: ignore[method-assign]
    return client


class _Wrapper:
    """The screened versions of one client's chat completion methods."""

    def __init__(self, screener: Screener, mode: Mode, on_decline: OnDecline, scope: Scope, client: Any) -> None:
        self.screener = screener
        self.mode = mode
        self.on_decline = on_decline
        self.scope = scope
        self.client = client

    def acreate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def create(*args: Any, **kwargs: Any) -> Any:
            parts = screened_parts(kwargs.get("messages"), self.scope)
            if self.mode == "parallel":
                verdict, task = await race(self.screener.ascreen(parts), original(*args, **kwargs), _aclose)
                if verdict.allowed:
                    return attach(await task, verdict)
            else:
                verdict = await self.screener.ascreen(parts)
                if verdict.allowed and self.mode == "screen":
                    return attach(await original(*args, **kwargs), verdict)
            reply = self.reply_text(verdict, kwargs)
            if inspect.isawaitable(reply):
                reply = await reply
            return self.reply(verdict, str(reply), kwargs, original, is_async=True)

        setattr(create, _MARK, True)
        return functools.wraps(original)(create)

    def create(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def create(*args: Any, **kwargs: Any) -> Any:
            parts = screened_parts(kwargs.get("messages"), self.scope)
            if self.mode == "parallel":
                future = run_in_thread(original, *args, **kwargs)
                try:
                    verdict = self.screener.screen(parts)
                except BaseException:
                    _drop(future)
                    raise
                if verdict.allowed:
                    return attach(future.result(), verdict)
                _drop(future)
            else:
                verdict = self.screener.screen(parts)
                if verdict.allowed and self.mode == "screen":
                    return attach(original(*args, **kwargs), verdict)
            return self.reply(verdict, str(self.reply_text(verdict, kwargs)), kwargs, original, is_async=False)

        setattr(create, _MARK, True)
        return functools.wraps(original)(create)

    def reply_text(self, verdict: Verdict, kwargs: Mapping[str, Any]) -> Any:
        """The reply's text (or an awaitable of it) when the chatbot's reply is not used."""
        if self.mode == "answer" and verdict.allowed and verdict.answer:
            return verdict.answer
        headers = kwargs.get("extra_headers") or {}
        if any(str(name).lower() == _RAW_HEADER for name in headers):
            raise Declined(verdict)  # a raw HTTP response cannot be made up
        return decline_reply(verdict, self.on_decline)

    def reply(
        self, verdict: Verdict, text: str, kwargs: Mapping[str, Any], original: Callable[..., Any], *, is_async: bool
    ) -> Any:
        """A completion, or a stream of chunks, carrying ``text`` (as a refusal unless TARS answered)."""
        refusal = not (self.mode == "answer" and verdict.allowed and verdict.answer)
        model = str(kwargs.get("model") or "")
        n = kwargs.get("n")
        choices = n if isinstance(n, int) and n > 0 else 1
        if kwargs.get("stream") is True:
            options = kwargs.get("stream_options")
            usage = isinstance(options, Mapping) and options.get("include_usage") is True
            payloads = stream_payloads(
                text=text, refusal=refusal, model=model, verdict=verdict, choices=choices, include_usage=usage
            )
            chunks = [ChatCompletionChunk.model_validate(p) for p in payloads]
            response = _http_response(self.client, verdict)
            stream: Any = _RepliedAsyncStream(chunks, response) if is_async else _RepliedStream(chunks, response)
            return attach(stream, verdict)
        payload = completion_payload(text=text, refusal=refusal, model=model, verdict=verdict, choices=choices)
        kind: type[ChatCompletion] = ParsedChatCompletion if original.__name__ == "parse" else ChatCompletion
        return attach(kind.model_validate(payload), verdict)


async def _aclose(result: Any) -> None:
    if isinstance(result, AsyncStream):
        await result.close()


def _drop(future: concurrent.futures.Future[Any]) -> None:
    """Give up on a sync call: cancel it if it has not started, close its stream once it has one."""
    if future.cancel():
        return

    def close(done: concurrent.futures.Future[Any]) -> None:
        if done.exception() is None and isinstance(done.result(), Stream):
            done.result().close()

    future.add_done_callback(close)


def _http_response(client: Any, verdict: Verdict) -> Any:
    """A stand-in HTTP response (from the HTTP library the client uses) for a stream made up here."""
    headers = {
        "content-type": "text/event-stream",
        "x-tarsguard-decision": verdict.decision.value,
        "x-tarsguard-verdict-id": verdict.trace.verdict_id,
    }
    for cls in type(getattr(client, "_client", None)).__mro__:
        library = importlib.import_module(cls.__module__.split(".")[0])
        if library is not openai and hasattr(library, "Response") and hasattr(library, "Request"):
            request = library.Request("POST", str(client.base_url).rstrip("/") + "/chat/completions")
            return library.Response(200, headers=headers, request=request)
    return None


class _RepliedStream(Stream[ChatCompletionChunk]):
    """A ``Stream`` of chunks made here, for a reply that did not come from the server."""

    def __init__(self, chunks: list[ChatCompletionChunk], response: Any) -> None:
        # Stream.__init__ needs a live HTTP response; this stream replays chunks instead.
        self.response = response
        self._iterator = self._replay(chunks)

    @staticmethod
    def _replay(chunks: list[ChatCompletionChunk]) -> Iterator[ChatCompletionChunk]:
        yield from chunks

    def close(self) -> None:
        """Stop the stream."""
        self._iterator.close()  # type: ignore[attr-defined]


class _RepliedAsyncStream(AsyncStream[ChatCompletionChunk]):
    """An ``AsyncStream`` of chunks made here, for a reply that did not come from the server."""

    def __init__(self, chunks: list[ChatCompletionChunk], response: Any) -> None:
        self.response = response
        self._iterator = self._replay(chunks)

    @staticmethod
    async def _replay(chunks: list[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in chunks:
            yield chunk

    async def close(self) -> None:
        """Stop the stream."""
        await self._iterator.aclose()  # type: ignore[attr-defined]
