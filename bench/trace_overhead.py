"""Check throughput with each trace sink on vs off, side by side in one run.

Starts the scripted OpenAI-compatible server (tarsguard.testing) in its own process on 127.0.0.1, replying with a
TARS-format output of realistic length (the same reply as bench/overhead.py), then runs ``AsyncGuard.check`` at
concurrency 64 in batches. Every batch of a configuration sits between two batches of "off", and that round's ratio
"vs off" is its throughput over the geometric mean of those two: the machine's speed drifts by several percent within
seconds, and a neighbour on each side cancels most of that drift. Each configuration gets one such batch per round, in
rotating order. Each batch of checks starts right after a full garbage collection, so none inherits a collection that
earlier batches built up.

What is left is noise that does not cancel: on a shared 2-core VM, two neighbouring batches of 200 checks differ by
several percent. So "vs off" is the 20%-trimmed geometric mean over rounds, with its 95% confidence interval, and a
target reads "met" only when the whole interval clears it, "MISSED" when none of it does, and "unsettled" otherwise:
more rounds (``--rounds``, with ``--mode`` and ``--only`` to spend them on one row) narrow the interval. The median and
middle half of the rounds' ratios are shown beside it. The configurations:

- off: no tracer;
- off again: no tracer either, run as a configuration of its own: its ratio to off is the measurement's noise;
- jsonl: a ``Tracer`` with a ``JsonlSink`` (built-in redaction on, every verdict kept; records written in batches);
- jsonl, linger=0: the same, each record written before its check returns;
- sqlite: a ``Tracer`` with a ``SQLiteSink`` (its writer thread's flush is inside the timed run);
- sqlite, linger=0: the same, each record queued for the writer thread before its check returns;
- otel: a ``Tracer`` with ``OTelSpans`` on an OTel SDK ``TracerProvider`` (batch processor, in-memory exporter).

The tracer is applied around ``AsyncGuard.check`` exactly as ``Guard(trace=...)`` applies it (``with
tracer.check(model) as scope: verdict = ...; scope.record(verdict, prompt=prompt)``), on one guard, so every
configuration shares its connection pool. Targets (issue 8): throughput >= 0.95x of off with JSONL, >= 0.9x with
SQLite. The "tracer µs/check" column is the tracer's own time per check: starting the scope (and span), ``scope.record``
(holding the verdict for a batch, or redaction, serialisation and the write or enqueue), closing it (describing and
ending the span), and writing the held batches from event-loop callbacks, in this thread's CPU time; it is
measured in three more batches per configuration after the rounds, so the timing calls stay out of the throughput
rounds. "client CPU µs/check" is the benchmark process's CPU time per check (every thread, the SQLite writer's
included); "CPU-bound ratio" is the neighbouring off batches' CPU per check over the configuration's (median over
rounds): the throughput ratio the client would see if it, not the server, were the bottleneck. On a machine whose
speed varies, both ratios vary with it: compare "off again".

    .venv/bin/python bench/trace_overhead.py [--rounds 21] [--requests 200] [--mode both|streamed|not-streamed]
        [--only NAME ...] [--json results.json]
    .venv/bin/python bench/trace_overhead.py --pool results.json more.json   # several runs together
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from overhead import CONTENT, MESSAGES, MODEL, start_server

from tarsguard import AsyncGuard, Verdict
from tarsguard.tracing import JsonlSink, OTelSpans, SQLiteSink, Tracer

CONCURRENCY = 64
TARGETS = {"jsonl": 0.95, "sqlite": 0.90}
TIMED_BATCHES = 3
TRIM = 0.2
"""Share of rounds dropped from each end before averaging a configuration's ratios."""
SHARED_NEIGHBOURS = math.sqrt(4 / 3)
"""How much wider a confidence interval gets because two rounds of a configuration can share an off batch.

One batch of off is the neighbour of the configurations before and after it, so two rounds' log ratios can be
correlated: at most 1/6 (each shares a quarter of a batch's variance, out of one and a half). Counting every pair as
correlated widens the variance of their mean by at most 1 + 2/6.
"""


class TimedTracer(Tracer):
    """A ``Tracer`` that, while ``timing`` is on, also counts the CPU time of the batches it writes from event-loop
    callbacks.

    Batches written inside ``scope.record`` are already inside the check's timed block and are not counted twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_s = 0.0
        self.timing = False
        self.in_scope = False

    def _write_held(self, batch: int | None = None) -> None:
        if not self.timing or self.in_scope:
            super()._write_held(batch)
            return
        started = time.thread_time()
        super()._write_held(batch)
        self.held_s += time.thread_time() - started


class Config:
    """One way of running checks: a tracer (or none) around the same guard.

    ``flush`` ends a batch of checks: the tracer's held records and the sinks' background writes are inside it.
    Once ``start_timing()`` is called, the tracer's own CPU time is counted too; the throughput rounds run before
    it, untimed, exactly the guard's code.
    """

    def __init__(self, name: str, tracer: TimedTracer | None, flush: Callable[[], object] | None = None) -> None:
        self.name = name
        self.tracer = tracer
        self.flush = flush or (lambda: tracer.flush(60) if tracer is not None else None)
        self.record_s = 0.0
        self.records = 0

    @property
    def tracer_s(self) -> float:
        """The tracer's CPU time so far: scopes, and batches written from event-loop callbacks."""
        return self.record_s + (self.tracer.held_s if self.tracer is not None else 0.0)

    def start_timing(self) -> None:
        """Count the tracer's own CPU time from now on, from zero."""
        self.record_s, self.records = 0.0, 0
        if self.tracer is not None:
            self.tracer.timing, self.tracer.held_s = True, 0.0

    async def check(self, guard: AsyncGuard) -> Verdict:
        tracer = self.tracer
        if tracer is None:
            return await guard.check(MESSAGES)
        if not tracer.timing:
            with tracer.check(model=MODEL) as scope:  # what ``Guard(trace=...)`` runs around each check
                verdict = await guard.check(MESSAGES)
                scope.record(verdict, prompt=MESSAGES)
            return verdict
        # The same block, spelled out to time the tracer's own share (CPU time of this thread, so other processes
        # on the machine do not inflate it).
        started = time.thread_time()
        scope = tracer.check(model=MODEL)
        scope.__enter__()
        spent = time.thread_time() - started
        try:
            verdict = await guard.check(MESSAGES)
            started = time.thread_time()
            tracer.in_scope = True
            scope.record(verdict, prompt=MESSAGES)
            tracer.in_scope = False
        except BaseException as exc:
            scope.__exit__(type(exc), exc, exc.__traceback__)
            raise
        scope.__exit__(None, None, None)
        self.record_s += spent + time.thread_time() - started
        self.records += 1
        return verdict


def otel_config(name: str, folder: Path) -> Config | None:
    """Spans on an OTel SDK provider (batch processor, in-memory exporter); ``None`` without the SDK."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))

    def flush_spans() -> None:
        provider.force_flush()
        exporter.clear()

    return Config(name, TimedTracer(spans=OTelSpans(provider)), flush_spans)


CONFIGS: dict[str, Callable[[str, Path], Config | None]] = {
    "off again": lambda name, folder: Config(name, None),
    "jsonl": lambda name, folder: Config(name, TimedTracer([JsonlSink(folder / "traces.jsonl")])),
    "jsonl, linger=0": lambda name, folder: Config(name, TimedTracer([JsonlSink(folder / "each.jsonl")], linger=0)),
    "sqlite": lambda name, folder: Config(name, TimedTracer([SQLiteSink(folder / "traces.db")])),
    "sqlite, linger=0": lambda name, folder: Config(name, TimedTracer([SQLiteSink(folder / "each.db")], linger=0)),
    "otel": otel_config,
}
"""The configurations compared with off: each made from its name and a folder for its files."""


def configs(folder: Path, only: Collection[str] = ()) -> list[Config]:
    """Off, then the configurations named in ``only`` (every one when it is empty)."""
    chosen = [make(name, folder) for name, make in CONFIGS.items() if not only or name in only]
    return [Config("off", None)] + [config for config in chosen if config is not None]


async def run_batch(config: Config, guard: AsyncGuard, requests: int) -> tuple[float, float]:
    """Run ``requests`` checks with ``CONCURRENCY`` in flight (sink flush included).

    Returns checks per second, and this process's CPU time per check in µs (all threads: the SQLite writer too).
    """
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            await config.check(guard)

    # Every batch starts from an empty young generation and no pending full collection, so the garbage collections
    # inside it are the ones its own checks cause, not a full collection that earlier batches built up.
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    config.flush()
    return requests / (time.perf_counter() - started), (time.process_time() - cpu) / requests * 1e6


async def measure(
    base_url: str, stream: bool, rounds: int, requests: int, folder: Path, only: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    guard = AsyncGuard(base_url, model=MODEL, stream=stream, max_retries=0)
    runs = configs(folder, only)
    for config in runs:  # warm up: pools, pydantic, sinks' files and threads
        await run_batch(config, guard, 256)
    off, others = runs[0], runs[1:]
    throughput: dict[str, list[float]] = {c.name: [] for c in runs}
    cpu: dict[str, list[float]] = {c.name: [] for c in runs}
    ratios: dict[str, list[float]] = {off.name: [1.0]} | {c.name: [] for c in others}
    cpu_ratios: dict[str, list[float]] = {off.name: [1.0]} | {c.name: [] for c in others}

    async def batch(config: Config) -> tuple[float, float]:
        rps, cpu_us = await run_batch(config, guard, requests)
        throughput[config.name].append(rps)
        cpu[config.name].append(cpu_us)
        return rps, cpu_us

    before = await batch(off)
    for round_ in range(rounds):
        shift = round_ % len(others)
        for config in others[shift:] + others[:shift]:
            rps, cpu_us = await batch(config)
            after = await batch(off)
            # Against the off batches on either side: the machine's drift over the three batches cancels out.
            ratios[config.name].append(rps / math.sqrt(before[0] * after[0]))
            cpu_ratios[config.name].append(math.sqrt(before[1] * after[1]) / cpu_us)
            before = after
    for config in others:  # the tracer's own CPU time, in batches of their own, outside the throughput rounds
        config.start_timing()
        for _ in range(TIMED_BATCHES):
            await run_batch(config, guard, requests)
    await guard.aclose()
    results: dict[str, dict[str, Any]] = {}
    for config in runs:
        stats = config.tracer.stats() if config.tracer else None
        mine = ratios[config.name]
        quartiles = statistics.quantiles(mine, n=4) if len(mine) > 1 else mine * 3
        ratio, ratio_ci = summarise(mine) if config is not off else (1.0, (1.0, 1.0))
        results[config.name] = {
            "rps": statistics.median(throughput[config.name]),
            "ratio": ratio,
            "ratio_ci": ratio_ci,
            "ratio_median": statistics.median(mine),
            "ratio_iqr": (quartiles[0], quartiles[2]),
            "ratios": mine,
            "cpu_us": statistics.median(cpu[config.name]),
            "cpu_ratio": statistics.median(cpu_ratios[config.name]),
            "record_us": config.tracer_s / config.records * 1e6 if config.records else 0.0,
            "failed": sum(s.failed + s.dropped for s in stats.sinks) + stats.failed if stats else 0,
        }
        if config.tracer:
            config.tracer.close()
    return results


def summarise(ratios: list[float]) -> tuple[float, tuple[float, float]]:
    """The 20%-trimmed geometric mean of ``ratios``, and its 95% confidence interval.

    Trimmed, so a batch the machine stalled in cannot move it; a mean, because it needs about 0.7x the rounds of a
    median for the same precision. The interval is Tukey and McLaughlin's (the winsorized standard deviation, Student's
    t with n - 2g - 1 degrees of freedom), widened by ``SHARED_NEIGHBOURS``.
    """
    logs = sorted(math.log(ratio) for ratio in ratios)
    n = len(logs)
    cut = int(TRIM * n)
    centre = statistics.fmean(logs[cut : n - cut])
    if n - 2 * cut < 2:
        return math.exp(centre), (math.nan, math.nan)
    winsorized = [logs[cut]] * cut + logs[cut : n - cut] + [logs[n - cut - 1]] * cut
    error = statistics.stdev(winsorized) / ((1 - 2 * cut / n) * math.sqrt(n)) * SHARED_NEIGHBOURS
    t = t_975(n - 2 * cut - 1)
    return math.exp(centre), (math.exp(centre - t * error), math.exp(centre + t * error))


T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
"""Student's t 97.5% quantiles for 1 to 10 degrees of freedom."""


def t_975(df: int) -> float:
    """Student's t 97.5% quantile: from the table to 10 degrees of freedom, then Cornish-Fisher's series (to 0.1%)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = statistics.NormalDist().inv_cdf(0.975)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def target_cell(name: str, ratio_ci: tuple[float, float], more: str = "rounds") -> str:
    """A row's target and its verdict: ``met`` when the whole interval clears the target, ``MISSED`` when none of it
    does, else ``unsettled`` (needing more ``more``); empty for a row without a target."""
    target = TARGETS.get(name)
    if target is None:
        return ""
    low, high = ratio_ci
    verdict = "met" if low >= target else "MISSED" if high < target else f"unsettled: more {more}"
    return f">= {target:.2f}x {verdict}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| mode | trace | c=64 throughput | vs off (95% CI) | target | vs off: median (middle half) "
        "| client CPU µs/check | CPU-bound ratio | tracer µs/check | sink failures |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, by_config in results.items():
        for name, r in by_config.items():
            ci_low, ci_high = r["ratio_ci"]
            low, high = r["ratio_iqr"]
            lines.append(
                f"| {mode} | {name} | {r['rps']:.0f} req/s | {r['ratio']:.3f}x ({ci_low:.3f}-{ci_high:.3f}) "
                f"| {target_cell(name, r['ratio_ci'])} "
                f"| {r['ratio_median']:.2f}x ({low:.2f}-{high:.2f}) | {r['cpu_us']:.0f} | {r['cpu_ratio']:.2f}x "
                f"| {r['record_us']:.0f} | {r['failed']} |"
            )
    return "\n".join(lines)


def pooled_table(paths: list[Path]) -> str:
    """Each row's rounds from several ``--json`` results, summarised two ways: all rounds together, and each run as one
    reading (the geometric mean of the runs' trimmed means, with Student's t over runs).

    Rounds pooled assume every round is independent; runs on different days or stretches of the machine can differ by
    more than their own intervals allow, and only the interval over runs sees that. A target reads ``met`` only when
    both intervals clear it (the rounds' alone for a single run).
    """
    rounds: dict[tuple[str, str], list[float]] = {}
    per_run: dict[tuple[str, str], list[float]] = {}
    for path in paths:
        for mode, by_config in json.loads(path.read_text()).items():
            for name, result in by_config.items():
                if name != "off":
                    rounds.setdefault((mode, name), []).extend(result["ratios"])
                    per_run.setdefault((mode, name), []).append(result["ratio"])
    lines = [
        "| mode | trace | runs | rounds | rounds pooled (95% CI) | runs (95% CI) | each run | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (mode, name), ratios in rounds.items():
        ratio, (low, high) = summarise(ratios)
        runs = per_run[mode, name]
        if len(runs) > 1:
            run_ratio, (run_low, run_high) = between_runs(runs)
            run_cell = f"{run_ratio:.3f}x ({run_low:.3f}-{run_high:.3f})"
            envelope = (min(low, run_low), max(high, run_high))
        else:
            run_cell, envelope = "one run", (low, high)
        lines.append(
            f"| {mode} | {name} | {len(runs)} | {len(ratios)} | {ratio:.3f}x ({low:.3f}-{high:.3f}) | {run_cell} "
            f"| {', '.join(f'{r:.3f}' for r in runs)} "
            f"| {target_cell(name, envelope, more='runs')} |"
        )
    return "\n".join(lines)


def between_runs(estimates: list[float]) -> tuple[float, tuple[float, float]]:
    """The geometric mean of two or more runs' ratios and its 95% interval (Student's t over runs)."""
    logs = [math.log(estimate) for estimate in estimates]
    centre = statistics.fmean(logs)
    error = t_975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(centre), (math.exp(centre - error), math.exp(centre + error))


MODES = {"streamed": ("streamed (default)", True), "not-streamed": ("not streamed", False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=200, help="checks per round and configuration")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both", help="streamed checks, or not, or both")
    parser.add_argument(
        "--only", action="append", choices=CONFIGS, default=[], help="compare only this configuration with off (repeat)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here, each round's ratio included")
    parser.add_argument(
        "--pool", type=Path, nargs="+", metavar="JSON", help="summarise earlier --json results together"
    )
    args = parser.parse_args()
    if args.pool:
        print(pooled_table(args.pool))
        return
    modes = list(MODES) if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        replies = folder / "replies.jsonl"
        replies.write_text(json.dumps({"content": CONTENT}) + "\n")
        proc, base_url = start_server(replies)
        try:
            results = {
                MODES[mode][0]: asyncio.run(
                    measure(base_url, MODES[mode][1], args.rounds, args.requests, folder / mode, args.only)
                )
                for mode in modes
            }
        finally:
            proc.terminate()
            proc.wait(10)
    print(
        f"scripted server on loopback, ~{len(CONTENT.split())}-word TARS-format reply, c={CONCURRENCY}, "
        f"{args.rounds} rounds of {args.requests} checks per configuration, each batch between two of off; "
        f"throughput: median; vs off: each round's ratio is the batch's throughput over its two neighbours' geometric "
        f"mean; the 20%-trimmed geometric mean of those and its 95% confidence interval; their median and middle half; "
        f"{sys.platform}"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
