"""Running the proxy with uvicorn: in the foreground (``serve``), or on a background thread (``ProxyServer``)."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .._guard import AsyncGuard, Guard
from ._app import create_app
from ._config import ProxyConfig

__all__ = ["HEADER_TIMEOUT", "ProxyServer", "serve"]

HEADER_TIMEOUT = 10.0
"""Seconds a client has, from connecting (or from the first byte of a request on a kept-alive connection), to send a
request's whole head; a connection that takes longer is closed."""

_SECRET_QUERY = re.compile(r"([?&][^=&#\s]*(?:key|token|secret|pass|pwd|auth|sig)[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)


class _RedactQuery(logging.Filter):
    """Hides the values of secret-looking query parameters (``?api_key=...``) in uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "=" in args[2]:
            record.args = (*args[:2], _SECRET_QUERY.sub(r"\1[REDACTED]", args[2]), *args[3:])
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with the access log's query secrets hidden."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": _RedactQuery}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_query"]
    return config


class _HeadTimeout:
    """Closes a connection whose request head is not complete ``header_timeout`` seconds after it began."""

    header_timeout: float
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:  # a request's head arrived
            self._disarm()
        elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first bytes of the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        self.transport.close()


def _http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, with a time limit on request heads."""
    return type("HeadTimeoutProtocol", (_HeadTimeout, AutoHTTPProtocol), {"header_timeout": header_timeout})


def serve(
    config: ProxyConfig,
    *,
    guard: AsyncGuard | Guard | None = None,
    access_log: bool = True,
    header_timeout: float = HEADER_TIMEOUT,
) -> None:
    """Serve the proxy until interrupted. Refuses a host beyond loopback unless API keys are configured."""
    config.check_binding()
    app = create_app(config, guard=guard)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        log_config=_log_config(),
        http=_http_protocol(header_timeout),
    )


class ProxyServer:
    """The proxy served by uvicorn on a background thread, for tests, benchmarks and embedding.

    ``config.port`` 0 picks a free port; ``base_url`` is the proxy's ``http://HOST:PORT/v1`` once started.
    Use it as a context manager, or call ``start`` and ``stop``.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        guard: AsyncGuard | Guard | None = None,
        access_log: bool = False,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        config.check_binding()
        self.config = config
        self.app = create_app(config, guard=guard)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=config.host,
                port=config.port,
                access_log=access_log,
                proxy_headers=False,
                server_header=False,
                log_level="warning",
                log_config=_log_config(),
                http=_http_protocol(header_timeout),
                backlog=2048,
            )
        )
        self._thread: threading.Thread | None = None
        self.port = config.port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> ProxyServer:
        """Start serving; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._server.run()
            except BaseException as exc:  # uvicorn exits with SystemExit when it cannot bind
                failure.append(exc)

        self._thread = threading.Thread(target=run, name="tarsguard-proxy", daemon=True)
        self._thread.start()
        while not self._server.started:
            self._thread.join(0.01)
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"the proxy did not start: {failure[0] if failure else 'unknown error'}")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving (open connections are closed) and join the thread."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join()
        self._thread = None

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
