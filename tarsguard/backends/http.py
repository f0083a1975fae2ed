"""A backend for vLLM and any OpenAI-compatible chat-completions server, over one pooled httpx client."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import random
import re
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Timeout, resolve_max_response_bytes
from .._exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    ContextLengthExceeded,
    ResponseTooLarge,
    TarsGuardError,
)
from .._types import Health
from .._version import __version__
from ._base import GenerationEnd, GenerationEvent, GenerationRequest, GenerationRestart, TextDelta, TokenLogprob
from ._retries import count_retry

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["HTTPBackend"]

_RETRY_AFTER_CAP = 60.0
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 8.0
_DONE = b"[DONE]"
_JSON = json.JSONDecoder()


class HTTPBackend:
    """Chat completions from an OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted API).

    ``base_url`` ends in ``/v1``. ``api_key`` is sent as a Bearer token and never shown in repr, traces or
    logs. Connect errors, dropped connections, 429 and 5xx are retried up to ``max_retries`` times with
    jittered exponential backoff, honouring ``Retry-After``; other 4xx are never retried. A connection dropped
    mid-response is retried from the start (a ``GenerationRestart`` event first, when text had come), as is the
    ``/v1/models`` lookup that finds the model when none was given. A response longer than
    ``max_response_bytes`` (default ``DEFAULT_MAX_RESPONSE_BYTES``, or ``TARSGUARD_MAX_RESPONSE_BYTES``) fails
    with ``ResponseTooLarge`` once that much has arrived.
    """

    kind = "http"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        max_response_bytes: int | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        self._base_url = url
        public = url.copy_with(username=None, password=None, query=None, fragment=None)
        self._endpoint = str(public).rstrip("/")
        self._api_key = api_key
        self._model = model
        self.max_retries = max_retries
        self.max_response_bytes = resolve_max_response_bytes(max_response_bytes)
        self._headers = {"user-agent": f"tarsguard/{__version__}", **(headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._model_lock: asyncio.Lock | None = None

    @property
    def endpoint(self) -> str:
        """The base URL without credentials or query string."""
        return self._endpoint

    @property
    def model(self) -> str | None:
        """The model requested, or the one detected from ``/v1/models`` once known."""
        return self._model

    def __repr__(self) -> str:
        return f"HTTPBackend(endpoint={self.endpoint!r}, model={self._model!r})"

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream (or fetch whole) one chat completion."""
        return self._generate(request)

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        retries = 0
        while True:
            try:
                response, sent = await self._open(request, self.max_retries - retries)
            except TarsGuardError as exc:
                exc.retries += retries
                raise
            retries += sent
            events = self._stream(response, retries) if request.stream else self._whole(response, retries)
            texted = False
            try:
                async for event in events:
                    texted = texted or isinstance(event, TextDelta)
                    yield event
                return
            except BackendUnavailable as exc:  # the connection dropped mid-response: start again
                if retries >= self.max_retries:
                    exc.retries = retries
                    raise
                retries += 1
                if texted:
                    yield GenerationRestart(f"the connection dropped mid-response ({exc})")
                await asyncio.sleep(_note_retry(exc, retries, _delay(exc, retries)))
            except TarsGuardError as exc:
                exc.retries = max(exc.retries, retries)
                raise
            finally:
                await events.aclose()

    async def _open(self, request: GenerationRequest, budget: int) -> tuple[httpx.Response, int]:
        client = self._ensure_client()
        model = request.model or self._model or await self._detect_model(request.timeout)
        return await self._send(client, self._body(request, model), _httpx_timeout(request.timeout), budget)

    async def _whole(self, response: httpx.Response, retries: int) -> AsyncGenerator[GenerationEvent, None]:
        try:
            content = await _aread(response, self.max_response_bytes)
            for event in _read_whole(response, retries, content):
                yield event
        finally:
            await response.aclose()

    async def _stream(self, response: httpx.Response, retries: int) -> AsyncGenerator[GenerationEvent, None]:
        limit = self.max_response_bytes
        received = 0
        finish_reason: str | None = None
        model: str | None = None
        request_id: str | None = None
        usage: dict[str, Any] = {}
        done = False
        buffer = b""
        decode = _JSON.raw_decode
        chunks = response.aiter_bytes()
        try:
            async for data in chunks:
                received += len(data)
                if received > limit:
                    raise _too_large(limit)
                if buffer:
                    data = buffer + data
                end = data.rfind(b"\n")
                if end == -1:
                    buffer = data
                    continue
                buffer = data[end + 1 :]
                # Steps that arrived together are passed on as one delta.
                content = reasoning = ""
                content_steps = reasoning_steps = 0
                for line in data[:end].split(b"\n"):
                    if line.startswith(b"data: "):
                        payload = line[6:]
                    elif line.startswith(b"data:"):
                        payload = line[5:].lstrip()
                    else:
                        continue
                    if payload[:1] == b"[" and payload.rstrip() == _DONE:
                        done = True
                        break
                    try:
                        chunk = decode(payload.decode())[0]
                    except ValueError:
                        raise BackendError(f"malformed stream event: {payload[:200]!r}") from None
                    if not isinstance(chunk, dict):
                        raise BackendError(f"malformed stream event: {payload[:200]!r}")
                    if "error" in chunk:
                        error = chunk["error"]
                        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                        raise BackendError(f"the server failed mid-stream: {message}")
                    if request_id is None:
                        request_id = chunk.get("id")
                        model = chunk.get("model")
                    choices = chunk.get("choices")
                    if not choices:
                        usage = chunk.get("usage") or usage
                        continue
                    choice = choices[0]
                    delta = choice.get("delta")
                    if delta:
                        piece = delta.get("content")
                        if piece:
                            content += piece
                            content_steps += 1
                        piece = delta.get("reasoning") or delta.get("reasoning_content")
                        if piece:
                            reasoning += piece
                            reasoning_steps += 1
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                        usage = chunk.get("usage") or usage
                if content or reasoning:
                    yield TextDelta(content, reasoning, content_steps, reasoning_steps)
                if done:
                    # Not read to its end, the connection is closed rather than pooled: with many concurrent
                    # checks, httpcore's pool costs more per request than a new connection (2x at c=64 in
                    # bench/overhead.py).
                    break
        except httpx.HTTPError as exc:
            raise _translate(exc, mid_response=True) from None
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            await response.aclose()
        if not done and finish_reason is None:
            raise BackendError("the stream ended before the generation finished (no finish_reason, no [DONE])")
        yield GenerationEnd(
            finish_reason=finish_reason,
            model=model,
            request_id=request_id,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            retries=retries,
        )

    async def health(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Health:
        """``GET /health`` (where the server has it) and ``GET /v1/models``."""
        client = self._ensure_client()
        started = time.perf_counter()
        httpx_timeout = _httpx_timeout(timeout)
        detail: list[str] = []
        try:
            root = self._root_url()
            status = await client.get(root.join("health"), timeout=httpx_timeout)
            if status.status_code == 404:
                detail.append("no /health endpoint")
            elif status.status_code != 200:
                return self._unhealthy(started, f"/health answered HTTP {status.status_code}")
            models = await self._get_models(client, httpx_timeout)
        except TarsGuardError as exc:
            return self._unhealthy(started, str(exc))
        except httpx.HTTPError as exc:
            return self._unhealthy(started, str(_translate(exc)))
        ids = tuple(str(m.get("id")) for m in models if isinstance(m, dict) and m.get("id"))
        max_len = next((m.get("max_model_len") for m in models if isinstance(m, dict) and m.get("max_model_len")), None)
        if not ids:
            detail.append("the server lists no models")
        return Health(
            ok=bool(ids),
            endpoint=self.endpoint,
            backend=self.kind,
            models=ids,
            max_model_len=max_len,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail="; ".join(detail) or None,
        )

    def _unhealthy(self, started: float, detail: str) -> Health:
        return Health(
            ok=False,
            endpoint=self.endpoint,
            backend=self.kind,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=detail,
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    # -- internals -------------------------------------------------------------------------------------

    def _ensure_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Connections belong to the loop that opened them; a new loop needs a new pool.
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                limits=self._limits,
                timeout=_httpx_timeout(DEFAULT_TIMEOUT),
            )
            self._client_loop = loop
            self._model_lock = asyncio.Lock()
        return self._client

    def _root_url(self) -> httpx.URL:
        path = self._base_url.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[: -len("/v1")]
        return self._base_url.copy_with(path=path + "/")

    def _body(self, request: GenerationRequest, model: str) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": model,
            "messages": list(request.messages),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stream": request.stream,
        }
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        body.update(request.extra_body)
        return body

    async def _detect_model(self, timeout: Timeout) -> str:
        assert self._model_lock is not None
        async with self._model_lock:
            if self._model is None:
                models = await self._models_retried(timeout)
                ids = [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]
                if not ids:
                    raise BackendError(f"{self.endpoint}/models lists no models; pass model= explicitly")
                self._model = ids[0]
            return self._model

    async def _models_retried(self, timeout: Timeout) -> list[Any]:
        """``/v1/models``, retried as a generation is (connect errors, dropped connections, 429 and 5xx)."""
        attempt = 0
        while True:
            try:
                return await self._get_models(self._ensure_client(), _httpx_timeout(timeout))
            except TarsGuardError as exc:
                if attempt >= self.max_retries or not _retryable(exc):
                    exc.retries = attempt
                    raise
                attempt += 1
                await asyncio.sleep(_note_retry(exc, attempt, _delay(exc, attempt)))

    async def _get_models(self, client: httpx.AsyncClient, timeout: httpx.Timeout) -> list[Any]:
        try:
            response = await client.get("models", timeout=timeout)
        except httpx.HTTPError as exc:
            raise _translate(exc) from None
        if response.status_code != 200:
            raise _http_error(response, self._base_url)
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            raise BackendError("malformed /models response: not a JSON object") from None
        return data if isinstance(data, list) else []

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any], timeout: httpx.Timeout, budget: int
    ) -> tuple[httpx.Response, int]:
        try:
            return await self._send_once(client, body, timeout), 0
        except TarsGuardError as exc:
            if not (budget > 0 and _retryable(exc)):
                raise
            first_error = exc
        # The happy path above stays free of retry machinery; tenacity takes over once an attempt failed.
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        await asyncio.sleep(_note_retry(first_error, 1, _delay(first_error, 1)))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(budget),
            wait=_wait,
            retry=retry_if_exception(_retryable),
            sleep=asyncio.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._send_once(client, body, timeout)
        except TarsGuardError as exc:
            exc.retries = retrying.statistics.get("attempt_number", 1)
            raise
        return response, attempt.retry_state.attempt_number

    async def _send_once(
        self, client: httpx.AsyncClient, body: dict[str, Any], timeout: httpx.Timeout
    ) -> httpx.Response:
        request = client.build_request("POST", "chat/completions", json=body, timeout=timeout)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _translate(exc) from None
        if response.status_code >= 400:
            raw = await _aread(response, self.max_response_bytes)
            await response.aclose()
            read = httpx.Response(response.status_code, headers=response.headers, content=raw, request=request)
            error = _http_error(read, self._base_url)
            raise _context_exceeded(error) or error
        return response


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    assert isinstance(exc, TarsGuardError)
    # Attempt n of the retry loop is the request's attempt n + 1.
    attempt = state.attempt_number + 1
    return _note_retry(exc, attempt, _delay(exc, attempt))


def _note_retry(exc: TarsGuardError, attempt: int, delay: float) -> float:
    """Count a retry for the check in progress, and record it as an event of the current OpenTelemetry span if
    tracing loaded OTel; returns ``delay``."""
    count_retry()
    otel = sys.modules.get("opentelemetry.trace")
    if otel is not None:
        span = otel.get_current_span()
        if span.is_recording():
            attributes: dict[str, Any] = {
                "tarsguard.retry.attempt": attempt,
                "tarsguard.retry.delay_s": round(delay, 3),
                "error.type": exc.kind,
            }
            status = getattr(exc, "status_code", None)
            if status is not None:
                attributes["http.response.status_code"] = status
            span.add_event("tarsguard.retry", attributes)
    return delay


def _delay(exc: TarsGuardError, attempt: int) -> float:
    """Seconds to wait after ``attempt`` failed: the server's ``Retry-After``, else full-jitter backoff."""
    if isinstance(exc, BackendError) and exc.retry_after is not None:
        return min(exc.retry_after, _RETRY_AFTER_CAP)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, BackendUnavailable):
        return True
    return (
        isinstance(exc, BackendError)
        and exc.status_code is not None
        and (exc.status_code == 429 or exc.status_code >= 500)
    )


@functools.lru_cache(maxsize=64)
def _httpx_timeout(timeout: Timeout) -> httpx.Timeout:
    return httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.read, pool=timeout.connect)


async def _aread(response: httpx.Response, limit: int) -> bytes:
    """The whole body of ``response``, unless it is longer than ``limit`` bytes (then ``ResponseTooLarge``)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await response.aclose()
        raise _too_large(limit)
    parts: list[bytes] = []
    received = 0
    try:
        async for data in response.aiter_bytes():
            received += len(data)
            if received > limit:
                await response.aclose()
                raise _too_large(limit)
            parts.append(data)
    except httpx.HTTPError as exc:
        await response.aclose()
        raise _translate(exc, mid_response=True) from None
    return b"".join(parts)


def _too_large(limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the response is longer than max_response_bytes ({limit} bytes); it was not read further", limit=limit
    )


def _translate(exc: httpx.HTTPError, *, mid_response: bool = False) -> TarsGuardError:
    at = _url_tried(exc)
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendUnavailable(f"timed out connecting to the server{at}: {exc}")
        return BackendTimeout(f"the server{at} did not answer in time ({type(exc).__name__})")
    if mid_response:
        if isinstance(exc, httpx.TransportError):
            return BackendUnavailable(
                f"the connection to the server{at} dropped; the response was cut off: {exc or type(exc).__name__}"
            )
        return BackendError(f"the response from the server{at} was cut off: {exc or type(exc).__name__}")
    if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return BackendUnavailable(f"cannot reach the server at {at[1:] or 'its URL'}: {exc or type(exc).__name__}")
    return BackendError(f"{type(exc).__name__}{at}: {exc}")


def _url_tried(exc: httpx.HTTPError) -> str:
    """`` <url>`` of the request that failed, without credentials or query (never a key); empty if unknown."""
    try:
        url = exc.request.url
    except RuntimeError:
        return ""
    return " " + str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _http_error(response: httpx.Response, base_url: httpx.URL) -> BackendError:
    message, error_type, code = _error_fields(response)
    if response.status_code == 404 and not base_url.path.rstrip("/").endswith("/v1"):
        message += " (does base_url need to end in /v1?)"
    return BackendError(
        message,
        status_code=response.status_code,
        error_type=error_type,
        code=code,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


_CONTEXT_MESSAGE = re.compile(
    r"maximum context length|context length exceeded|exceeds? the (?:available |maximum )?context"
    r"|context window|prompt is too long|too many (?:input )?tokens",
    re.IGNORECASE,
)
_CONTEXT_LIMIT = re.compile(r"(?:maximum context length is|context size of|n_ctx\W+)\s*(\d+)", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(r"(?:request has|prompt has|n_prompt_tokens\W+)\s*(\d+)", re.IGNORECASE)


def _context_exceeded(error: BackendError) -> ContextLengthExceeded | None:
    """The server's refusal of a prompt longer than its context (vLLM, llama.cpp, OpenAI's wording), else ``None``."""
    if error.status_code not in (400, 413, 422):
        return None
    if error.code != "context_length_exceeded" and not _CONTEXT_MESSAGE.search(error.message):
        return None
    limit, tokens = _CONTEXT_LIMIT.search(error.message), _PROMPT_TOKENS.search(error.message)
    exceeded = ContextLengthExceeded(
        f"the prompt is longer than the guard model's context: {error.message}",
        limit=int(limit.group(1)) if limit else None,
        prompt_tokens=int(tokens.group(1)) if tokens else None,
        status_code=error.status_code,
    )
    exceeded.__cause__ = error
    return exceeded


def _error_fields(response: httpx.Response) -> tuple[str, str | None, str | None]:
    text = response.text
    try:
        payload = json.loads(text)
    except ValueError:
        return (text.strip()[:500] or response.reason_phrase or "error"), None, None
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:500]
        code = error.get("code")
        return str(message), _opt_str(error.get("type")), None if code is None else str(code)
    return str(error)[:500], None, None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_whole(response: httpx.Response, retries: int, content: bytes) -> list[GenerationEvent]:
    try:
        payload = json.loads(content)
        choice = payload["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError(f"malformed chat completion: {content[:200].decode(errors='replace')!r}") from None
    usage = payload.get("usage") or {}
    reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
    return [
        TextDelta(content=message.get("content") or "", reasoning=reasoning),
        GenerationEnd(
            finish_reason=choice.get("finish_reason"),
            model=payload.get("model"),
            request_id=payload.get("id"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            retries=retries,
            logprobs=_logprobs(choice.get("logprobs")),
        ),
    ]


def _logprobs(value: Any) -> tuple[TokenLogprob, ...] | None:
    """A choice's ``logprobs`` (the OpenAI ``{"content": [...]}`` form), or ``None`` when it has none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BackendError(f"malformed logprobs in the chat completion: {json.dumps(value)[:200]}")
    content = value.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise BackendError(f"malformed logprobs in the chat completion: {json.dumps(value)[:200]}")
    try:
        return tuple(
            TokenLogprob(
                str(item["token"]),
                float(item["logprob"]),
                tuple((str(alt["token"]), float(alt["logprob"])) for alt in item.get("top_logprobs") or ()),
            )
            for item in content
        )
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"malformed logprobs in the chat completion: {json.dumps(value)[:200]}") from None
