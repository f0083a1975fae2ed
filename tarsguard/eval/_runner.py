"""Running a guard over a suite: concurrent, rate-limited if asked, resumable from its journal.

``verdicts.jsonl`` in the output folder is the journal: one line per finished item, appended as items finish.
A rerun reads it and skips every item id that already has a decision (failed items are tried again).
``run.json`` records what the folder holds (suite, guard, model, sampling), so a rerun cannot mix runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from .._exceptions import ConfigurationError, InvalidInput, TarsGuardError
from ._guards import EvalGuard, Outcome
from ._items import EvalItem, ItemError, ItemResult

__all__ = ["JOURNAL", "RUN_INFO", "RateLimiter", "RunResult", "load_results", "read_journal", "run_eval"]

JOURNAL = "verdicts.jsonl"
RUN_INFO = "run.json"
_IDENTITY_KEYS = ("suite", "guard", "model", "sampling", "data")


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart (``rate`` per second)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise ConfigurationError(f"rate must be a positive number of requests per second, got {rate!r}")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def acquire(self) -> None:
        """Wait for the next free slot."""
        now = self._clock()
        slot = now if self._next is None else max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self._sleep(slot - now)


@dataclass
class RunResult:
    """The results of a run in item order, with how many came from the journal and how many were run now."""

    results: list[ItemResult]
    resumed: int
    ran: int
    counts: Counter[str] = field(default_factory=Counter)
    torn_lines: int = 0

    @property
    def failed(self) -> int:
        """Items whose check failed (no decision)."""
        return sum(1 for r in self.results if r.error is not None)


def read_journal(path: Path) -> tuple[dict[str, ItemResult], int]:
    """The journal's results by item id (the last line of an id wins) and how many lines could not be read."""
    results: dict[str, ItemResult] = {}
    torn = 0
    if not path.exists():
        return results, torn
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                result = ItemResult.model_validate_json(line)
            except ValueError:
                torn += 1  # a line cut short by a crash or kill; its item is run again
                continue
            results[result.id] = result
    return results, torn


def _outcome_key(result: ItemResult) -> str:
    if result.error is not None:
        return "errors"
    assert result.decision is not None
    return result.decision.value


async def run_eval(
    items: Sequence[EvalItem],
    guard: EvalGuard,
    output: str | Path,
    *,
    concurrency: int = 8,
    rate: float | None = None,
    retry_errors: bool = True,
    run_info: dict[str, Any] | None = None,
    on_result: Callable[[ItemResult, Counter[str]], None] | None = None,
) -> RunResult:
    """Evaluate ``items`` with ``guard``, journaling each result to ``output/verdicts.jsonl``.

    Items already in the journal with a decision are skipped (and, with ``retry_errors``, failed ones run
    again). At most ``concurrency`` checks are in flight; ``rate`` caps request starts per second.
    ``on_result(result, counts)`` is called after each item with the running counts by outcome.
    """
    if concurrency < 1:
        raise ConfigurationError("concurrency must be >= 1")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise InvalidInput(f"item ids must be unique (they are the resume key); {duplicate!r} repeats")
    journal_path, finished, torn = _prepare(Path(output), run_info or {"guard": guard.name}, set(ids), retry_errors)
    counts: Counter[str] = Counter(_outcome_key(r) for r in finished.values())
    todo = [item for item in items if item.id not in finished]
    limiter = RateLimiter(rate) if rate else None
    fresh: dict[str, ItemResult] = {}

    with _open_journal(journal_path) as journal:

        async def evaluate(item: EvalItem) -> None:
            if limiter is not None:
                await limiter.acquire()
            try:
                outcome = await guard.evaluate(item.prompt)
            except TarsGuardError as exc:
                outcome = Outcome(
                    decision=None,
                    error=ItemError(type=exc.kind, message=str(exc), status_code=getattr(exc, "status_code", None)),
                )
            result = _result(item, guard.name, outcome)
            journal.write(result.model_dump_json(exclude_defaults=True) + "\n")
            journal.flush()
            fresh[item.id] = result
            counts[_outcome_key(result)] += 1
            if on_result is not None:
                on_result(result, counts)

        queue = iter(todo)

        async def worker() -> None:
            for item in queue:
                await evaluate(item)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, len(todo))):
                    group.create_task(worker())
        except BaseExceptionGroup as failure:
            raise failure.exceptions[0] from None

    merged = {**finished, **fresh}
    return RunResult(
        results=[merged[i] for i in ids if i in merged],
        resumed=len(finished),
        ran=len(fresh),
        counts=counts,
        torn_lines=torn,
    )


def _prepare(
    output: Path, run_info: dict[str, Any], wanted: set[str], retry_errors: bool
) -> tuple[Path, dict[str, ItemResult], int]:
    """Create or reopen the run folder: its journal path, the finished results to keep, the torn lines."""
    folder = output.expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the output folder {folder}: {exc.strerror}") from None
    _claim(folder, run_info)
    journal_path = folder / JOURNAL
    done, torn = read_journal(journal_path)
    finished = {
        key: result for key, result in done.items() if key in wanted and (result.error is None or not retry_errors)
    }
    return journal_path, finished, torn


def _result(item: EvalItem, guard_name: str, outcome: Outcome) -> ItemResult:
    """The journal line of ``item``: the item itself, the guard's name, and every field of its outcome."""
    return ItemResult(
        id=item.id,
        suite=item.suite,
        category=item.category,
        expected=item.expected,
        prompt=item.prompt,
        guard=guard_name,
        **{f.name: getattr(outcome, f.name) for f in fields(outcome)},
    )


def _claim(folder: Path, info: dict[str, Any]) -> None:
    """Record what the folder holds; refuse a folder that holds a different run."""
    path = folder / RUN_INFO
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if not isinstance(previous, dict):
            raise ConfigurationError(f"{path} is not a run description; use another --output folder")
        clashes = [
            key
            for key in _IDENTITY_KEYS
            if key in previous and key in info and _canonical(previous[key]) != _canonical(info[key])
        ]
        if clashes:
            details = "; ".join(f"{k}: {previous[k]!r} there, {info[k]!r} now" for k in clashes)
            raise ConfigurationError(f"{folder} holds a different run ({details}); use another --output folder")
        info = {**previous, **info}
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@contextmanager
def _open_journal(path: Path) -> Iterator[IO[str]]:
    """The journal opened for appending, starting on a fresh line if the last one was cut short."""
    try:
        torn_tail = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        handle = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None
    with handle:
        if torn_tail:
            handle.write("\n")
        yield handle


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def load_results(folder: str | Path) -> list[ItemResult]:
    """The results of a finished run folder, in journal order (the last line of an id wins)."""
    path = Path(folder).expanduser() / JOURNAL
    if not path.is_file():
        raise InvalidInput(f"no {JOURNAL} in {Path(folder)}: not a run folder")
    results, _ = read_journal(path)
    return list(results.values())
