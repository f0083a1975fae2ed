"""Running coroutines from synchronous code, including code already inside a running event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopThread"]


class LoopThread:
    """An event loop in a daemon thread; ``run`` submits a coroutine to it and waits for the result.

    Works whether or not the calling thread has a running loop, because the work never runs on the
    caller's loop.
    """

    def __init__(self, name: str = "tarsguard-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and return its result (or raise its exception).

        The coroutine runs in a copy of the caller's context, so context variables (an active tracing span,
        for one) carry over.
        """
        loop = self._ensure()
        context = contextvars.copy_context()
        result: concurrent.futures.Future[T] = concurrent.futures.Future()
        started: list[asyncio.Task[T]] = []

        def relay(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                result.set_exception(concurrent.futures.CancelledError())
            elif (error := task.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(task.result())

        def start() -> None:
            task = loop.create_task(coro, context=context)
            started.append(task)
            task.add_done_callback(relay)

        loop.call_soon_threadsafe(start)
        try:
            return result.result()
        except BaseException:
            if not result.done():
                loop.call_soon_threadsafe(lambda: started and started[0].cancel())
            raise

    def close(self) -> None:
        """Stop the loop and join the thread; a later ``run`` starts a new one."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("LoopThread.close() called from its own loop")
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
