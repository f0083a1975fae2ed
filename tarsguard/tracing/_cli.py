"""``tarsguard traces``: tail, show, summarize and export trace files (JSONL) and databases (SQLite)."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._cli_io import EXIT_USAGE, fail, open_out
from .._types import Decision
from ._record import TraceRecord
from ._store import TraceStore, open_traces, summarize

__all__ = ["traces_app"]


traces_app = typer.Typer(
    rich_markup_mode=None,  # help text is plain: "[env: ...]" and "[default: ...]" stay as written
    name="traces",
    help="Read trace files (.jsonl) and databases (SQLite): tail, show, stats, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_stderr = Console(stderr=True, soft_wrap=True)

TracePath = Annotated[Path, typer.Argument(help="A JSONL trace file or a SQLite trace database.", show_default=False)]
Since = Annotated[
    str | None, typer.Option("--since", help="Only checks from this time on: 15m, 2h, 7d, or an ISO 8601 time (UTC).")
]
Until = Annotated[str | None, typer.Option("--until", help="Only checks before this time (same forms as --since).")]
DecisionOpt = Annotated[Decision | None, typer.Option("--decision", help="Only verdicts with this decision.")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CSV_COLUMNS = (
    "verdict_id",
    "created_at",
    "decision",
    "confidence",
    "allowed",
    "model",
    "backend",
    "total_ms",
    "first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "answer_tokens",
    "finish_reason",
    "retries",
    "error_type",
    "error_policy",
    "sample_rate",
    "answer",
)


@traces_app.command()
def tail(
    path: TracePath,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many of the latest records to print.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records as they arrive.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each record as one JSON line.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between polls with -f.")] = 0.5,
) -> None:
    """Print the latest records, one per line; with -f, follow the file (across rotations) until interrupted."""
    with _opened(path) as store:
        follower = store.follow()  # the backlog ends where following starts: nothing missed, nothing twice
        try:
            for record in follower.backlog(lines):
                _print_line(record, as_json)
            _report(follower.problems)
            follower.problems.clear()
            while follow:
                for record in follower.poll():
                    _print_line(record, as_json)
                sys.stdout.flush()
                _report(follower.problems)
                follower.problems.clear()
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            follower.close()


@traces_app.command()
def show(
    path: TracePath,
    verdict_id: Annotated[str, typer.Argument(help="A verdict id, or a unique prefix of one (6+ characters).")],
) -> None:
    """Print one record in full, as indented JSON."""
    if len(verdict_id) < 6:
        fail(EXIT_USAGE, "give at least 6 characters of the verdict id")
    with _opened(path) as store:
        found = store.find(verdict_id)
        _report(store.problems)
    ids = {record.trace.verdict_id for record in found}
    if not found:
        fail(EXIT_USAGE, f"no verdict {verdict_id!r} in {path}")
    if len(ids) > 1:
        fail(EXIT_USAGE, f"{verdict_id!r} matches {len(ids)} verdicts: {', '.join(sorted(ids)[:5])}")
    typer.echo(json.dumps(found[-1].model_dump(mode="json"), indent=2, ensure_ascii=False))


@traces_app.command()
def stats(
    path: TracePath,
    since: Since = None,
    until: Until = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Counts by decision and model, latency percentiles, error and bypass counts, over a time window."""
    window = _window(since, until)
    with _opened(path) as store:
        summary = summarize(store.records(since=window[0], until=window[1]))
        _report(store.problems)
    data = summary.as_dict()
    data["window"] = {"since": _iso(window[0]), "until": _iso(window[1])}
    data["unreadable_lines"] = len(store.problems)
    if as_json:
        typer.echo(json.dumps(data))
        return
    table = Table(show_header=False, box=None)
    table.add_row("verdicts", f"{summary.total}" + _estimated(summary.total, summary.estimated_total))
    for decision in Decision:
        table.add_row(f"  {decision.value}", str(summary.by_decision.get(decision.value, 0)))
    table.add_row("errors", str(summary.errors))
    table.add_row("bypasses (failed open)", str(summary.bypasses))
    for name, value in summary.latency_ms.items():
        table.add_row(f"latency {name}", f"{value:.1f} ms")
    table.add_row("models", escape(", ".join(f"{m} ({n})" for m, n in summary.by_model.most_common())) or "-")
    table.add_row("from", _iso(summary.first) or "-")
    table.add_row("to", _iso(summary.last) or "-")
    Console().print(table)


@traces_app.command()
def export(
    path: TracePath,
    format: Annotated[str, typer.Option("--format", help="jsonl (whole records) or csv (one row of key fields).")] = (
        "jsonl"
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    since: Since = None,
    until: Until = None,
    decision: DecisionOpt = None,
) -> None:
    """Write the records (optionally filtered) as JSONL or CSV."""
    if format not in ("jsonl", "csv"):
        fail(EXIT_USAGE, f"--format must be jsonl or csv, not {format!r}")
    window = _window(since, until)
    with _opened(path) as store, open_out(output, newline="") as out:
        records = store.records(since=window[0], until=window[1], decision=decision)
        if format == "jsonl":
            for record in records:
                out.write(record.model_dump_json() + "\n")
        else:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for record in records:
                writer.writerow(_csv_row(record))
        _report(store.problems)


def _csv_row(record: TraceRecord) -> list[Any]:
    trace = record.trace
    usage = trace.usage
    error = trace.error
    return [
        trace.verdict_id,
        trace.created_at.isoformat(),
        record.decision.value,
        record.confidence,
        record.allowed,
        trace.model,
        trace.backend,
        trace.timings.total_ms,
        trace.timings.first_token_ms,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.answer_tokens,
        trace.finish_reason,
        trace.retries,
        None if error is None else error.type,
        None if error is None else error.policy,
        record.sample_rate,
        record.answer,
    ]


def _print_line(record: TraceRecord, as_json: bool) -> None:
    if as_json:
        typer.echo(record.model_dump_json())
        return
    trace = record.trace
    answer = record.answer.replace("\n", " ")
    answer = answer if len(answer) <= 60 else answer[:59] + "…"
    error = f" error={trace.error.type}/{trace.error.policy}" if trace.error else ""
    typer.echo(
        f"{trace.created_at.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z  {record.decision.value:<12} "
        f"{record.confidence:.2f}  {trace.timings.total_ms:8.1f} ms  {trace.model or '-'}  {trace.verdict_id}"
        f"{error}  {json.dumps(answer, ensure_ascii=False)}"
    )


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """A moment from ``15m``/``2h``/``7d``-style durations ago, or an ISO 8601 time (naive means UTC)."""
    match = _DURATION.match(value.strip().lower())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a duration (15m, 2h, 7d) nor an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    return (
        parse_time(since, now) if since else None,
        parse_time(until, now) if until else None,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _estimated(total: int, estimated: float) -> str:
    return f" (about {estimated:.0f} before sampling)" if round(estimated) != total else ""


def _report(problems: list[Any]) -> None:
    if not problems:
        return
    _stderr.print(f"[yellow]warning:[/] {len(problems)} line(s) could not be read:")
    for problem in problems[:10]:
        _stderr.print(f"  {escape(str(problem))}")
    if len(problems) > 10:
        _stderr.print(f"  … and {len(problems) - 10} more")


@contextmanager
def _opened(path: Path) -> Iterator[TraceStore]:
    try:
        store = open_traces(path)
    except (FileNotFoundError, OSError) as exc:
        fail(EXIT_USAGE, f"cannot read {path}: {exc}")
    try:
        yield store
    finally:
        store.close()
