"""The proxy's FastAPI application: OpenAI-compatible chat completions with the guard in front."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._config import Timeout
from .._exceptions import InvalidInput
from .._guard import AsyncGuard, Guard
from .._types import Verdict
from .._version import __version__
from ..middleware._core import (
    Part,
    Screener,
    completion_payload,
    decline_text,
    discard,
    screened_parts,
    stream_payloads,
)
from ._config import KeyRing, ProxyConfig
from ._metrics import CONTENT_TYPE, Metrics
from ._schema import ChatCompletion, ChatCompletionRequest, ErrorResponse, HealthStatus, ModelList

__all__ = ["create_app"]

logger = logging.getLogger("tarsguard.proxy")

# Never passed between the client and the upstream: hop-by-hop headers, and ones the proxy sets itself.
_REQUEST_DROP = frozenset(
    (
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "authorization",
    )
)
_RESPONSE_DROP = frozenset(
    ("content-length", "connection", "keep-alive", "transfer-encoding", "trailer", "upgrade", "date", "server")
)
_DECISION = "x-tarsguard-decision"
_VERDICT_ID = "x-tarsguard-verdict-id"
_JSON = "application/json"
_SSE = "text/event-stream"
_VERDICT_HEADER_DOCS = {
    _DECISION: {
        "description": "The guard's decision: answered, declined, partial or undetermined.",
        "schema": {"type": "string"},
    },
    _VERDICT_ID: {"description": "The verdict's id, for finding its trace.", "schema": {"type": "string"}},
}


_SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event: a `chat.completion.chunk` as JSON, or `[DONE]`.",
    "properties": {"data": {"type": "string"}},
    "required": ["data"],
}


class _UpstreamFailed(Exception):
    """The upstream could not be reached, or did not answer in time."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclass(slots=True)
class _Upstream:
    """The upstream's response: its body when read whole, else still streaming."""

    response: aiohttp.ClientResponse
    body: bytes | None = None


_MODELS_TTL = 60.0
"""Seconds the upstream's model list is trusted before it is read again."""
_MODELS_REREAD = 1.0
"""Seconds after reading the list before a request for a model it lacks reads it again."""


class _Proxy:
    """The proxy's state and request handling."""

    def __init__(self, config: ProxyConfig, guard: AsyncGuard | Guard | None) -> None:
        self.config = config
        if guard is None:
            guard = AsyncGuard(
                config.guard_url,
                model=config.guard_model,
                timeout=config.timeout,
                on_error=config.on_error,
                min_confidence=config.min_confidence,
            )
        self.guard = guard
        self.screener = Screener(guard, reply_from_tars=config.mode == "answer")
        self.keys = KeyRing(config.api_keys)
        self.metrics = Metrics()
        self.mode = config.mode
        self.scope = config.screen
        upstream = (config.upstream or "").rstrip("/")
        self.chat_url = upstream + "/chat/completions"
        self.models_url = upstream + "/models"
        self.upstream_auth = f"Bearer {config.upstream_api_key}" if config.upstream_api_key else None
        self._session: aiohttp.ClientSession | None = None
        self._models: dict[str | None, tuple[float, frozenset[str]]] = {}
        """The upstream's model ids by the authorization they were listed under, with when they were read."""

    @property
    def session(self) -> aiohttp.ClientSession:
        """The upstream's connection pool, opened on first use on the serving loop."""
        if self._session is None:
            config = self.config
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(sock_connect=config.connect_timeout, sock_read=config.upstream_timeout),
                auto_decompress=False,  # bodies are relayed as they came, content-encoding and all
                skip_auto_headers=("User-Agent", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if isinstance(self.guard, AsyncGuard):
            # Its connections belong to this loop; used again elsewhere, it opens new ones.
            await self.guard.aclose()

    # -- chat completions ------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        metrics = self.metrics
        denied = self.deny(request)
        if denied is not None:
            metrics.requests["unauthorized"].inc()
            return denied
        if not _is_json(request.headers.get("content-type")):
            metrics.requests["invalid"].inc()
            return _error(
                415,
                "the request body must be JSON, sent with Content-Type: application/json",
                "invalid_request_error",
                code="unsupported_media_type",
            )
        raw = await request.body()
        try:
            body = ChatCompletionRequest.model_validate_json(raw)
            parts = screened_parts(body.messages, self.scope)
        except ValidationError as exc:
            image = _image_part(raw)
            if image is not None:
                return self.invalid(f"image content is not supported: {image} (tarsguard screens text)", "messages")
            return self.invalid(_validation_message(exc), _validation_param(exc))
        except InvalidInput as exc:
            return self.invalid(str(exc), "messages")
        if await self.unknown_model(body.model, request.headers):
            # Before any check: the upstream would refuse it anyway.
            self.metrics.requests["invalid"].inc()
            message = f"The model `{body.model}` does not exist or is not served by the upstream."
            return _error(404, message, "invalid_request_error", param="model", code="model_not_found")
        stream = body.stream is True
        # In parallel mode the upstream request starts now; its headers and body wait for the verdict.
        task = asyncio.ensure_future(self.send(raw, request.headers, stream)) if self.mode == "parallel" else None
        try:
            verdict = await self.check(parts)
        except BaseException as exc:
            if task is not None:
                discard(task, _close_upstream)
            if isinstance(exc, InvalidInput):
                return self.invalid(str(exc), "messages")
            raise
        if not verdict.allowed or self.mode == "answer":
            if task is not None:
                if _in_flight(task):
                    metrics.cancelled.inc()
                discard(task, _close_upstream)
            return self.reply(verdict, body, stream, started)
        try:
            upstream = await (task if task is not None else self.send(raw, request.headers, stream))
        except _UpstreamFailed as exc:
            metrics.errors.labels("upstream", exc.kind).inc()
            metrics.requests["upstream_error"].inc()
            return _error(exc.status, exc.message, "upstream_error", headers=_verdict_headers(verdict))
        return self.relay(upstream, verdict, started)

    async def check(self, parts: list[Part]) -> Verdict:
        started = time.perf_counter()
        verdict = await self.screener.ascreen(parts)
        self.metrics.checked(verdict, time.perf_counter() - started)
        if self.config.log_prompts:
            prompt = parts[0].prompt if len(parts) == 1 else [part.prompt for part in parts]
            logger.info("verdict %s %s prompt=%r", verdict.trace.verdict_id, verdict.decision.value, prompt)
        return verdict

    async def send(self, raw: bytes, headers: Mapping[str, str], stream: bool) -> _Upstream:
        """Send the request upstream; return once its headers are in (and, unless it streams, its body)."""
        started = time.perf_counter()
        try:
            response = await self.session.post(self.chat_url, data=raw, headers=self.upstream_headers(headers))
        except TimeoutError as exc:
            raise _UpstreamFailed(504, f"the upstream did not answer in time ({_name(exc)})", "timeout") from None
        except aiohttp.ClientError as exc:
            raise _UpstreamFailed(502, f"cannot reach the upstream ({_name(exc)})", "unavailable") from None
        self.metrics.upstream_seconds.observe(time.perf_counter() - started)
        if stream and response.status == 200:
            return _Upstream(response)
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            response.close()
            raise _UpstreamFailed(502, f"the upstream's response was cut off ({_name(exc)})", "cut_off") from None
        response.release()
        return _Upstream(response, body)

    async def unknown_model(self, model: str, headers: Mapping[str, str]) -> bool:
        """Whether the upstream's ``/models`` (read at most once a minute, again when a model is missing) lacks
        ``model``; ``False`` when there is no upstream or its list cannot be read (the upstream then decides)."""
        if self.config.upstream is None:
            return False
        auth = self.upstream_headers(headers).get("authorization")
        known = self._models.get(auth)
        now = time.monotonic()
        if known is not None and model in known[1] and now - known[0] < _MODELS_TTL:
            return False
        if known is None or now - known[0] >= _MODELS_REREAD:
            listed = await self.upstream_models(headers)
            if listed is None:
                return False
            known = self._models[auth] = (now, listed)
        return model not in known[1]

    async def upstream_models(self, headers: Mapping[str, str]) -> frozenset[str] | None:
        """The ids the upstream's ``/models`` lists, or ``None`` if it cannot be read."""
        request_headers = self.upstream_headers(headers)
        del request_headers["content-type"]
        try:
            async with self.session.get(self.models_url, headers=request_headers) as response:
                if response.status != 200:
                    return None
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return None
        return frozenset(str(m["id"]) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str))

    def upstream_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {name: value for name, value in headers.items() if name not in _REQUEST_DROP}
        out.setdefault("content-type", _JSON)
        if self.upstream_auth is not None:
            out["authorization"] = self.upstream_auth
        elif not self.keys and "authorization" in headers:
            out["authorization"] = headers["authorization"]
        return out

    def relay(self, upstream: _Upstream, verdict: Verdict, started: float) -> Response:
        """The upstream's response, as it came, with the verdict's headers."""
        response = upstream.response
        headers = {name.lower(): value for name, value in response.headers.items()}
        for name in _RESPONSE_DROP.intersection(headers):
            del headers[name]
        headers[_DECISION] = verdict.decision.value
        headers[_VERDICT_ID] = verdict.trace.verdict_id
        status = response.status
        if status >= 400:
            self.metrics.errors.labels("upstream", f"http_{status}").inc()
        self.metrics.requests["forwarded" if status < 400 else "upstream_error"].inc()
        if upstream.body is not None:
            self.metrics.request_seconds.observe(time.perf_counter() - started)
            return Response(upstream.body, status_code=status, headers=headers)
        return StreamingResponse(self.pipe(response, started), status_code=status, headers=headers)

    async def pipe(self, response: aiohttp.ClientResponse, started: float) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for chunk in response.content.iter_any():
                yield chunk
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The headers are sent: say it the way OpenAI-compatible servers do mid-stream.
            self.metrics.errors.labels("upstream", "cut_off").inc()
            message = f"the upstream's stream was cut off ({_name(exc)})"
            yield b"data: " + _dumps({"error": {"message": message, "type": "upstream_error"}}) + b"\n\n"
        finally:
            # A stream left early (the client went away) closes its connection, which stops the upstream.
            if finished:
                response.release()
            else:
                response.close()
            self.metrics.request_seconds.observe(time.perf_counter() - started)

    def reply(self, verdict: Verdict, body: ChatCompletionRequest, stream: bool, started: float) -> Response:
        """The guard's reply: a decline (content and refusal), or in answer mode the reasoner's answer."""
        answered = self.mode == "answer" and verdict.allowed and bool(verdict.answer)
        text = verdict.answer if answered else decline_text(verdict, self.config.decline_message)
        self.metrics.requests["answered" if answered else "declined"].inc()
        choices = body.n or 1
        headers = _verdict_headers(verdict)
        if stream:
            usage = body.stream_options is not None and body.stream_options.include_usage is True
            payloads = stream_payloads(
                text=text, refusal=not answered, model=body.model, verdict=verdict, choices=choices, include_usage=usage
            )
            content = b"".join(b"data: " + _dumps(p) + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"
            media_type = _SSE
        else:
            payload = completion_payload(
                text=text, refusal=not answered, model=body.model, verdict=verdict, choices=choices
            )
            content, media_type = _dumps(payload), _JSON
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        return Response(content, media_type=media_type, headers=headers)

    def deny(self, request: Request) -> Response | None:
        """A 401 response unless the request carries a valid API key (when the proxy has keys)."""
        if not self.keys or self.keys.allows(request.headers.get("authorization")):
            return None
        return _error(
            401,
            "a valid API key is required: send it as 'Authorization: Bearer KEY'",
            "invalid_request_error",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )

    def invalid(self, message: str, param: str | None) -> Response:
        self.metrics.requests["invalid"].inc()
        return _error(400, message, "invalid_request_error", param=param)

    # -- other routes ----------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        denied = self.deny(request)
        if denied is not None:
            return denied
        if self.config.upstream is None:
            health = await self.guard.backend.health(timeout=Timeout.of(self.config.timeout))
            data = [{"id": model, "object": "model", "owned_by": "tarsguard"} for model in health.models]
            return Response(_dumps({"object": "list", "data": data}), media_type=_JSON)
        headers = self.upstream_headers(request.headers)
        del headers["content-type"]
        try:
            async with self.session.get(self.models_url, headers=headers) as response:
                body = await response.read()
        except TimeoutError:
            return _error(504, "the upstream did not answer in time", "upstream_error")
        except aiohttp.ClientError as exc:
            return _error(502, f"cannot reach the upstream ({_name(exc)})", "upstream_error")
        passed = {name.lower(): value for name, value in response.headers.items()}
        for name in _RESPONSE_DROP.intersection(passed):
            del passed[name]
        return Response(body, status_code=response.status, headers=passed)

    def render_metrics(self, request: Request) -> Response:
        denied = self.deny(request)
        return denied if denied is not None else Response(self.metrics.render(), media_type=CONTENT_TYPE)


def create_app(config: ProxyConfig, *, guard: AsyncGuard | Guard | None = None) -> FastAPI:
    """The proxy as an ASGI application (serve it with uvicorn, or ``tarsguard proxy``).

    ``guard`` defaults to an ``AsyncGuard`` built from ``config``. An ``AsyncGuard``'s connections are closed
    when the app shuts down (they belong to its event loop).
    """
    proxy = _Proxy(config, guard)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await proxy.aclose()

    app = FastAPI(
        title="tarsguard proxy",
        version=__version__,
        description="An OpenAI-compatible API that screens each prompt with TARS before the upstream answers it.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.proxy = proxy

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths (404) and methods (405) answer in OpenAI's error shape too, not FastAPI's {"detail"}.
        kinds = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}
        kind, code = kinds.get(exc.status_code, ("invalid_request_error", None))
        message = {
            404: f"no such endpoint: {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return _error(
            exc.status_code,
            message.get(exc.status_code, str(exc.detail)),
            kind,
            code=code,
            headers=dict(exc.headers or {}),
        )

    errors = {
        "model": ErrorResponse,
        "description": "An error, in OpenAI's format (the upstream's passed on as it came).",
    }

    @app.post(
        "/v1/chat/completions",
        summary="Create a chat completion, screened by the guard",
        response_model=None,
        responses={
            200: {
                "model": ChatCompletion,
                "description": "The upstream's completion; for a decline, one with `refusal` set. Streamed as "
                "server-sent events when `stream` is true.",
                "content": {_SSE: {"schema": _SSE_EVENT}},
                "headers": _VERDICT_HEADER_DOCS,
            },
            "4XX": errors,
            "5XX": errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
            }
        },
    )
    async def chat_completions(request: Request) -> Response:
        return await proxy.chat(request)

    @app.get(
        "/v1/models",
        summary="List the upstream's models",
        response_model=None,
        responses={200: {"model": ModelList, "description": "The upstream's models."}, "4XX": errors, "5XX": errors},
    )
    async def models(request: Request) -> Response:
        return await proxy.models(request)

    @app.get("/health", summary="Whether the proxy is up", response_model=HealthStatus)
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_model=None,
        responses={
            200: {
                "description": "Metrics in Prometheus' text format.",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            },
            401: errors,
        },
    )
    async def metrics(request: Request) -> Response:
        return proxy.render_metrics(request)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            request_schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schema.pop("$defs", {}))
            components["ChatCompletionRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _verdict_headers(verdict: Verdict) -> dict[str, str]:
    return {_DECISION: verdict.decision.value, _VERDICT_ID: verdict.trace.verdict_id}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _error(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(_dumps(body), status_code=status, media_type=_JSON, headers=headers)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


_IMAGE_TYPES = ("image_url", "input_image", "image")


def _image_part(raw: bytes) -> str | None:
    """Where the request's first image part is (``messages[0].content[1] is an image_url part``), if it has one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    messages = body.get("messages") if isinstance(body, dict) else None
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") in _IMAGE_TYPES:
                return f"messages[{i}].content[{j}] is an {part['type']} part"
    return None


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _validation_param(exc: ValidationError) -> str | None:
    loc = exc.errors(include_url=False)[0]["loc"]
    return str(loc[0]) if loc else None


def _in_flight(task: asyncio.Future[_Upstream]) -> bool:
    """Whether the upstream is still working on the request: no response yet, or one still streaming."""
    if not task.done():
        return True
    return not task.cancelled() and task.exception() is None and task.result().body is None


async def _close_upstream(upstream: _Upstream) -> None:
    upstream.response.close()


def _name(exc: BaseException) -> str:
    return type(exc).__name__
