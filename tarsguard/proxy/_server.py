"""Running the proxy with uvicorn: in the foreground (``serve``), or on a background thread (``ProxyServer``)."""

from __future__ import annotations

import threading
from types import TracebackType

import uvicorn

from .._guard import AsyncGuard, Guard
from ._app import create_app
from ._config import ProxyConfig

__all__ = ["ProxyServer", "serve"]


def serve(config: ProxyConfig, *, guard: AsyncGuard | Guard | None = None, access_log: bool = True) -> None:
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
    )


class ProxyServer:
    """The proxy served by uvicorn on a background thread, for tests, benchmarks and embedding.

    ``config.port`` 0 picks a free port; ``base_url`` is the proxy's ``http://HOST:PORT/v1`` once started.
    Use it as a context manager, or call ``start`` and ``stop``.
    """

    def __init__(
        self, config: ProxyConfig, *, guard: AsyncGuard | Guard | None = None, access_log: bool = False
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
