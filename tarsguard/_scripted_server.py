"""A scripted OpenAI-compatible HTTP server that imitates vLLM serving TARS, for tests and benchmarks.

It speaks HTTP/1.1 with keep-alive on asyncio streams, answers ``/health``, ``/v1/models`` and
``/v1/chat/completions`` (plain and streamed) from a script of :class:`Reply` objects, and can inject
faults: dropped connections, malformed JSON, truncated bodies, streams without ``[DONE]``.

Command line (for benchmarks)::

    python -m tarsguard._scripted_server --port 8011 [--host H] [--model NAME]
        [--tokens-per-second R] [--replies FILE.jsonl]

prints ``ready http://H:P/v1`` once listening and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http
import itertools
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

__all__ = ["DEFAULT_CONTENT", "RecordedRequest", "Reply", "ScriptedServer", "main", "split_tokens"]

Fault = Literal["drop", "malformed", "truncate", "no_done"]
_FAULTS = frozenset(("drop", "malformed", "truncate", "no_done"))

DEFAULT_CONTENT = (
    "<think>\nThe user asks how to stop a process that no longer responds on their own computer. "
    "This is routine system administration and benign.\n</think>\n\n"
    "Sure, here is how to do it: on Linux or macOS run `kill <pid>` (or `kill -9 <pid>` if it ignores "
    "SIGTERM); on Windows run `taskkill /PID <pid> /F`."
)

_log = logging.getLogger(__name__)
_TOKEN = re.compile(r"\s*\S+|\s+")
_MAX_BODY = 64 * 1024 * 1024
_HEAD_LIMIT = 64 * 1024
_PLAN_CACHE_SIZE = 512


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word-sized tokens (leading whitespace kept) whose concatenation is ``text``."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a chat completion request."""

    content: str = ""
    reasoning: str | None = None
    reasoning_field: str = "reasoning"
    finish_reason: str = "stop"
    status: int = 200
    error_message: str = "scripted error"
    retry_after: float | str | None = None
    delay: float = 0.0
    tokens_per_second: float | None = None
    fault: Fault | None = None
    logprobs: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] | None = None
    """Per generated token ``(token, logprob, top alternatives as (token, logprob))``, sent as the choice's
    ``logprobs.content`` in a non-streamed reply (streamed replies carry none)."""

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in _FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(_FAULTS)}")
        if self.tokens_per_second is not None and self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if not 200 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status code")
        if self.logprobs is not None:  # lists (from a JSONL script) become tuples: a Reply stays hashable
            logprobs = tuple(
                (str(t), float(lp), tuple((str(a), float(b)) for a, b in top)) for t, lp, top in self.logprobs
            )
            object.__setattr__(self, "logprobs", logprobs)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it: header names lower-cased, body parsed as JSON (None if not)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


Script = Sequence[Reply | str] | Callable[[dict[str, Any]], Reply | str]

_DEFAULT_REPLY = Reply(content=DEFAULT_CONTENT)

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    411: "LengthRequiredError",
    413: "RequestEntityTooLargeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def _error_type(status: int) -> str:
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    try:
        phrase = "".join(http.HTTPStatus(status).phrase.split())
    except ValueError:
        return "InternalServerError" if status >= 500 else "BadRequestError"
    return phrase if phrase.endswith("Error") else phrase + "Error"


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _error_body(message: str, status: int, param: str | None = None) -> bytes:
    error = {"message": message, "type": _error_type(status), "param": param, "code": status}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


_JSON_TYPE = b"content-type: application/json\r\n"
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
_CONNECTION_CLOSE = b"connection: close\r\n"
_CHUNK_END = b"0\r\n\r\n"
_DONE_EVENT = _chunk(b"data: [DONE]\n\n")
_TOKEN_SUFFIX = b',"finish_reason":null}]}\n\n'


def _json_head(status: int, length: int, close: bool, extra: bytes = b"") -> bytes:
    return b"%b%bcontent-length: %d\r\n%b%b\r\n" % (
        _status_line(status),
        _JSON_TYPE,
        length,
        extra,
        _CONNECTION_CLOSE if close else b"",
    )


def _retry_after_header(value: float | str | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        text = value
    elif float(value).is_integer():
        text = str(int(value))
    else:
        text = repr(float(value))
    return b"retry-after: %b\r\n" % text.encode("latin-1")


@dataclass(frozen=True)
class _Plan:
    """The request-independent parts of a reply, serialised once.

    A streamed chunk is a per-request prefix (``data: {"id":...`` up to the delta) followed by a tail;
    ``tails`` holds the tails of the role chunk, of each token chunk and of the finishing chunk.
    """

    tails: tuple[bytes, ...]
    message: bytes
    finish: bytes
    completion_tokens: int
    logprobs: bytes = b""
    """``,"logprobs":{...}`` for a non-streamed choice, or nothing."""
    _joiners: dict[int, tuple[bytes, ...]] = field(default_factory=dict, compare=False, repr=False)

    def framed(self, prefix: bytes) -> bytes:
        """Every chunk of the stream, each ``prefix`` + its tail, framed for chunked transfer encoding."""
        joiners = self._joiners.get(len(prefix))
        if joiners is None:
            pieces: list[bytes] = []
            previous = b""
            for tail in self.tails:
                pieces.append(previous + b"%x\r\n" % (len(prefix) + len(tail)))
                previous = tail + b"\r\n"
            pieces.append(previous)
            joiners = self._joiners[len(prefix)] = tuple(pieces)
        return prefix.join(joiners)


def _make_plan(reply: Reply) -> _Plan:
    reasoning_key = json.dumps(reply.reasoning_field).encode()
    deltas: list[bytes] = []
    if reply.reasoning is not None:
        deltas.extend(b"{%b:%b}" % (reasoning_key, json.dumps(t).encode()) for t in split_tokens(reply.reasoning))
    deltas.extend(b'{"content":%b}' % json.dumps(t).encode() for t in split_tokens(reply.content))
    finish = json.dumps(reply.finish_reason).encode()
    tails = (
        b'{"role":"assistant","content":""}' + _TOKEN_SUFFIX,
        *(delta + _TOKEN_SUFFIX for delta in deltas),
        b'{},"finish_reason":%b}]}\n\n' % finish,
    )
    message = {"role": "assistant", "content": reply.content, reply.reasoning_field: reply.reasoning}
    logprobs = b""
    if reply.logprobs is not None:
        content = [
            {
                "token": token,
                "logprob": logprob,
                "top_logprobs": [{"token": alt, "logprob": alt_logprob} for alt, alt_logprob in top],
            }
            for token, logprob, top in reply.logprobs
        ]
        logprobs = b',"logprobs":' + json.dumps({"content": content}, separators=(",", ":")).encode()
    return _Plan(
        tails=tails,
        message=json.dumps(message, separators=(",", ":")).encode(),
        finish=finish,
        completion_tokens=len(deltas),
        logprobs=logprobs,
    )


def _count_prompt_words(messages: list[Any]) -> int:
    words = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
    return max(words, 1)


@dataclass(slots=True)
class _Answer:
    """A chat completion about to be sent: the reply and the per-request values around it."""

    reply: Reply
    plan: _Plan
    request_id: bytes
    created: int
    prompt_tokens: int
    rate: float | None
    close: bool
    extra_headers: bytes


class _HttpError(Exception):
    """A request that cannot be served; the connection is closed after the error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), (ConnectionError, TimeoutError)):
        return
    loop.default_exception_handler(context)


class ScriptedServer:
    """An OpenAI-compatible server that answers chat completions from a script, imitating vLLM.

    ``replies`` is a sequence consumed one reply per chat request (the last repeats once exhausted, or
    the sequence restarts when ``cycle`` is true; an empty script gives a default TARS-style answer), or
    a callable that maps the request's JSON body to a reply. A ``str`` stands for ``Reply(content=...)``.
    ``tokens_per_second`` paces replies that set no pace of their own.

    The server runs its own event loop in a daemon thread, so it serves sync and async clients alike.
    Use it as a (sync or async) context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        replies: Script = (),
        *,
        model: str = "scripted-tars",
        host: str = "127.0.0.1",
        port: int = 0,
        max_model_len: int = 32768,
        health_status: int = 200,
        record: bool = True,
        cycle: bool = False,
        tokens_per_second: float | None = None,
    ) -> None:
        if tokens_per_second is not None and tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        self.model = model
        self.host = host
        self.port = port
        self.max_model_len = max_model_len
        self.health_status = health_status
        self.record = record
        self.cycle = cycle
        self.tokens_per_second = tokens_per_second
        self.requests: list[RecordedRequest] = []
        self._callable: Callable[[dict[str, Any]], Reply | str] | None = None
        self._script: list[Reply] = []
        if callable(replies):
            self._callable = replies
        else:
            self._script = [self._as_reply(r) for r in replies]
        self._served = 0
        self._generated = 0
        self._lock = threading.Lock()
        self._plans: dict[Reply, _Plan] = {}
        self._ids = itertools.count()
        self._id_prefix = os.urandom(8).hex()
        self._created = int(time.time())
        self._model_json = json.dumps(model).encode()
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": self._created,
                        "owned_by": "tarsguard-scripted",
                        "root": model,
                        "max_model_len": max_model_len,
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}
        self._accepted = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._listening = False

    # -- script --------------------------------------------------------------------------------------

    @staticmethod
    def _as_reply(reply: Reply | str) -> Reply:
        if isinstance(reply, Reply):
            return reply
        if isinstance(reply, str):
            return Reply(content=reply)
        raise TypeError(f"a reply must be a Reply or a str, not {type(reply).__name__}")

    def queue(self, *replies: Reply | str) -> None:
        """Append replies to the script; they are served after the replies not yet consumed."""
        if self._callable is not None:
            raise TypeError("queue() needs a sequence script; this server's script is a callable")
        new = [self._as_reply(r) for r in replies]
        with self._lock:
            self._script.extend(new)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._callable is not None:
            return self._as_reply(self._callable(body))
        with self._lock:
            script = self._script
            if not script:
                return _DEFAULT_REPLY
            if self.cycle:
                reply = script[self._served % len(script)]
                self._served += 1
            elif self._served < len(script):
                reply = script[self._served]
                self._served += 1
            else:
                reply = script[-1]
            return reply

    def _plan(self, reply: Reply) -> _Plan:
        plan = self._plans.get(reply)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[reply] = _make_plan(reply)
        return plan

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``; valid once the server listens."""
        if not self._listening:
            raise RuntimeError("the server is not listening; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server has accepted since it was constructed."""
        return self._accepted

    @property
    def generated_tokens(self) -> int:
        """Completion tokens streamed so far; a paced stream stops counting when its client goes away."""
        return self._generated

    @property
    def open_connections(self) -> int:
        """How many connections are open now."""
        return len(self._connections)

    def start(self) -> ScriptedServer:
        """Start listening in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._thread_main, args=(ready, failure), name="tarsguard-scripted-server", daemon=True
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then join the server thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() cannot be called from the server's own thread")
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(self._request_stop)
        thread.join()
        self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedServer:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_exception_handler)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready.set))
        except BaseException as exc:
            if not ready.is_set():
                failure.append(exc)
            else:
                raise
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()
                ready.set()

    def _request_stop(self) -> None:
        if self._stopping is not None and not self._stopping.done():
            self._stopping.set_result(None)

    async def _serve(self, on_ready: Callable[[], object]) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = loop.create_future()
        server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_HEAD_LIMIT, backlog=1024, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._listening = True
        try:
            on_ready()
            await self._stopping
        finally:
            self._listening = False
            server.close()
            tasks = [t for t in self._connections.values() if t is not None]
            for writer, task in list(self._connections.items()):
                writer.transport.abort()
                if task is not None:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._connections.clear()
            await server.wait_closed()
            self._stopping = None

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        self._connections[writer] = asyncio.current_task()
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # stop() cancels open connections; the server loop is ending, so the task just finishes.
            pass
        except Exception:
            _log.exception("scripted server failed while serving a request")
            self._send_error(writer, 500, "scripted server error", close=True)
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; false when the connection must close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            self._send_error(writer, 431, "Request header fields too large", close=True)
            return False
        try:
            method, target, version, headers = self._parse_head(head)
            body_bytes = await self._read_body(reader, writer, method, headers)
        except _HttpError as err:
            self._send_error(writer, err.status, err.message, close=True)
            return False

        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        path = target.split("?", 1)[0]
        body: Any = None
        if body_bytes:
            try:
                body = json.loads(body_bytes)
            except ValueError:
                body = None
        if self.record:
            self.requests.append(RecordedRequest(method=method, path=path, headers=headers, body=body))

        close = not keep_alive
        if path == "/v1/chat/completions" and method == "POST":
            if body is None:
                self._send_error(writer, 400, "The request body is not valid JSON.", close=close)
                return keep_alive
            return await self._chat(writer, body, close)
        if path == "/health" and method == "GET":
            writer.write(
                b"%bcontent-length: 0\r\n%b\r\n"
                % (_status_line(self.health_status), _CONNECTION_CLOSE if close else b"")
            )
        elif path == "/v1/models" and method == "GET":
            writer.write(_json_head(200, len(self._models_body), close) + self._models_body)
        elif path == "/version" and method == "GET":
            payload = b'{"version":"0.32.0+scripted"}'
            writer.write(_json_head(200, len(payload), close) + payload)
        else:
            self._send_error(writer, 404, "Not Found", close=close)
        await writer.drain()
        return keep_alive

    @staticmethod
    def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _HttpError(400, "Malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _HttpError(400, "Malformed header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return parts[0], parts[1], parts[2], headers

    @staticmethod
    async def _read_body(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, headers: dict[str, str]
    ) -> bytes:
        if "transfer-encoding" in headers:
            raise _HttpError(411, "Request bodies must be sent with a Content-Length header")
        length_text = headers.get("content-length")
        if length_text is None:
            if method in ("POST", "PUT", "PATCH"):
                raise _HttpError(411, "A Content-Length header is required")
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _HttpError(400, "Invalid Content-Length header") from None
        if length < 0:
            raise _HttpError(400, "Invalid Content-Length header")
        if length > _MAX_BODY:
            raise _HttpError(413, "Request body too large")
        if length == 0:
            return b""
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await reader.readexactly(length)

    def _send_error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        *,
        close: bool,
        param: str | None = None,
        extra: bytes = b"",
    ) -> None:
        if writer.transport.is_closing():
            return
        body = _error_body(message, status, param)
        writer.write(_json_head(status, len(body), close, extra) + body)

    # -- chat completions ----------------------------------------------------------------------------

    async def _chat(self, writer: asyncio.StreamWriter, body: Any, close: bool) -> bool:
        keep_alive = not close
        if not isinstance(body, dict):
            self._send_error(writer, 400, "The request body must be a JSON object.", close=close)
            await writer.drain()
            return keep_alive
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._send_error(writer, 400, "messages: Field required", close=close, param="messages")
            await writer.drain()
            return keep_alive
        model = body.get("model")
        if model is not None and model != self.model:
            self._send_error(writer, 404, f"The model `{model}` does not exist.", close=close, param="model")
            await writer.drain()
            return keep_alive
        prompt_tokens = _count_prompt_words(messages)
        problem = self._length_problem(body, prompt_tokens)
        if problem is not None:
            self._send_error(writer, 400, problem[0], close=close, param=problem[1])
            await writer.drain()
            return keep_alive

        try:
            reply = self._next_reply(body)
        except Exception as exc:
            self._send_error(writer, 500, f"the scripted reply callable raised {exc!r}", close=close)
            await writer.drain()
            return keep_alive
        if reply.fault == "drop":
            return False
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        extra = _retry_after_header(reply.retry_after)
        if reply.status != 200:
            self._send_error(writer, reply.status, reply.error_message, close=close, extra=extra)
            await writer.drain()
            return keep_alive

        plan = self._plan(reply)
        rate = reply.tokens_per_second if reply.tokens_per_second is not None else self.tokens_per_second
        request_id = f"chatcmpl-{self._id_prefix}{next(self._ids):016x}".encode()
        created = int(time.time())
        answer = _Answer(reply, plan, request_id, created, prompt_tokens, rate, close, extra)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(writer, answer, include_usage)
        return await self._complete(writer, answer)

    def _length_problem(self, body: dict[str, Any], prompt_tokens: int) -> tuple[str, str] | None:
        limit = self.max_model_len
        if prompt_tokens >= limit:
            return (
                f"This model's maximum context length is {limit} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages.",
                "messages",
            )
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_completion_tokens")
        if type(max_tokens) is int and max_tokens + prompt_tokens > limit:
            return (
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
                f"context length is {limit} tokens and your request has {prompt_tokens} input tokens "
                f"({max_tokens} > {limit} - {prompt_tokens}).",
                "max_tokens",
            )
        return None

    async def _complete(self, writer: asyncio.StreamWriter, answer: _Answer) -> bool:
        plan = answer.plan
        if answer.rate is not None and plan.completion_tokens:
            await asyncio.sleep(plan.completion_tokens / answer.rate)
        payload = (
            b'{"id":"%b","object":"chat.completion","created":%d,"model":%b,"choices":[{"index":0,'
            b'"message":%b%b,"finish_reason":%b}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,'
            b'"total_tokens":%d}}'
            % (
                answer.request_id,
                answer.created,
                self._model_json,
                plan.message,
                plan.logprobs,
                plan.finish,
                answer.prompt_tokens,
                plan.completion_tokens,
                answer.prompt_tokens + plan.completion_tokens,
            )
        )
        if writer.transport.is_closing():
            return False
        head = _json_head(200, len(payload), answer.close, answer.extra_headers)
        fault = answer.reply.fault
        if fault == "malformed":
            payload = payload[: len(payload) // 2]
            head = _json_head(200, len(payload), answer.close, answer.extra_headers)
        elif fault == "truncate":
            payload = payload[: len(payload) // 2]
        writer.write(head + payload)
        await writer.drain()
        return fault != "truncate" and not answer.close

    async def _stream(self, writer: asyncio.StreamWriter, answer: _Answer, include_usage: bool) -> bool:
        plan, fault, n = answer.plan, answer.reply.fault, answer.plan.completion_tokens
        prefix = b'data: {"id":"%b","object":"chat.completion.chunk","created":%d,"model":%b,"choices":' % (
            answer.request_id,
            answer.created,
            self._model_json,
        )
        token_prefix = prefix + b'[{"index":0,"delta":'
        head = _STREAM_HEAD + answer.extra_headers + (_CONNECTION_CLOSE if answer.close else b"") + b"\r\n"
        ending = [_DONE_EVENT, _CHUNK_END]
        if include_usage:
            total = answer.prompt_tokens + n
            usage = b'[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n' % (
                answer.prompt_tokens,
                n,
                total,
            )
            ending.insert(0, _chunk(prefix + usage))

        if fault is None and answer.rate is None:
            if writer.transport.is_closing():
                return False
            writer.write(b"".join((head, plan.framed(token_prefix), *ending)))
            self._generated += n
            await writer.drain()
            return not answer.close

        # events[i] is due once dues[i] tokens have been generated.
        events = [_chunk(token_prefix + tail) for tail in plan.tails]
        dues = [*range(n + 1), n]
        if fault == "malformed":
            events.insert(1, _chunk(token_prefix + b'{"content":"this event is cut off\n\n'))
            dues.insert(1, 0)
        if fault == "truncate":
            cut = max(1, (len(events) - 1) // 2)
            del events[cut:], dues[cut:]
        elif fault == "no_done":
            events[-1] = _CHUNK_END
        else:
            events.extend(ending)
            dues.extend([n] * len(ending))
        events[0] = head + events[0]
        if answer.rate is None:
            if writer.transport.is_closing():
                return False
            writer.write(b"".join(events))
            self._generated += max(dues)
            await writer.drain()
        else:
            await self._paced_write(writer, events, dues, answer.rate)
        return fault != "truncate" and not answer.close

    async def _paced_write(
        self, writer: asyncio.StreamWriter, events: list[bytes], dues: list[int], rate: float
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: list[bytes] = []
        counted = 0
        for event, due in zip(events, dues, strict=True):
            wait = start + due / rate - loop.time()
            if wait > 0:
                if pending:
                    if writer.transport.is_closing():
                        raise ConnectionResetError
                    writer.write(b"".join(pending))
                    pending.clear()
                    await writer.drain()
                    wait = start + due / rate - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            pending.append(event)
            self._generated += due - counted
            counted = due
        if writer.transport.is_closing():
            raise ConnectionResetError
        writer.write(b"".join(pending))
        await writer.drain()


# -- command line ----------------------------------------------------------------------------------


def _load_replies(path: str) -> list[Reply]:
    replies: list[Reply] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if isinstance(item, str):
                replies.append(Reply(content=item))
            elif isinstance(item, dict):
                try:
                    replies.append(Reply(**item))
                except TypeError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
            else:
                raise ValueError(f"{path}:{number}: expected a JSON object with Reply fields")
    return replies


async def _serve_until_signalled(server: ScriptedServer) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_exception_handler)

    def ready() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server._request_stop)
        print(f"ready {server.base_url}", flush=True)

    await server._serve(ready)


def main(argv: list[str] | None = None) -> None:
    """Serve scripted replies until SIGTERM or SIGINT (replies from a JSONL file cycle)."""
    parser = argparse.ArgumentParser(
        prog="python -m tarsguard._scripted_server",
        description="A scripted OpenAI-compatible server imitating vLLM serving TARS.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default="scripted-tars", help="served model id")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--tokens-per-second", type=float, default=None, help="streaming pace; default unpaced")
    parser.add_argument("--replies", default=None, help="JSONL file, one object of Reply fields per line")
    args = parser.parse_args(argv)
    replies = _load_replies(args.replies) if args.replies else []
    server = ScriptedServer(
        replies,
        model=args.model,
        host=args.host,
        port=args.port,
        max_model_len=args.max_model_len,
        record=False,
        cycle=True,
        tokens_per_second=args.tokens_per_second,
    )
    asyncio.run(_serve_until_signalled(server))


if __name__ == "__main__":
    main()
