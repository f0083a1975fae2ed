"""The tracer a guard calls once per check: redaction, sampling, sinks and the check's span, never raising."""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._config import ENV_TRACE
from .._exceptions import ConfigurationError
from .._input import Prompt, to_messages
from .._types import Verdict
from ._otel import OTelSpans
from ._record import TraceRecord, build_record, check_rate, keep_rate
from ._redact import RedactSpec, make_redactor
from ._sink import SinkStats, SinkStatus, TraceSink

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["DEFAULT_LINGER", "ENV_TRACE", "CheckScope", "TraceSpec", "Tracer", "TracerStats", "resolve_tracer"]

"""Where traces go when ``trace=`` is not given: comma-separated ``*.jsonl`` paths, ``sqlite:///path.db`` URLs,
``otel``."""

DEFAULT_LINGER = 0.02
"""Seconds a kept verdict may wait in a running event loop, so that records are built and written in batches."""
_MAX_HELD = 64
"""Held verdicts that are written at once, without waiting for the linger to pass."""

TraceSpec = str | os.PathLike[str] | TraceSink | OTelSpans | Sequence[str | os.PathLike[str] | TraceSink | OTelSpans]
"""Trace destinations: a spec string (comma-separated), a path, a sink, ``OTelSpans``, or a list of them."""

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True, slots=True)
class TracerStats:
    """What a tracer has done: verdicts recorded, verdicts sampled out, internal failures, and each sink's counts.

    ``failed`` counts verdicts lost before any sink saw them (a redaction callable that raised, say).
    """

    recorded: int
    sampled_out: int
    failed: int
    sinks: tuple[SinkStats, ...]


class Tracer:
    """Records each verdict in every sink and describes each check on an OpenTelemetry span.

    Text is passed through ``redact`` (built-in patterns for emails, phone numbers, card numbers and API-key
    shapes by default; ``False`` for none; or a list of built-in names and callables) before any sink or span
    sees it. Declines, partial and undetermined verdicts are always kept; answered ones are kept at rate
    ``sample``. The prompt is stored, and text is attached to spans, only with ``capture_content=True``.
    A failing sink never fails a check: its first failure is logged once and every failure is counted
    (``stats()``).

    Inside a running event loop (every guard check), when every sink takes batches (``JsonlSink``, ``SQLiteSink``),
    a check's record is built and written up to ``linger`` seconds later, together with the records of the checks
    that end meanwhile (at most 64 wait): per record, a batch costs the event loop about a third less than records
    written one at a time. ``flush()``, ``close()`` (and so a guard's ``close()``) and interpreter exit write what
    waits; a process killed outright loses it. ``linger=0``, ``Tracer.record`` and checks outside an event loop write
    each record before returning.
    """

    def __init__(
        self,
        sinks: TraceSink | Iterable[TraceSink] = (),
        *,
        spans: OTelSpans | bool = False,
        redact: RedactSpec = True,
        sample: float = 1.0,
        capture_content: bool = False,
        linger: float = DEFAULT_LINGER,
        owned: Iterable[TraceSink] = (),
    ) -> None:
        listed = [sinks] if isinstance(sinks, TraceSink) else list(sinks)
        for sink in listed:
            if not isinstance(sink, TraceSink):
                raise ConfigurationError(f"{sink!r} is not a trace sink (it needs write() and close())")
        self._sinks: tuple[tuple[TraceSink, SinkStatus, bool], ...] = tuple(
            (sink, *_status_of(sink)) for sink in listed
        )
        self._owned = tuple(owned)
        self._spans: OTelSpans | None = OTelSpans() if spans is True else (spans or None)
        self._redactor = make_redactor(redact)
        self._rate = check_rate(sample)
        self.capture_content = capture_content
        if isinstance(linger, bool) or not isinstance(linger, int | float) or not 0.0 <= linger <= 60.0:
            raise ConfigurationError(f"linger must be a number of seconds from 0 to 60; got {linger!r}")
        self._linger = float(linger)
        writers: tuple[tuple[Any, SinkStatus, bool], ...] = tuple(
            (getattr(sink, "write_many", None), status, counted) for sink, status, counted in self._sinks
        )
        self._batch_writers: tuple[tuple[Callable[[Sequence[TraceRecord]], object], SinkStatus, bool], ...] = (
            writers if linger and writers and all(callable(write_many) for write_many, _, _ in writers) else ()
        )
        """Each sink's ``write_many``, when records are batched: only with a linger and when every sink has one."""
        self._lock = threading.Lock()
        self._recorded = 0
        self._sampled_out = 0
        self._status = SinkStatus("tracer")
        self._held: list[tuple[Verdict, Prompt | None, float]] = []
        self._batch = 0
        """Batches taken so far: a linger timer writes only the batch it was started for."""
        self._due = 0.0
        """When the oldest held verdict has waited ``linger``: a later hold past it writes the batch itself."""
        _live_tracers.add(self)

    @property
    def sinks(self) -> tuple[TraceSink, ...]:
        """The sinks records go to."""
        return tuple(sink for sink, _, _ in self._sinks)

    @property
    def spans(self) -> OTelSpans | None:
        """Where check spans go, if anywhere."""
        return self._spans

    def check(self, model: str | None = None) -> CheckScope:
        """A context manager around one check: the check's span (if spans are on) lasts while it is open.

        Call ``scope.record(verdict, prompt=...)`` inside it; an exception leaving it is recorded on the span.
        """
        return CheckScope(self, model)

    def record(self, verdict: Verdict, *, prompt: Prompt | None = None) -> TraceRecord | None:
        """Send ``verdict`` (redacted) to every sink; returns the record, or ``None`` if sampled out. Never raises.

        ``prompt`` is what was checked; it is stored only with ``capture_content=True``.
        """
        try:
            return self._record(verdict, prompt, for_span=False, hold=False)
        except Exception as exc:
            self._status.failed(exc)
            return None

    def _record(
        self, verdict: Verdict, prompt: Prompt | None, *, for_span: bool, hold: bool = True
    ) -> TraceRecord | None:
        rate = keep_rate(verdict, self._rate) if self._sinks else None
        with self._lock:
            if rate is None:
                self._sampled_out += bool(self._sinks)
            else:
                self._recorded += 1
        if rate is None and not for_span:
            return None
        if hold and rate is not None and not for_span and self._batch_writers:
            loop = _running_loop()
            if loop is not None:
                self._hold(verdict, prompt, rate, loop)
                return None
        record = self._build(verdict, prompt, rate or 1.0)
        if rate is None:
            return record
        for sink, status, counted_here in self._sinks:
            _store(sink.write, record, 1, status, counted_here)
        return record

    def _build(self, verdict: Verdict, prompt: Prompt | None, rate: float) -> TraceRecord:
        """The record of ``verdict``, redacted, with the prompt only under content capture."""
        messages = to_messages(prompt) if self.capture_content and prompt is not None else None
        return build_record(verdict, self._redactor, rate, messages)

    def _hold(self, verdict: Verdict, prompt: Prompt | None, rate: float, loop: asyncio.AbstractEventLoop) -> None:
        """Keep ``verdict`` for the next batch; write the batch now if it is full or overdue."""
        now = time.monotonic()
        with self._lock:
            self._held.append((verdict, prompt, rate))
            first = len(self._held) == 1
            if first:
                self._due = now + self._linger
            batch = self._batch
            due = len(self._held) >= _MAX_HELD or now >= self._due
        if first:
            _watch_exit()
            loop.call_later(self._linger, self._write_held, batch)
        if due:
            self._write_held()

    def _write_held(self, batch: int | None = None) -> None:
        """Build the held verdicts' records and write them to every sink, one batch per sink. Never raises.

        With ``batch``, only if the verdicts held are still that batch: a linger timer whose batch was written early
        (full, overdue, flushed) must not cut the next batch short.
        """
        with self._lock:
            if batch is not None and batch != self._batch:
                return
            held, self._held = self._held, []
            self._batch += 1
        if not held:
            return
        records: list[TraceRecord] = []
        for verdict, prompt, rate in held:
            try:
                records.append(self._build(verdict, prompt, rate))
            except Exception as exc:
                self._status.failed(exc)
        if not records:
            return
        for write_many, status, counted_here in self._batch_writers:
            _store(write_many, records, len(records), status, counted_here)

    def stats(self) -> TracerStats:
        """Counts so far, for this tracer and each of its sinks."""
        with self._lock:
            recorded, sampled_out = self._recorded, self._sampled_out
        return TracerStats(
            recorded=recorded,
            sampled_out=sampled_out,
            failed=self._status.snapshot().failed,
            sinks=tuple(status.snapshot() for _, status, _ in self._sinks),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Write the verdicts waiting for a batch, then wait for sinks that write in the background; ``False`` if
        one did not finish in time."""
        self._write_held()
        done = True
        for sink, _, _ in self._sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                done = bool(flush(timeout)) and done
        return done

    def close(self) -> None:
        """Write the verdicts waiting for a batch; close the sinks this tracer opened itself (from spec strings) and
        flush the others."""
        self._write_held()
        for sink, status, _ in self._sinks:
            try:
                if any(sink is owned for owned in self._owned):
                    sink.close()
                elif (flush := getattr(sink, "flush", None)) is not None:
                    flush()
            except Exception as exc:
                status.failed(exc)

    def __repr__(self) -> str:
        parts = [repr(sink) for sink in self.sinks] + (["OTelSpans"] if self._spans else [])
        return f"Tracer([{', '.join(parts)}], sample={self._rate:g})"


class CheckScope:
    """The tracing of one check: its span (when spans are on) and its record."""

    __slots__ = ("_error", "_model", "_record", "_span", "_token", "_tracer", "_verdict")

    def __init__(self, tracer: Tracer, model: str | None) -> None:
        self._tracer = tracer
        self._model = model
        self._span: Span | None = None
        self._token: object = None
        self._verdict: Verdict | None = None
        self._record: TraceRecord | None = None

    def __enter__(self) -> CheckScope:
        spans = self._tracer._spans
        if spans is not None:
            try:
                self._span, self._token = spans.start(self._model)
            except Exception as exc:
                self._tracer._status.failed(exc)
        return self

    def record(self, verdict: Verdict, *, prompt: Prompt | None = None) -> None:
        """Record the check's verdict in the sinks, and keep it for the span. Never raises."""
        tracer = self._tracer
        self._verdict = verdict
        try:
            self._record = tracer._record(verdict, prompt, for_span=self._span is not None and tracer.capture_content)
        except Exception as exc:
            tracer._status.failed(exc)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        span, spans = self._span, self._tracer._spans
        if span is None or spans is None:
            return
        tracer = self._tracer
        try:
            spans.finish(
                span,
                self._token,
                verdict=self._verdict,
                record=self._record if tracer.capture_content else None,
                error=exc,
                redactor=tracer._redactor,
            )
        except Exception as failure:
            tracer._status.failed(failure)


_live_tracers: weakref.WeakSet[Tracer] = weakref.WeakSet()
_exit_watched = False


def _store(write: Callable[[Any], object], payload: object, count: int, status: SinkStatus, counted_here: bool) -> None:
    """Hand ``payload`` (``count`` records) to one sink's ``write`` or ``write_many``; count a failure, and a success
    when the sink does not count its own."""
    try:
        write(payload)
    except Exception as exc:
        status.failed(exc, count)
        return
    if counted_here:
        status.wrote(count)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _watch_exit() -> None:
    """Write held verdicts at interpreter exit.

    Registered on the first hold, after the sinks' own exit hooks (a sink exists before anything is held), so it
    runs before them: exit hooks run last registered, first.
    """
    global _exit_watched
    if not _exit_watched:
        _exit_watched = True
        atexit.register(_write_all_held)


def _write_all_held() -> None:
    for tracer in list(_live_tracers):
        tracer._write_held()


def _forget_held_after_fork() -> None:
    # The parent writes what it held; a child writing it too would store each record twice.
    for tracer in list(_live_tracers):
        tracer._lock = threading.Lock()
        tracer._held = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_after_fork)


def _status_of(sink: TraceSink) -> tuple[SinkStatus, bool]:
    """The sink's own status if it keeps one (it then counts its writes itself), else a new one."""
    status = getattr(sink, "status", None)
    if isinstance(status, SinkStatus):
        return status, False
    return SinkStatus(str(getattr(sink, "name", None) or type(sink).__name__)), True


def resolve_tracer(
    trace: TraceSpec | Tracer | bool | None = None,
    *,
    redact: RedactSpec = None,
    sample: float | None = None,
) -> Tracer | None:
    """The tracer for a guard's ``trace=`` argument, or from ``TARSGUARD_TRACE`` when it is ``None``.

    ``trace`` may be a ``Tracer`` (used as is), a sink, ``OTelSpans``, a spec string (``traces.jsonl``,
    ``sqlite:///traces.db``, ``otel``; comma-separated for several) or a list of these. ``False``, an empty
    list or an unset ``TARSGUARD_TRACE`` mean no tracing (``None``). ``redact`` and ``sample`` configure a
    tracer built here (defaults: built-in redactions, keep everything).
    """
    if trace is False:
        return None
    if trace is True:
        raise ConfigurationError(f"trace=True is not a destination; give a path, a sink, or set {ENV_TRACE}")
    if isinstance(trace, Tracer):
        if redact is not None or sample is not None:
            raise ConfigurationError("configure redaction and sampling on the Tracer itself, not beside it")
        return trace
    source = "trace="
    if trace is None:
        trace = os.environ.get(ENV_TRACE, "").strip()
        source = ENV_TRACE
        if not trace:
            return None
    items = [trace] if isinstance(trace, str | os.PathLike | TraceSink | OTelSpans) else list(trace)
    sinks: list[TraceSink] = []
    owned: list[TraceSink] = []
    spans: OTelSpans | None = None
    for item in items:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if isinstance(item, OTelSpans):
            spans = item
        elif isinstance(item, str):
            for spec in filter(None, (part.strip() for part in item.split(","))):
                made = _from_spec(spec, source)
                if isinstance(made, OTelSpans):
                    spans = made
                else:
                    sinks.append(made)
                    owned.append(made)
        elif isinstance(item, TraceSink):
            sinks.append(item)
        else:
            raise ConfigurationError(f"{source}: {item!r} is not a trace destination")
    if not sinks and spans is None:
        return None
    return Tracer(
        sinks,
        spans=spans or False,
        redact=True if redact is None else redact,
        sample=check_rate(sample),
        owned=owned,
    )


def _from_spec(spec: str, source: str) -> TraceSink | OTelSpans:
    lowered = spec.lower()
    if lowered in ("otel", "opentelemetry"):
        return OTelSpans()
    if lowered.startswith("sqlite:"):
        if not spec.startswith("sqlite:///") or len(spec) == len("sqlite:///"):
            raise ConfigurationError(f"{source}: {spec!r}: write sqlite:///relative.db or sqlite:////absolute.db")
        from ._sqlite import SQLiteSink

        return SQLiteSink(spec)
    if lowered.endswith(".jsonl"):
        from ._jsonl import JsonlSink

        return JsonlSink(spec)
    if lowered.endswith(_SQLITE_SUFFIXES):
        from ._sqlite import SQLiteSink

        return SQLiteSink(spec)
    raise ConfigurationError(
        f"{source}: cannot tell where {spec!r} goes; give a path ending in .jsonl, a sqlite:///path.db URL "
        f"(or a path ending in .db), or otel"
    )
