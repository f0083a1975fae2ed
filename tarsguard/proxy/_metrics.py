"""The proxy's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .._types import Decision, Verdict

__all__ = ["CONTENT_TYPE", "OUTCOMES", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("forwarded", "declined", "answered", "upstream_error", "invalid", "unauthorized")
"""What became of a chat completion request: passed to the upstream and answered by it; declined by the
guard; answered by the guard itself (answer mode); failed at the upstream; rejected as invalid; rejected for
a missing or wrong API key."""
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """Counters and latency histograms of one proxy."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        requests = Counter(
            "tarsguard_proxy_requests",
            "Chat completion requests, by what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = {outcome: requests.labels(outcome) for outcome in OUTCOMES}
        checks = Counter("tarsguard_checks", "Guard checks, by decision.", ["decision"], registry=self.registry)
        self.checks = {decision: checks.labels(decision.value) for decision in Decision}
        self.errors = Counter(
            "tarsguard_errors",
            "Errors: of the guard's checks (by error type) and of the upstream (by kind).",
            ["source", "kind"],
            registry=self.registry,
        )
        self.bypasses = Counter(
            "tarsguard_bypasses",
            "Requests sent to the upstream without a verdict allowing them (a failed check under on_error=allow).",
            ["reason"],
            registry=self.registry,
        )
        self.cancelled = Counter(
            "tarsguard_upstream_cancelled",
            "Upstream requests cancelled because the guard declined (parallel mode).",
            registry=self.registry,
        )
        cache = Counter(
            "tarsguard_cache_lookups",
            "Verdict cache lookups of the guard's checks, by result (guards with a cache only).",
            ["result"],
            registry=self.registry,
        )
        self.cache = {result: cache.labels(result) for result in ("hit", "miss")}
        self.stopped = Counter(
            "tarsguard_checks_stopped_early",
            "Checks whose generation the guard closed before the model finished, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "tarsguard_check_duration_seconds", "Time for one guard check.", buckets=_BUCKETS, registry=self.registry
        )
        self.upstream_seconds = Histogram(
            "tarsguard_upstream_duration_seconds",
            "Time until the upstream's response headers.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tarsguard_request_duration_seconds",
            "Time the proxy spent on a chat completion request, until its response was sent (streamed ones too).",
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def checked(self, verdict: Verdict, seconds: float) -> None:
        """Count one check and its error, if it failed."""
        self.checks[verdict.decision].inc()
        self.check_seconds.observe(seconds)
        trace = verdict.trace
        if trace.cache is not None:
            self.cache[trace.cache].inc()
        if trace.stopped is not None:
            self.stopped.labels(trace.stopped.reason).inc()
        error = trace.error
        if error is not None:
            self.errors.labels("guard", error.type).inc()
            if verdict.allowed:
                self.bypasses.labels("fail_open").inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
