"""``tarsguard traces``: tail, show, stats and export over JSONL files and SQLite databases."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_tracing import make_verdict
from typer.testing import CliRunner

from tarsguard import Decision, ErrorInfo
from tarsguard.cli import app
from tarsguard.tracing import JsonlSink, SQLiteSink, Tracer, open_traces
from tarsguard.tracing._cli import parse_time

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
runner = CliRunner()


def verdicts() -> list[tuple[str, Decision, ErrorInfo | None]]:
    failed_open = ErrorInfo(type="timeout", message="no verdict within 5 s", policy="allow")
    failed_closed = ErrorInfo(type="unavailable", message="connection refused", policy="decline")
    return [
        ("a" * 32, Decision.ANSWERED, None),
        ("b" * 32, Decision.DECLINED, None),
        ("c" * 32, Decision.ANSWERED, None),
        ("d" * 32, Decision.PARTIAL, None),
        ("e" * 32, Decision.UNDETERMINED, failed_open),
        ("f" * 32, Decision.UNDETERMINED, failed_closed),
        ("ab" + "0" * 30, Decision.DECLINED, None),
    ]


@pytest.fixture(params=["jsonl", "sqlite"])
def traces(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Seven verdicts a minute apart (latencies 10, 20, ... 70 ms), in a JSONL file or a SQLite database."""
    path = tmp_path / ("traces.jsonl" if request.param == "jsonl" else "traces.db")
    sink = JsonlSink(path) if request.param == "jsonl" else SQLiteSink(path)
    tracer = Tracer([sink])
    for i, (verdict_id, decision, error) in enumerate(verdicts()):
        tracer.record(
            make_verdict(
                decision,
                verdict_id=verdict_id,
                error=error,
                total_ms=10.0 * (i + 1),
                created_at=START + timedelta(minutes=i),
                model="tars-7b" if i % 2 else "tars-7b-v2",
            )
        )
    sink.close()
    yield path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["traces", *args])
    return result.exit_code, result.stdout, result.stderr


def test_tail_prints_the_latest_records(traces: Path) -> None:
    code, out, _ = invoke("tail", str(traces), "-n", "3")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2026-03-01T12:04:00Z  undetermined")
    assert "e" * 32 in lines[0] and "error=timeout/allow" in lines[0]
    assert "ab" + "0" * 30 in lines[2] and "declined" in lines[2]
    assert "[REDACTED:phone]" in lines[2]  # the answer as stored: redacted

    code, out, _ = invoke("tail", str(traces), "-n", "2", "--json")
    assert code == 0
    assert [json.loads(line)["trace"]["verdict_id"] for line in out.splitlines()] == ["f" * 32, "ab" + "0" * 30]


def test_show_finds_a_record_by_id_or_unique_prefix(traces: Path) -> None:
    code, out, _ = invoke("show", str(traces), "b" * 32)
    assert code == 0 and json.loads(out)["decision"] == "declined"
    code, out, _ = invoke("show", str(traces), "dddddd")
    assert code == 0 and json.loads(out)["trace"]["verdict_id"] == "d" * 32

    code, _, err = invoke("show", str(traces), "aaaaaa")
    assert code == 0
    code, _, err = invoke("show", str(traces), "zzzzzzzz")
    assert code == 2 and "no verdict" in err
    code, _, err = invoke("show", str(traces), "abc")
    assert code == 2 and "at least 6" in err


def test_show_refuses_an_ambiguous_prefix(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    sink = JsonlSink(path)
    tracer = Tracer([sink])
    for suffix in ("1", "2"):
        tracer.record(make_verdict(Decision.DECLINED, verdict_id="abcdef" + suffix))
    code, _, err = invoke("show", str(path), "abcdef")
    assert code == 2 and "matches 2 verdicts" in err


def test_stats_counts_decisions_errors_bypasses_and_latency(traces: Path) -> None:
    code, out, _ = invoke("stats", str(traces), "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["total"] == 7
    assert stats["by_decision"] == {"answered": 2, "declined": 2, "partial": 1, "undetermined": 2}
    assert stats["errors"] == 2 and stats["bypasses"] == 1
    assert stats["latency_ms"] == {"p50": 40.0, "p90": 70.0, "p99": 70.0}
    assert stats["by_model"] == {"tars-7b-v2": 4, "tars-7b": 3}

    code, out, _ = invoke(
        "stats", str(traces), "--json", "--since", "2026-03-01T12:02:00", "--until", "2026-03-01T12:05Z"
    )
    stats = json.loads(out)
    assert code == 0 and stats["total"] == 3 and stats["errors"] == 1
    assert stats["window"]["since"] == "2026-03-01T12:02:00+00:00"

    code, out, _ = invoke("stats", str(traces))
    assert code == 0 and "bypasses (failed open)" in out and "latency p90" in out and "70.0 ms" in out


def test_export_jsonl_and_csv(traces: Path, tmp_path: Path) -> None:
    code, out, _ = invoke("export", str(traces), "--decision", "declined")
    assert code == 0
    assert [json.loads(line)["trace"]["verdict_id"] for line in out.splitlines()] == ["b" * 32, "ab" + "0" * 30]

    target = tmp_path / "out.csv"
    code, _, _ = invoke("export", str(traces), "--format", "csv", "-o", str(target))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 7 and rows[4]["error_type"] == "timeout" and rows[4]["error_policy"] == "allow"
    assert rows[0]["verdict_id"] == "a" * 32 and rows[0]["total_ms"] == "10.0" and rows[0]["allowed"] == "True"
    assert "[REDACTED:card]" in rows[0]["answer"]

    code, _, err = invoke("export", str(traces), "--format", "xml")
    assert code == 2 and "jsonl or csv" in err


def test_commands_report_unreadable_lines_and_go_on(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path)
    Tracer([sink]).record(make_verdict(Decision.DECLINED, verdict_id="1" * 32))
    with open(path, "ab") as handle:
        handle.write(b"garbage\n" + b'{"decision":"answ')
    code, out, err = invoke("stats", str(path), "--json")
    assert code == 0 and json.loads(out)["total"] == 1 and json.loads(out)["unreadable_lines"] == 2
    assert "2 line(s) could not be read" in err and "partial last line" in err and ":2: not a trace record" in err


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("stats", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "cannot read" in err


def test_sqlite_follower_sees_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    sink = SQLiteSink(path)
    sink_tracer = Tracer([sink])
    sink_tracer.record(make_verdict(Decision.DECLINED, verdict_id="old" + "0" * 29))
    assert sink.flush(10)
    store = open_traces(path)
    follower = store.follow()
    assert follower.poll() == []
    sink_tracer.record(make_verdict(Decision.DECLINED, verdict_id="new" + "0" * 29))
    assert sink.flush(10)
    assert [r.trace.verdict_id for r in follower.poll()] == ["new" + "0" * 29]
    assert follower.poll() == []
    store.close()
    sink.close()


def test_parse_time() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time("90m", now) == now - timedelta(minutes=90)
    assert parse_time("2d", now) == now - timedelta(days=2)
    assert parse_time("2026-03-01T10:00:00+02:00", now) == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert parse_time("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)


def test_tail_backlog_spans_rotated_files_and_stops_where_following_starts(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = JsonlSink(path, max_bytes=8_000, backups=10)
    tracer = Tracer([sink])
    ids = [f"{i:032d}" for i in range(12)]
    for verdict_id in ids[:10]:
        tracer.record(make_verdict(Decision.DECLINED, verdict_id=verdict_id))
    assert len(list(tmp_path.glob("traces.jsonl.*"))) >= 2
    code, out, _ = invoke("tail", str(path), "-n", "6", "--json")
    assert code == 0 and [json.loads(line)["trace"]["verdict_id"] for line in out.splitlines()] == ids[4:10]

    store = open_traces(path)
    follower = store.follow()
    tracer.record(make_verdict(Decision.DECLINED, verdict_id=ids[10]))
    assert [r.trace.verdict_id for r in follower.backlog(3)] == ids[7:10]  # not the one added after
    assert [r.trace.verdict_id for r in follower.poll()] == [ids[10]]
    follower.close()

    db = tmp_path / "traces.db"
    sqlite = SQLiteSink(db, linger=0)
    db_tracer = Tracer([sqlite])
    for verdict_id in ids[:10]:
        db_tracer.record(make_verdict(Decision.DECLINED, verdict_id=verdict_id))
    assert sqlite.flush(10)
    db_store = open_traces(db)
    db_follower = db_store.follow()
    db_tracer.record(make_verdict(Decision.DECLINED, verdict_id=ids[10]))
    assert sqlite.flush(10)
    assert [r.trace.verdict_id for r in db_follower.backlog(3)] == ids[7:10]
    assert [r.trace.verdict_id for r in db_follower.poll()] == [ids[10]]
    db_store.close()
    sqlite.close()
