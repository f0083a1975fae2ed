"""Records held for a batch inside an event loop: when they are written, and that none is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from test_tracing import EMAIL, leaked, make_verdict

from tarsguard import AsyncGuard, ConfigurationError, Decision
from tarsguard.testing import ScriptedBackend
from tarsguard.tracing import JsonlSink, MemorySink, SQLiteSink, Tracer, TraceRecord, open_traces
from tarsguard.tracing import _tracer as tracer_module

REPO = Path(__file__).resolve().parents[2]


class CountingJsonl(JsonlSink):
    """A JSONL sink that remembers the size of each batch it was given."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.wrote = asyncio.Event()

    def write_many(self, records: Sequence[TraceRecord]) -> None:
        self.batches.append(len(records))
        super().write_many(records)
        self.wrote.set()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def record_in_scope(tracer: Tracer, count: int, decision: Decision = Decision.ANSWERED) -> list[str]:
    ids = []
    for _ in range(count):
        verdict = make_verdict(decision)
        with tracer.check("tars-7b") as scope:
            scope.record(verdict)
        ids.append(verdict.trace.verdict_id)
    return ids


async def test_in_an_event_loop_records_wait_for_the_linger_then_go_out_in_one_batch(tmp_path: Path) -> None:
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=0.05)
    ids = record_in_scope(tracer, 3)
    assert lines(sink.path) == [] and tracer.stats().recorded == 3  # counted when kept, written later
    started = time.monotonic()
    await asyncio.wait_for(sink.wrote.wait(), 10)  # the loop runs the linger's timer
    assert time.monotonic() - started >= 0.04
    assert [TraceRecord.model_validate_json(line).trace.verdict_id for line in lines(sink.path)] == ids
    assert sink.batches == [3] and tracer.stats().sinks[0].written == 3
    assert not leaked(sink.path.read_text())  # redaction still comes first


async def test_a_full_batch_is_written_at_once(tmp_path: Path) -> None:
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=60)
    record_in_scope(tracer, 63)
    assert lines(sink.path) == []
    record_in_scope(tracer, 1)
    assert len(lines(sink.path)) == 64 and sink.batches == [64]


async def test_a_timer_whose_batch_went_out_early_leaves_the_next_batch_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch written full (or overdue, or flushed) still has its timer pending; that timer must not write the
    records held since, which wait for their own timer."""
    timers: list[Callable[[], object]] = []
    monkeypatch.setattr(
        asyncio.get_running_loop(), "call_later", lambda delay, callback, *args: timers.append(lambda: callback(*args))
    )
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=0.05)
    record_in_scope(tracer, 64)  # full: written at once; its timer is still pending
    record_in_scope(tracer, 1)  # the next batch, with a timer of its own
    assert sink.batches == [64] and len(timers) == 2
    first_timer, next_timer = timers
    first_timer()
    assert sink.batches == [64]  # the first batch's timer finds its batch gone and writes nothing
    record_in_scope(tracer, 1)
    next_timer()
    assert sink.batches == [64, 2] and len(lines(sink.path)) == 66


async def test_flush_close_and_the_guards_close_write_held_records(tmp_path: Path) -> None:
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=60)
    record_in_scope(tracer, 2)
    assert tracer.flush(10) and len(lines(sink.path)) == 2
    record_in_scope(tracer, 1)
    tracer.close()
    assert len(lines(sink.path)) == 3

    db = tmp_path / "t.db"
    replies = ["<think>\nfine\n</think>\n\nSure."] * 3
    guard = AsyncGuard(backend=ScriptedBackend(replies), trace=Tracer([SQLiteSink(db)]))
    for _ in range(3):
        await guard.check("hello")
    await guard.aclose()
    store = open_traces(db)
    assert len(list(store.records())) == 3
    store.close()


async def test_held_records_that_fail_are_counted_and_never_raise(tmp_path: Path) -> None:
    def explode(text: str) -> str:
        raise RuntimeError("redactor bug")

    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=60, redact=[explode])
    record_in_scope(tracer, 2)
    tracer.flush(10)
    assert lines(sink.path) == [] and tracer.stats().failed == 2

    unwritable = tmp_path / "dir"
    unwritable.mkdir()
    broken = Tracer([JsonlSink(unwritable)], linger=60)  # a directory: every write fails
    record_in_scope(broken, 2)
    broken.flush(10)
    (stats,) = broken.stats().sinks
    assert stats.failed == 2 and stats.written == 0


def test_records_are_written_at_once_outside_an_event_loop_with_no_linger_or_a_sink_without_batches(
    tmp_path: Path,
) -> None:
    sink = JsonlSink(tmp_path / "t.jsonl")
    record_in_scope(Tracer([sink], linger=60), 1)  # no event loop running here
    assert len(lines(sink.path)) == 1

    async def in_loop() -> None:
        record_in_scope(Tracer([sink], linger=0), 1)
        assert len(lines(sink.path)) == 2
        memory = MemorySink()  # no write_many: a tracer writing to it never holds records
        record_in_scope(Tracer([sink, memory], linger=60), 1)
        assert len(lines(sink.path)) == 3 and len(memory) == 1
        assert Tracer([sink], linger=60).record(make_verdict()) is not None  # Tracer.record never holds
        assert len(lines(sink.path)) == 4

    asyncio.run(in_loop())


def test_a_batch_left_by_a_closed_loop_is_written_by_the_next_record_once_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(tracer_module.time, "monotonic", lambda: now[0])
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=0.5)

    async def one() -> None:
        record_in_scope(tracer, 1)

    asyncio.run(one())  # the loop closes before its timer runs
    assert lines(sink.path) == []
    now[0] += 0.4
    asyncio.run(one())
    assert lines(sink.path) == []
    now[0] += 0.2  # the first record has waited 0.6 s
    asyncio.run(one())
    assert len(lines(sink.path)) == 3 and sink.batches == [3]


def test_held_records_are_written_at_interpreter_exit(tmp_path: Path) -> None:
    jsonl, db = tmp_path / "t.jsonl", tmp_path / "t.db"
    code = (
        "import asyncio, sys\n"
        "from tarsguard import AsyncGuard\n"
        "from tarsguard.testing import ScriptedBackend\n"
        "from tarsguard.tracing import JsonlSink, SQLiteSink, Tracer\n"
        "tracer = Tracer([JsonlSink(sys.argv[1]), SQLiteSink(sys.argv[2])], linger=60)\n"
        "guard = AsyncGuard(backend=ScriptedBackend(['<think>\\nok\\n</think>\\n\\nSure.'] * 5), trace=tracer)\n"
        "async def main():\n"
        "    for _ in range(5):\n"
        "        await guard.check('hello')\n"
        "asyncio.run(main())\n"  # exits without closing the guard or flushing the tracer
    )
    subprocess.run([sys.executable, "-c", code, str(jsonl), str(db)], check=True, timeout=120, cwd=REPO)
    assert len(lines(jsonl)) == 5
    store = open_traces(db)
    assert len(list(store.records())) == 5
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_its_parents_held_records(tmp_path: Path) -> None:
    sink = CountingJsonl(tmp_path / "t.jsonl")
    tracer = Tracer([sink], linger=60)
    held = threading.Event()

    async def hold() -> None:
        record_in_scope(tracer, 2)
        held.set()

    asyncio.run(hold())
    assert held.is_set()
    pid = os.fork()
    if pid == 0:  # the child: flushing must find nothing to write
        tracer.flush(10)
        os._exit(0 if not sink.batches else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tracer.flush(10)
    assert len(lines(sink.path)) == 2


@pytest.mark.parametrize("linger", [-0.1, 61, True, "0.1", None])
def test_linger_is_validated(linger: object) -> None:
    with pytest.raises(ConfigurationError, match="linger"):
        Tracer([MemorySink()], linger=linger)  # type: ignore[arg-type]


def test_jsonl_write_many_appends_whole_lines_and_skips_an_empty_batch(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "t.jsonl")
    sink.write_many([])
    assert not sink.path.exists()
    records = [TraceRecord.model_validate(make_verdict(Decision.DECLINED).model_dump()) for _ in range(3)]
    sink.write_many(records)
    sink.write(records[0])
    assert [TraceRecord.model_validate_json(line) for line in lines(sink.path)] == [*records, records[0]]
    assert sink.status.snapshot().written == 4
    assert EMAIL in sink.path.read_text()  # the sink stores what it is given: redaction is the tracer's job
