"""JSONL and SQLite sinks: permissions, rotation, concurrency across threads and processes, crashes, failing disks."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_tracing import make_verdict

from tarsguard import Decision
from tarsguard.tracing import JsonlFollower, JsonlSink, SQLiteSink, Tracer, TraceRecord, iter_jsonl, open_traces
from tarsguard.tracing._jsonl import ReadProblem, jsonl_files

REPO = Path(__file__).resolve().parents[2]


def record(index: int, size: int = 200, decision: Decision = Decision.ANSWERED) -> TraceRecord:
    """A record whose answer repeats its id, so a line mixed with another one cannot pass for valid."""
    verdict_id = f"v{index:06d}"
    verdict = make_verdict(decision, verdict_id=verdict_id, answer=(verdict_id + " ") * (size // 8), reasoning=None)
    return TraceRecord.model_validate(verdict.model_dump())


def intact(records: list[TraceRecord]) -> bool:
    return all(r.answer == (r.trace.verdict_id + " ") * (len(r.answer) // 8) for r in records)


def read_all(path: Path) -> tuple[list[TraceRecord], list[ReadProblem]]:
    problems: list[ReadProblem] = []
    records = [r for file in jsonl_files(path) for r in iter_jsonl(file, problems)]
    return records, problems


# -- JSONL --------------------------------------------------------------------------------------------------


def test_jsonl_file_is_owner_only_and_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "traces.jsonl"
    sink = JsonlSink(path)
    for i in range(3):
        sink.write(record(i))
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [TraceRecord.model_validate_json(line).trace.verdict_id for line in lines[:3]] == [
        "v000000",
        "v000001",
        "v000002",
    ]
    assert sink.status.snapshot().written == 3
    with pytest.raises(ValueError, match="closed"):
        sink.write(record(4))


def test_jsonl_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path, max_bytes=10_000, backups=3)
    for i in range(100):
        sink.write(record(i, size=900))
    sink.close()
    files = jsonl_files(path)
    assert [f.name for f in files] == ["traces.jsonl.3", "traces.jsonl.2", "traces.jsonl.1", "traces.jsonl"]
    assert all(f.stat().st_size < 10_000 + 2_000 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    records, problems = read_all(path)
    assert not problems and intact(records)
    ids = [int(r.trace.verdict_id[1:]) for r in records]
    assert ids == list(range(ids[0], 100))  # the newest records, in order; the oldest rotated away


def test_jsonl_reader_reports_a_partial_last_line_and_repairs_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path)
    for i in range(3):
        sink.write(record(i))
    whole = record(3).model_dump_json().encode()
    with open(path, "ab") as handle:
        handle.write(whole[: len(whole) // 2])  # a writer died mid-line
    records, problems = read_all(path)
    assert [r.trace.verdict_id for r in records] == ["v000000", "v000001", "v000002"]
    assert len(problems) == 1 and problems[0].partial and problems[0].line == 4

    sink.write(record(4))  # another process carries on after the torn bytes
    records, problems = read_all(path)
    assert [r.trace.verdict_id for r in records] == ["v000000", "v000001", "v000002", "v000004"]
    assert len(problems) == 1 and not problems[0].partial and "torn write" in problems[0].reason

    with open(path, "ab") as handle:
        handle.write(b"not json at all\n")
    records, problems = read_all(path)
    assert len(records) == 4 and len(problems) == 2 and "not a trace record" in problems[1].reason


def test_jsonl_looks_at_its_size_every_64th_of_max_bytes_and_overshoots_by_no_more(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path, max_bytes=64_000, backups=20)  # looks after every 1,000 bytes it writes
    line = len(record(0, size=300).model_dump_json()) + 1
    for i in range(600):
        sink.write(record(i, size=300))
    sink.close()
    files = jsonl_files(path)
    assert len(files) >= 4
    assert all(64_000 <= f.stat().st_size < 64_000 + 1_000 + line for f in files[:-1])
    assert sum(1 for f in files for _ in f.open("rb")) == 600


def test_jsonl_follower_sees_appends_waits_for_whole_lines_and_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path, max_bytes=3_000, backups=5)
    sink.write(record(0))
    follower = JsonlFollower(path)  # from the end: the existing record is not repeated
    assert follower.poll() == []
    sink.write(record(1))
    assert [r.trace.verdict_id for r in follower.poll()] == ["v000001"]
    line = record(2).model_dump_json().encode() + b"\n"
    with open(path, "ab") as handle:
        handle.write(line[:100])
        handle.flush()
        assert follower.poll() == []  # half a line: wait for the rest
        handle.write(line[100:])
    assert [r.trace.verdict_id for r in follower.poll()] == ["v000002"]
    for i in range(3, 30):  # several rotations
        sink.write(record(i, size=400))
        assert [r.trace.verdict_id for r in follower.poll()] == [f"v{i:06d}"]
    assert len(jsonl_files(path)) > 3 and follower.problems == []
    follower.close()


def _write_threads(sink_factory: type[JsonlSink] | type[SQLiteSink], path: Path, threads: int, each: int) -> None:
    sink = sink_factory(path)
    barrier = threading.Barrier(threads)

    def run(t: int) -> None:
        barrier.wait()
        for i in range(each):
            sink.write(record(t * each + i, size=5000))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sink.close()


WORKER = """
import sys, threading
from tarsguard.tracing import JsonlSink, SQLiteSink, Tracer
from test_tracing_sinks import record

proc, procs, threads, total = (int(arg) for arg in sys.argv[1:5])
jsonl, db = sys.argv[5:7]
tracer = Tracer([JsonlSink(jsonl), SQLiteSink(db)], redact=False)
shares = procs * threads  # thread g of all writes records [g * total // shares, (g + 1) * total // shares)
verdicts = [
    [record(i, size=5000) for i in range(g * total // shares, (g + 1) * total // shares)]
    for g in range(proc * threads, (proc + 1) * threads)
]
barrier = threading.Barrier(threads)

def run(t):
    barrier.wait()
    for verdict in verdicts[t]:
        tracer.record(verdict)

print("ready", flush=True)
sys.stdin.readline()  # every process starts writing at once
workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
tracer.close()
stats = tracer.stats()
assert all(s.failed == 0 and s.dropped == 0 for s in stats.sinks), stats
print("done", flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}


def test_four_processes_of_eight_threads_write_10000_whole_records_to_jsonl_and_sqlite(tmp_path: Path) -> None:
    jsonl, db = tmp_path / "traces.jsonl", tmp_path / "traces.db"
    procs, threads, total = 4, 8, 10_000
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(p), str(procs), str(threads), str(total), str(jsonl), str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for p in range(procs)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n", child.communicate()[1]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out == "done\n", err

    expected = {f"v{i:06d}" for i in range(10_000)}
    lines = jsonl.read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 10_000 and all(len(line) > 4096 for line in lines)  # longer than an atomic pipe write
    records, problems = read_all(jsonl)
    assert not problems and len(records) == 10_000 and intact(records)
    assert {r.trace.verdict_id for r in records} == expected

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT verdict_id, record FROM verdicts").fetchall()
    assert len(rows) == 10_000 and {vid for vid, _ in rows} == expected
    stored = [TraceRecord.model_validate_json(text) for _, text in rows]
    assert intact(stored) and all(r.trace.verdict_id == vid for r, (vid, _) in zip(stored, rows, strict=True))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_jsonl_rotation_across_processes_loses_and_tears_nothing(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    code = (
        "import sys, threading\n"
        "from tarsguard.tracing import JsonlSink\n"
        "from test_tracing_sinks import record\n"
        "proc = int(sys.argv[1])\n"
        f"sink = JsonlSink({str(path)!r}, max_bytes=200_000, backups=100)\n"
        "def run(t):\n"
        "    for i in range(250):\n"
        "        sink.write(record(proc * 1000 + t * 250 + i, size=1000))\n"
        "workers = [threading.Thread(target=run, args=(t,)) for t in range(4)]\n"
        "[w.start() for w in workers]; [w.join() for w in workers]\n"
    )
    children = [subprocess.Popen([sys.executable, "-c", code, str(p)], env=_env()) for p in range(2)]
    for child in children:
        assert child.wait(120) == 0
    records, problems = read_all(path)
    assert not problems and intact(records)
    assert sorted(r.trace.verdict_id for r in records) == [f"v{i:06d}" for i in range(2000)]
    assert len(jsonl_files(path)) >= 8


KILLED_WRITER = """
import sys
from tarsguard.tracing import JsonlSink, SQLiteSink
from test_tracing_sinks import record

kind, path = sys.argv[1], sys.argv[2]
sink = JsonlSink(path, max_bytes=None) if kind == "jsonl" else SQLiteSink(path)
i = 0
while True:
    sink.write(record(i, size=60_000))
    i += 1
    if kind == "sqlite" and i % 50 == 0:
        sink.flush()
    if i == 200:
        print("200", flush=True)
"""


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_a_writer_killed_mid_stream_loses_at_most_its_last_record(kind: str, tmp_path: Path) -> None:
    path = tmp_path / ("traces.jsonl" if kind == "jsonl" else "traces.db")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, kind, str(path)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert child.stdout is not None and child.stdout.readline() == "200\n"
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    store = open_traces(path)
    records = list(store.records())
    store.close()
    assert len(records) >= 200 and intact(records)
    # Everything written before the kill reads back, in order, with no gap.
    assert [r.trace.verdict_id for r in records] == [f"v{i:06d}" for i in range(len(records))]
    if kind == "jsonl":
        assert len(store.problems) <= 1 and all(p.partial for p in store.problems)
    else:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_threads_share_one_jsonl_sink(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    _write_threads(JsonlSink, path, threads=8, each=50)
    records, problems = read_all(path)
    assert not problems and intact(records) and len({r.trace.verdict_id for r in records}) == 400


# -- SQLite -------------------------------------------------------------------------------------------------


def test_sqlite_sink_is_indexed_and_queryable(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    sink = SQLiteSink(db)
    decisions = [Decision.ANSWERED, Decision.DECLINED, Decision.PARTIAL]
    for i in range(30):
        sink.write(record(i, decision=decisions[i % 3]))
    assert sink.flush(10)
    assert sink.status.snapshot().written == 30
    with sqlite3.connect(db) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(verdicts)")}
        assert {"verdicts_by_time", "verdicts_by_decision", "verdicts_by_model"} <= indexes
        assert conn.execute("SELECT count(*) FROM verdicts WHERE decision = 'declined'").fetchone() == (10,)
        plan = " ".join(
            str(row) for row in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM verdicts WHERE decision = 'partial'")
        )
        assert "verdicts_by_decision" in plan
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA page_size").fetchone() == (16384,)
    sink.close()
    store = open_traces(f"sqlite:///{db}")
    assert [r.trace.verdict_id for r in store.records(decision=Decision.DECLINED)][:2] == ["v000001", "v000004"]
    assert [r.trace.verdict_id for r in store.find("v00002")] == [f"v00002{i}" for i in range(10)]
    store.close()


def test_sqlite_sink_reports_a_full_disk_once_and_keeps_accepting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SQLiteSink(tmp_path / "traces.db", pragmas={"max_page_count": 16}, batch_size=1, linger=0)
    tracer = Tracer([sink], redact=False)
    with caplog.at_level(logging.WARNING, "tarsguard.tracing"):
        for i in range(40):
            tracer.record(record(i, size=4000))
            assert sink.flush(10)
    stats = tracer.stats().sinks[0]
    assert stats.written > 0 and stats.failed > 0 and stats.written + stats.failed == 40
    assert stats.last_error is not None and "full" in stats.last_error
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    sink.close()


def test_sqlite_sink_drops_and_counts_when_it_falls_behind(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "traces.db", max_pending=5)
    blocked = threading.Event()
    release = threading.Event()
    sink._queue.put(_Gate(blocked, release))  # hold the writer thread until the queue is full
    sink._start()
    assert blocked.wait(10)
    for i in range(20):
        sink.write(record(i))
    release.set()
    assert sink.flush(10)
    stats = sink.status.snapshot()
    assert stats.dropped > 0 and stats.written + stats.dropped == 20
    sink.close()


class _Gate(threading.Event):
    """A queue item that blocks the writer thread when it reaches it, until released."""

    def __init__(self, reached: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self._reached, self._release = reached, release

    def set(self) -> None:
        self._reached.set()
        self._release.wait(10)
        super().set()


def test_sqlite_records_round_trip_as_json(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    sink = SQLiteSink(db)
    original = record(7)
    sink.write(original)
    sink.close()
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT record FROM verdicts").fetchone()
    assert TraceRecord.model_validate_json(text) == original
    assert json.loads(text)["trace"]["verdict_id"] == "v000007"


def test_a_sqlite_batch_larger_than_one_insert_keeps_every_row_once(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    sink = SQLiteSink(db, linger=0.2)  # a long linger: the 250 writes below reach the writer as one batch
    written = [record(i) for i in range(250)] + [record(3), record(170)]  # two ids again: ignored
    for item in written:
        sink.write(item)
    sink.close()
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT verdict_id FROM verdicts ORDER BY rowid")]
        stored = [TraceRecord.model_validate_json(text) for (text,) in conn.execute("SELECT record FROM verdicts")]
    assert ids == [f"v{i:06d}" for i in range(250)]
    assert intact(stored) and len(stored) == 250


def test_sqlite_flush_and_close_do_not_wait_out_the_linger(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    sink = SQLiteSink(db, linger=60)  # the writer would gather a batch for a minute
    sink.write(record(1))
    assert sink.flush(10)  # committed at once, not after the linger
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT verdict_id FROM verdicts").fetchall() == [("v000001",)]
    sink.write(record(2))
    sink.close(10)
    assert sink._thread is not None and not sink._thread.is_alive()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM verdicts").fetchone() == (2,)
