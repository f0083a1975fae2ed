"""Several replicas behind one backend: least in-flight first, failover to another replica, cool-down, re-probe."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from .._config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Timeout
from .._exceptions import BackendError, BackendTimeout, BackendUnavailable, ConfigurationError, TarsGuardError
from .._types import Health
from ._base import Backend, GenerationEnd, GenerationEvent, GenerationRequest, GenerationRestart, TextDelta
from ._retries import count_retry
from .http import HTTPBackend

__all__ = ["EndpointPool", "EndpointStatus", "http_backend"]

logger = logging.getLogger("tarsguard")

_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 8.0
_RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """A snapshot of one replica of an ``EndpointPool``."""

    endpoint: str | None
    up: bool
    """False while the replica sits out a cool-down after failing, until a probe finds it healthy."""
    in_flight: int
    """Generations running on it now."""
    served: int
    """Generations it completed."""
    failures: int
    """Generations or probes that failed on it."""
    last_error: str | None = None
    retry_in: float | None = None
    """Seconds until it is probed again (while down)."""


@dataclass(eq=False)
class _Replica:
    backend: Backend
    in_flight: int = 0
    assigned: int = 0
    served: int = 0
    failures: int = 0
    streak: int = 0
    down: bool = False
    down_until: float = 0.0
    last_error: str | None = None
    probe: asyncio.Task[bool] | None = None


class EndpointPool:
    """One backend over several replicas serving the same model (vLLM servers, OpenAI-compatible endpoints).

    Each generation goes to the replica with the fewest generations in flight (ties: the one given the
    fewest so far). A replica that cannot be reached, drops the connection, times out or answers 429/5xx is
    skipped for a cool-down (``cooldown`` seconds, doubling on each failure in a row up to ``max_cooldown``),
    then probed with its health check before it gets work again; the failed generation is retried at once on
    another replica. A check is given up after ``len(backends) + max_retries`` attempts. Other 4xx errors are
    the request's fault and are raised as they are.

    Text streams through as it is generated. With ``restart=True`` (default) a replica that fails
    mid-generation is replaced by a fresh generation elsewhere, announced by a ``GenerationRestart`` event
    so the guard discards the partial text; with ``restart=False`` a check fails over only until its first
    text.

    ``endpoint`` is, during a check, the replica serving it (so traces name it), otherwise all of them.
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        cooldown: float = 2.0,
        max_cooldown: float = 30.0,
        probe_timeout: float = 5.0,
        restart: bool = True,
    ) -> None:
        if not backends:
            raise ConfigurationError("an EndpointPool needs at least one backend")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if not 0 < cooldown <= max_cooldown:
            raise ConfigurationError("cooldown must be positive and at most max_cooldown")
        if probe_timeout <= 0:
            raise ConfigurationError("probe_timeout must be positive")
        endpoints = [b.endpoint for b in backends]
        duplicated = sorted({e for e in endpoints if e is not None and endpoints.count(e) > 1})
        if duplicated:
            raise ConfigurationError(f"the same endpoint is listed twice: {', '.join(duplicated)}")
        self._replicas = [_Replica(b) for b in backends]
        self.max_retries = max_retries
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.restart = restart
        self._probe_timeout = probe_timeout
        self._probe_limits = Timeout(total=probe_timeout, connect=probe_timeout, read=probe_timeout)
        self.kind = "http-pool" if all(b.kind == "http" for b in backends) else "pool"
        self._all = ",".join(e or "?" for e in endpoints)
        self._serving: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"tarsguard-pool-{id(self)}", default=None
        )

    @classmethod
    def from_urls(
        cls,
        urls: Sequence[str],
        *,
        api_key: str | None = None,
        model: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        headers: Mapping[str, str] | None = None,
        cooldown: float = 2.0,
        max_cooldown: float = 30.0,
        probe_timeout: float = 5.0,
        restart: bool = True,
    ) -> EndpointPool:
        """A pool of ``HTTPBackend`` replicas, one per base URL, sharing the API key, model and headers.

        The replicas do not retry by themselves: the pool retries on another replica instead.
        """
        backends = [HTTPBackend(url, api_key=api_key, model=model, max_retries=0, headers=headers) for url in urls]
        return cls(
            backends,
            max_retries=max_retries,
            cooldown=cooldown,
            max_cooldown=max_cooldown,
            probe_timeout=probe_timeout,
            restart=restart,
        )

    @property
    def endpoint(self) -> str:
        """The replica serving the current check, else every replica's endpoint, comma-separated."""
        return self._serving.get() or self._all

    @property
    def endpoints(self) -> tuple[str | None, ...]:
        """Every replica's endpoint, in the order given."""
        return tuple(r.backend.endpoint for r in self._replicas)

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The replicas' backends, in the order given."""
        return tuple(r.backend for r in self._replicas)

    @property
    def model(self) -> str | None:
        """The model requested, or the first one a replica has detected."""
        for replica in self._replicas:
            model = getattr(replica.backend, "model", None)
            if isinstance(model, str):
                return model
        return None

    def status(self) -> tuple[EndpointStatus, ...]:
        """Where each replica stands now."""
        now = time.monotonic()
        return tuple(
            EndpointStatus(
                endpoint=r.backend.endpoint,
                up=not r.down,
                in_flight=r.in_flight,
                served=r.served,
                failures=r.failures,
                last_error=r.last_error,
                retry_in=max(0.0, r.down_until - now) if r.down else None,
            )
            for r in self._replicas
        )

    def __repr__(self) -> str:
        return f"EndpointPool(endpoints={list(self.endpoints)!r}, model={self.model!r})"

    # -- generation ------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Run the generation on the least busy healthy replica, failing over to others as needed."""
        return self._generate(request)

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self._serving.set(None)
        budget = len(self._replicas) + self.max_retries
        attempts = 0
        tried: set[_Replica] = set()
        failures: list[tuple[str | None, TarsGuardError]] = []
        streamed = False
        while True:
            replica = self._pick(tried) or await self._revive(tried)
            if replica is None:
                # Every replica has failed this check or is down: wait, then give each another chance.
                # The wait counts as an attempt, so a pool whose replicas all stay down gives up.
                if attempts >= budget:
                    raise self._exhausted(failures, attempts)
                attempts += 1
                await asyncio.sleep(_backoff(attempts, failures))
                tried.clear()
                continue
            attempts += 1
            if attempts > 1:
                count_retry()
            self._serving.set(replica.backend.endpoint)
            stream = replica.backend.generate(request)
            try:
                try:
                    async for event in stream:
                        if isinstance(event, GenerationEnd):
                            event = dataclasses.replace(event, retries=event.retries + attempts - 1)
                        if isinstance(event, TextDelta):
                            streamed = True
                        yield event
                except TarsGuardError as exc:
                    replica_failed = _replica_failure(exc)
                    if replica_failed:
                        self._mark_down(replica, exc)
                    if not replica_failed or (streamed and not self.restart):
                        # The request's own fault, or text already passed on that may not be taken back.
                        exc.retries += attempts - 1
                        raise
                    failures.append((replica.backend.endpoint, exc))
                    if attempts >= budget:
                        raise self._exhausted(failures, attempts) from None
                    tried.add(replica)
                    if streamed:
                        streamed = False
                        yield GenerationRestart(f"{replica.backend.endpoint} failed mid-generation ({exc.kind})")
                    continue
            finally:
                replica.in_flight -= 1
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            self._mark_served(replica)
            return

    def _pick(self, exclude: set[_Replica]) -> _Replica | None:
        """The least busy replica that is up and not excluded, now counted as busy; probes replicas due."""
        now = time.monotonic()
        best: _Replica | None = None
        for replica in self._replicas:
            if replica.down:
                if now >= replica.down_until:
                    self._probe_task(replica)  # due again: probed aside, used once it is healthy
                continue
            if replica in exclude:
                continue
            if best is None or (replica.in_flight, replica.assigned) < (best.in_flight, best.assigned):
                best = replica
        if best is not None:
            best.in_flight += 1
            best.assigned += 1
        return best

    async def _revive(self, exclude: set[_Replica]) -> _Replica | None:
        """Probe the replicas that are down (cool-down or not) and pick among those found healthy."""
        down = [r for r in self._replicas if r.down and r not in exclude]
        if not down:
            return None
        await asyncio.gather(*(self._probe_task(r) for r in down))
        return self._pick(exclude)

    def _probe_task(self, replica: _Replica) -> asyncio.Task[bool]:
        task = replica.probe
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            task = replica.probe = loop.create_task(self._probe(replica))
        return task

    async def _probe(self, replica: _Replica) -> bool:
        try:
            async with asyncio.timeout(self._probe_timeout):
                health = await replica.backend.health(timeout=self._probe_limits)
        except TimeoutError:
            detail = f"the health check took over {self._probe_timeout:g} s"
        except Exception as exc:
            detail = f"the health check failed: {exc}"
        else:
            if health.ok:
                if replica.down:
                    logger.info("endpoint %s is healthy again", replica.backend.endpoint)
                replica.down = False
                return True
            detail = health.detail or "the health check says it is not healthy"
        self._mark_down(replica, BackendUnavailable(detail), probe=True)
        return False

    def _mark_down(self, replica: _Replica, error: TarsGuardError, *, probe: bool = False) -> None:
        replica.failures += 1
        replica.last_error = str(error)
        if replica.down and not probe:
            return  # several checks saw the same outage: one cool-down step, not one per check
        replica.streak += 1
        seconds = min(self.max_cooldown, self.cooldown * 2 ** (replica.streak - 1))
        if isinstance(error, BackendError) and error.retry_after is not None:
            seconds = max(seconds, min(error.retry_after, _RETRY_AFTER_CAP))
        replica.down = True
        replica.down_until = time.monotonic() + seconds
        # A failed check is news; a failed probe of a replica already known to be down is not.
        logger.log(
            logging.INFO if probe else logging.WARNING,
            "endpoint %s failed (%s); skipped for %.1f s, then probed",
            replica.backend.endpoint,
            error.kind,
            seconds,
        )

    @staticmethod
    def _mark_served(replica: _Replica) -> None:
        replica.served += 1
        if not replica.down:
            replica.streak = 0

    def _exhausted(self, failures: list[tuple[str | None, TarsGuardError]], attempts: int) -> TarsGuardError:
        retries = attempts - 1
        if failures and all(isinstance(e, BackendError) and e.status_code for _, e in failures):
            error: TarsGuardError = failures[-1][1]  # every replica answered with an HTTP error: keep the last
        else:
            last = {endpoint: str(e) for endpoint, e in failures}
            for replica in self._replicas:
                last.setdefault(replica.backend.endpoint, replica.last_error or "down")
            tried = "; ".join(f"{endpoint}: {error}" for endpoint, error in last.items())
            message = f"no endpoint could serve the check after {attempts} attempt(s) ({tried})"
            timed_out = bool(failures) and all(isinstance(e, BackendTimeout) for _, e in failures)
            error = BackendTimeout(message) if timed_out else BackendUnavailable(message)
        error.retries = retries
        return error

    # -- health and lifecycle --------------------------------------------------------------------------

    async def health(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Health:
        """Probe every replica; healthy when at least one is. ``extra["endpoints"]`` has each report."""
        started = time.perf_counter()
        reports = await asyncio.gather(*(self._health_of(r, timeout) for r in self._replicas))
        up = [h for h in reports if h.ok]
        models: list[str] = []
        for report in reports:
            models.extend(m for m in report.models if m not in models)
        lengths = [h.max_model_len for h in up if h.max_model_len]
        problems = [f"{h.endpoint}: {h.detail or 'not healthy'}" for h in reports if not h.ok]
        detail = f"{len(up)} of {len(reports)} endpoints healthy"
        return Health(
            ok=bool(up),
            endpoint=self._all,
            backend=self.kind,
            models=tuple(models),
            max_model_len=min(lengths) if lengths else None,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail="; ".join([detail, *problems]),
            extra={"endpoints": [h.model_dump(mode="json") for h in reports]},
        )

    async def _health_of(self, replica: _Replica, timeout: Timeout) -> Health:
        try:
            report = await replica.backend.health(timeout=timeout)
        except TarsGuardError as exc:
            report = Health(ok=False, endpoint=replica.backend.endpoint, backend=replica.backend.kind, detail=str(exc))
        if report.ok:
            replica.down = False
        else:
            self._mark_down(replica, BackendUnavailable(report.detail or "not healthy"), probe=True)
        return report

    async def aclose(self) -> None:
        """Stop pending probes and close every replica's connections."""
        probes = [r.probe for r in self._replicas if r.probe is not None and not r.probe.done()]
        for replica in self._replicas:
            replica.probe = None
        running = asyncio.get_running_loop()
        for task in probes:
            if task.get_loop() is running:
                task.cancel()
        await asyncio.gather(*(t for t in probes if t.get_loop() is running), return_exceptions=True)
        await asyncio.gather(*(r.backend.aclose() for r in self._replicas))


def http_backend(
    base_url: str | Sequence[str],
    *,
    api_key: str | None = None,
    model: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    headers: Mapping[str, str] | None = None,
) -> HTTPBackend | EndpointPool:
    """An ``HTTPBackend`` for one base URL, an ``EndpointPool`` over several."""
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not urls:
        raise ConfigurationError("base_url is an empty list; give at least one http(s) URL")
    if len(urls) == 1:
        return HTTPBackend(urls[0], api_key=api_key, model=model, max_retries=max_retries, headers=headers)
    return EndpointPool.from_urls(urls, api_key=api_key, model=model, max_retries=max_retries, headers=headers)


def _replica_failure(error: TarsGuardError) -> bool:
    """Whether ``error`` says something about the replica (try another) rather than about the request."""
    if isinstance(error, BackendUnavailable | BackendTimeout):
        return True
    if not isinstance(error, BackendError):
        return False
    status = error.status_code
    return status is None or status in (408, 429) or status >= 500


def _backoff(attempt: int, failures: list[tuple[str | None, TarsGuardError]]) -> float:
    hints = [e.retry_after for _, e in failures if isinstance(e, BackendError) and e.retry_after is not None]
    if hints:
        return min(min(hints), _RETRY_AFTER_CAP)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))
