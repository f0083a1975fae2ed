"""Running tarsguard's async work from synchronous LangChain code (also from inside a running event loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="langchain-tarsguard-loop", daemon=True).start()
            _loop = loop
        return _loop


def _submit(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> concurrent.futures.Future[T]:
    loop = _background_loop()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def relay(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            result.cancel()
        elif (error := task.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(task.result())

    def start() -> None:
        if result.set_running_or_notify_cancel():
            task = loop.create_task(coro, context=context)
            task.add_done_callback(relay)
            result.add_done_callback(lambda done: done.cancelled() and loop.call_soon_threadsafe(task.cancel))
        else:
            coro.close()

    loop.call_soon_threadsafe(start)
    return result


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the shared background loop and wait for its result, in a copy of the caller's context."""
    future = _submit(coro, contextvars.copy_context())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


_DONE = object()


async def _next(iterator: AsyncIterator[T]) -> Any:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return _DONE


def iterate_sync(iterator: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code, one item at a time, on the shared background loop.

    Closing the returned iterator early closes ``iterator`` too (which stops a generation).
    """
    context = contextvars.copy_context()
    finished = False
    try:
        while True:
            item = _submit(_next(iterator), context).result()
            if item is _DONE:
                finished = True
                return
            yield item
    finally:
        if not finished:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                _submit(aclose(), context).result()
