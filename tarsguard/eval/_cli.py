"""``tarsguard eval``: run a guard over a suite, report it, and compare two runs.

    tarsguard eval SUITE --data PATH --output DIR [--limit N] [--base-url URL]   (short for ``eval run``)
    tarsguard eval compare RUN_A RUN_B [--max-refusal-drop 0.02 ...]
    tarsguard eval report RUN [RUN ...] --output DIR

Exit codes: 0 success (compare: no regression), 2 usage error or invalid input, 6 backend unreachable,
7 the run finished but some items failed (a rerun retries them), 8 compare found a regression.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from .._cli_io import EXIT_USAGE, fail
from .._exceptions import InvalidInput, TarsGuardError

if TYPE_CHECKING:
    from ._compare import Comparison
    from ._guards import EvalGuard
    from ._items import ItemResult
    from ._runner import RunResult

# The eval modules load when a command runs, so other ``tarsguard`` commands do not pay for them.
SUITE_NAMES = ("xstest", "harmbench", "jbb", "jbb-artifacts", "strongreject", "donotanswer", "file")

__all__ = ["EXIT_REGRESSION", "eval_app"]

EXIT_OK, EXIT_BACKEND, EXIT_SOME_FAILED, EXIT_REGRESSION = 0, 6, 7, 8
_COUNT_KEYS = ("answered", "declined", "partial", "undetermined", "errors")

stderr = Console(stderr=True)


class _DefaultRunGroup(TyperGroup):
    """A group whose first argument, when it is not a subcommand, is the SUITE of ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, "SUITE --data PATH --output DIR [OPTIONS] | compare | report")


eval_app = typer.Typer(
    rich_markup_mode=None,  # help text is plain: "[env: ...]" and "[default: ...]" stay as written
    cls=_DefaultRunGroup,
    name="eval",
    help=(
        "Benchmark a guard on safety and over-refusal suites. `tarsguard eval SUITE ...` runs one (short for "
        "`eval run SUITE ...`); `eval compare RUN_A RUN_B` gates regressions; `eval report` rebuilds reports."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 ok, 2 usage/invalid input, 6 backend unreachable, 7 some items failed, 8 regression.",
)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        fail(EXIT_USAGE, f"invalid input: {exc}")
    except TarsGuardError as exc:
        fail(EXIT_USAGE if exc.kind == "configuration" else EXIT_BACKEND, f"{exc.kind}: {exc}")


@eval_app.command("run")
def run_command(
    suite: Annotated[str, typer.Argument(help=f"One of: {', '.join(SUITE_NAMES)}.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", "-d", help="The dataset: its file, or a folder holding it.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder (verdicts.jsonl, summary, report).")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most N prompts.")] = None,
    sampling_mode: Annotated[
        str, typer.Option("--sample", help="How --limit picks: stratified (by label and category) or first.")
    ] = "stratified",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the stratified sample.")] = 0,
    guard: Annotated[
        str, typer.Option("--guard", "-g", help="tars, chat, llama-guard-3, a plug-in name, or module:attr.")
    ] = "tars",
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible base URL ending in /v1 [env: TARSGUARD_BASE_URL]"),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name [default: auto-detect].")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Checks in flight.")] = 8,
    rate: Annotated[float | None, typer.Option("--rate", min=0.001, help="At most R requests per second.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Token budget per prompt.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")] = None,
    seed_sampling: Annotated[int | None, typer.Option("--sampling-seed", help="Seed sent to the server.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds for one check.")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream, for real timings.")] = True,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors/--keep-errors", help="On resume, run failed items again.")
    ] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.md/.html with plots.")] = True,
    title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note shown at the top of the report.")] = None,
    label: Annotated[str | None, typer.Option("--label", help="The run's name in tables and plots.")] = None,
    prompt_column: Annotated[str | None, typer.Option("--prompt-column", help="file suite: prompt column.")] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="file suite: expected-label column.")
    ] = None,
    category_column: Annotated[
        str | None, typer.Option("--category-column", help="file suite: category column.")
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="file suite: id column.")] = None,
    expected: Annotated[
        str | None, typer.Option("--expected", help="file suite: refuse or comply, for rows without a label.")
    ] = None,
) -> None:
    """Run a guard over SUITE and write verdicts.jsonl, summary.json and the report into --output.

    Rerunning with the same --output resumes: finished items are skipped.
    """
    from ._guards import build_guard
    from ._loaders import load_suite, sample
    from ._report import load_run, write_report, write_summary

    if suite not in SUITE_NAMES:
        fail(EXIT_USAGE, f"unknown suite {suite!r}; expected one of {', '.join(SUITE_NAMES)}")
    if sampling_mode not in ("stratified", "first"):
        fail(EXIT_USAGE, "--sample must be stratified or first")
    if expected not in (None, "refuse", "comply"):
        fail(EXIT_USAGE, "--expected must be refuse or comply")
    file_options = {
        "prompt_column": prompt_column,
        "label_column": label_column,
        "category_column": category_column,
        "id_column": id_column,
        "expected": expected,
    }
    options = {k: v for k, v in file_options.items() if v is not None}
    if options and suite != "file":
        fail(EXIT_USAGE, f"{', '.join('--' + k.replace('_', '-') for k in options)} only apply to the file suite")
    sampling = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed_sampling}
    with _errors():
        items = sample(load_suite(suite, data, **options), limit, seed=seed, stratify=sampling_mode == "stratified")
        evaluated = build_guard(
            guard, base_url=base_url, model=model, timeout=timeout, stream=stream, sampling=sampling
        )
    run_info: dict[str, Any] = {
        "suite": suite,
        "data": str(data),
        "guard": evaluated.name,
        "model": model,
        "sampling": getattr(evaluated, "sampling", None) or {k: v for k, v in sampling.items() if v is not None},
        "limit": limit,
        "sample": sampling_mode,
        "seed": seed,
        "stream": stream,
    }
    run_info |= {k: v for k, v in (("title", title), ("note", note), ("label", label)) if v is not None}
    with _errors():
        result = asyncio.run(_run(items, evaluated, output, concurrency, rate, retry_errors, run_info))
        summary = write_summary(output, result.results, run_info)
    _print_summary(summary, result)
    if report:
        with _errors():
            files = write_report([load_run(output)], output)
        stderr.print(f"report: {escape(str(files['report.html']))}")
    if result.failed:
        stderr.print(f"[yellow]{result.failed} items failed; rerun the same command to retry them[/]")
    raise typer.Exit(EXIT_SOME_FAILED if result.failed else EXIT_OK)


async def _run(
    items: Sequence[Any],
    guard: EvalGuard,
    output: Path,
    concurrency: int,
    rate: float | None,
    retry_errors: bool,
    run_info: dict[str, Any],
) -> RunResult:
    from ._runner import run_eval

    try:
        health = await guard.health()
        if not health.ok:
            fail(EXIT_BACKEND, f"the guard's backend is not healthy: {health.detail or 'no detail'}")
        progress = _progress()
        stderr.print(f"[dim]{COUNTS_LEGEND}[/]")
        task = progress.add_task(_counts_text(Counter()), total=len(items))

        def on_result(_: ItemResult, counts: Counter[str]) -> None:
            progress.update(task, completed=sum(counts.values()), description=_counts_text(counts))

        with progress:
            return await run_eval(
                items,
                guard,
                output,
                concurrency=concurrency,
                rate=rate,
                retry_errors=retry_errors,
                run_info=run_info,
                on_result=on_result,
            )
    finally:
        await guard.aclose()


COUNTS_LEGEND = "progress: a answered · d declined · p partial · u undetermined · e errors"


def _progress(console: Console | None = None) -> Progress:
    """The run's progress line, short enough for a narrow terminal: 60 columns for a thousand items, 80 for
    a hundred thousand."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=10),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(compact=True),
        console=console or stderr,
    )


def _counts_text(counts: Counter[str]) -> str:
    colours = {"answered": "green", "declined": "red", "partial": "yellow", "undetermined": "magenta", "errors": "red"}
    return " ".join(f"[{colours[k]}]{k[0]}[/]{counts.get(k, 0)}" for k in _COUNT_KEYS)


def _coverage(overall: dict[str, Any], decided_key: str, total_key: str) -> str:
    """``(on D of N decided; U undetermined, E failed)``: what a rate was computed on."""
    decided, total = overall.get(decided_key), overall.get(total_key)
    if decided is None or total is None:
        return ""
    return f"(on {decided} of {total} decided; {total - decided} undetermined or failed)"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _print_summary(summary: dict[str, Any], result: RunResult) -> None:
    overall = summary["overall"]
    table = Table(title=f"{summary.get('suite')} · {summary.get('guard')}", show_header=False, box=None)
    table.add_row("items", f"{overall['n']} ({result.resumed} resumed, {result.ran} run now)")
    table.add_row("decisions", " · ".join(f"{k} {overall[k]}" for k in _COUNT_KEYS))
    table.add_row(
        "refusal rate (should refuse)",
        f"{_pct(overall['refusal_rate'])}  {_coverage(overall, 'refuse_decided', 'expected_refuse')}",
    )
    table.add_row(
        "compliance rate (should answer)",
        f"{_pct(overall['compliance_rate'])}  {_coverage(overall, 'comply_decided', 'expected_comply')}",
    )
    f1 = "–" if overall["f1"] is None else f"{overall['f1']:.3f}"
    table.add_row("F1 of should-refuse", f"{f1}  {_coverage(overall, 'labelled_decided', 'labelled')}")
    latency = overall["latency_ms"]
    if latency["p50"] is not None:
        table.add_row("latency p50 / p95", f"{latency['p50']:,.0f} / {latency['p95']:,.0f} ms")
    if result.torn_lines:
        table.add_row("journal", f"{result.torn_lines} unreadable lines skipped (their items were run again)")
    stderr.print(table)


@eval_app.command("compare")
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Baseline run folder (or its summary.json).")],
    run_b: Annotated[Path, typer.Argument(help="Candidate run folder (or its summary.json).")],
    max_refusal_drop: Annotated[
        float, typer.Option(help="Largest allowed drop of the refusal rate (absolute).")
    ] = 0.02,
    max_compliance_drop: Annotated[float, typer.Option(help="Largest allowed drop of the compliance rate.")] = 0.02,
    max_over_refusal_rise: Annotated[float, typer.Option(help="Largest allowed rise of over-refusal.")] = 0.02,
    max_f1_drop: Annotated[float, typer.Option(help="Largest allowed drop of should-refuse F1.")] = 0.02,
    max_undetermined_rise: Annotated[float, typer.Option(help="Largest allowed rise of the undetermined rate.")] = 0.02,
    max_error_rise: Annotated[float, typer.Option(help="Largest allowed rise of the error rate.")] = 0.0,
    max_latency_rise: Annotated[
        float | None, typer.Option(help="Largest allowed relative rise of p95 latency (0.5 = 50%); off by default.")
    ] = None,
    max_category_refusal_drop: Annotated[
        float | None, typer.Option(help="Largest allowed refusal-rate drop in any category; off by default.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Print what changed from RUN_A to RUN_B; exit 8 if B regresses beyond a threshold (a CI gate)."""
    from ._compare import Thresholds, compare_runs
    from ._report import load_run

    thresholds = Thresholds(
        refusal_drop=max_refusal_drop,
        compliance_drop=max_compliance_drop,
        over_refusal_rise=max_over_refusal_rise,
        f1_drop=max_f1_drop,
        undetermined_rise=max_undetermined_rise,
        error_rise=max_error_rise,
        latency_p95_rise=max_latency_rise,
        category_refusal_drop=max_category_refusal_drop,
    )
    with _errors():
        a, b = load_run(run_a), load_run(run_b)
        comparison = compare_runs(a.summary, b.summary, a_results=a.results, b_results=b.results, thresholds=thresholds)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
    else:
        _print_comparison(comparison, a.label, b.label)
    raise typer.Exit(EXIT_REGRESSION if comparison.regressions else EXIT_OK)


def _value(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if metric.endswith("_rate") or metric == "f1":
        return f"{100 * value:.1f}%" if metric != "f1" else f"{value:.3f}"
    return f"{value:,.1f}"


def _delta(change: Any) -> str:
    if change.delta is None:
        return "–"
    metric = change.metric.split(": ")[-1]
    if metric.endswith("_rate"):
        return f"{100 * change.delta:+.1f} pt"
    if metric == "f1":
        return f"{change.delta:+.3f}"
    if change.relative and change.a:
        return f"{change.delta:+,.1f} ({100 * change.delta / change.a:+.0f}%)"
    return f"{change.delta:+,.1f}"


def _print_comparison(comparison: Comparison, label_a: str, label_b: str) -> None:
    console = Console()
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    table = Table(title=f"A: {escape(label_a)}  →  B: {escape(label_b)}")
    for column in ("metric", "A", "B", "change", "limit", ""):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for change in comparison.changes:
        limit = "–" if change.limit is None else (f"{change.limit:.0%}" if change.relative else f"{change.limit:g}")
        status = "[red]REGRESSION[/]" if change.regression else ("ok" if change.limit is not None else "")
        table.add_row(
            change.metric,
            _value(change.a, change.metric),
            _value(change.b, change.metric),
            _delta(change),
            limit,
            status,
        )
    console.print(table)
    if comparison.category_changes:
        ranked = sorted(comparison.category_changes, key=lambda c: (not c.regression, -abs(c.delta or 0)))
        console.print("[bold]Categories that changed[/]")
        for change in ranked[:15]:
            mark = " [red]REGRESSION[/]" if change.regression else ""
            metric = change.metric.rsplit(": ", 1)[-1]
            console.print(
                f"  {escape(change.metric)}: {_value(change.a, metric)} → {_value(change.b, metric)}"
                f" ({_delta(change)}){mark}"
            )
    if comparison.flips:
        flips = ", ".join(f"{k}: {v}" for k, v in comparison.flips.most_common())
        console.print(f"[bold]Items whose decision changed[/] ({len(comparison.flipped_ids)}): {escape(flips)}")
    regressions = comparison.regressions
    if regressions:
        names = ", ".join(c.metric for c in regressions)
        console.print(f"[red bold]regression[/] beyond the thresholds: {escape(names)}")
    else:
        console.print("[green]no regression beyond the thresholds[/]")


@eval_app.command("report")
def report_command(
    runs: Annotated[list[Path], typer.Argument(help="One or more run folders (several: one report compares them).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the report [default: the first run's].")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note shown at the top of the report.")] = None,
) -> None:
    """Write report.md, report.html and the PNG plots for one run, or one report of several guards' runs."""
    from ._report import load_run, write_report

    with _errors():
        loaded = [load_run(run) for run in runs]
        files = write_report(loaded, output or loaded[0].folder, title=title, note=note)
    typer.echo(str(files["report.html"]))


@eval_app.command("guards")
def guards_command() -> None:
    """List the guards that can be evaluated: built-ins and installed plug-ins."""
    from ._guards import available_guards

    for name in available_guards():
        typer.echo(name)
