"""Tracer core: records, redaction, sampling, failure accounting, resolution from arguments and TARSGUARD_TRACE."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tarsguard
from tarsguard import (
    AsyncGuard,
    ConfigurationError,
    Decision,
    ErrorInfo,
    SamplingParams,
    Timings,
    Trace,
    Usage,
    Verdict,
)
from tarsguard.testing import ScriptedBackend
from tarsguard.tracing import (
    ENV_TRACE,
    JsonlSink,
    MemorySink,
    OTelSpans,
    SQLiteSink,
    Tracer,
    TraceRecord,
    make_redactor,
    redact_builtin,
    resolve_tracer,
    summarize,
)
from tarsguard.tracing._record import build_record
from tarsguard.tracing._redact import BUILTIN_REDACTIONS, redact_each

EMAIL = "jane.doe@example.com"
PHONE = "+1 (555) 123-4567"
CARD = "4111 1111 1111 1111"
API_KEY = "sk-proj-Abcdefghijklmnopqrstuvwx0123456789"
SECRETS = (EMAIL, PHONE, CARD, API_KEY, "5551234567", "4111111111111111", "Abcdefghijklmnopqrstuvwx")
LEAKY_REASONING = f"The user {EMAIL} pasted key {API_KEY}; harmless question."
LEAKY_ANSWER = f"Call {PHONE} and pay with {CARD}."
DECLINED_OUTPUT = (
    "<think>\nThis asks for weapon instructions. Harmful.\n</think>\n\nI'm sorry, but I can't help with that."
)


def make_verdict(
    decision: Decision = Decision.ANSWERED,
    *,
    verdict_id: str | None = None,
    answer: str = LEAKY_ANSWER,
    reasoning: str | None = LEAKY_REASONING,
    error: ErrorInfo | None = None,
    evidence: Sequence[str] = (f"answer mentions {EMAIL}",),
    total_ms: float = 12.5,
    created_at: datetime | None = None,
    model: str = "tars-7b",
) -> Verdict:
    """A verdict whose every free-text field holds personal data or a secret."""
    raw = None if reasoning is None else f"<think>\n{reasoning}\n</think>\n\n{answer}"
    trace = Trace(
        verdict_id=verdict_id or uuid.uuid4().hex,
        request_id="req-1",
        created_at=created_at or datetime(2026, 1, 2, 12, 30, tzinfo=UTC),
        model=model,
        backend="http",
        endpoint="http://127.0.0.1:8000/v1",
        sampling=SamplingParams(seed=7),
        streamed=True,
        usage=Usage(prompt_tokens=10, completion_tokens=20, reasoning_tokens=15, answer_tokens=5),
        finish_reason="stop",
        format_ok=True,
        timings=Timings(total_ms=total_ms, first_token_ms=1.0, reasoning_end_ms=8.0),
        retries=1,
        detector="patterns@1",
        raw_output=raw,
        error=error,
        version=tarsguard.__version__,
    )
    return Verdict(
        decision=decision,
        answer=answer,
        reasoning=reasoning,
        confidence=0.8,
        evidence=tuple(evidence),
        trace=trace,
    )


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


class Broken:
    """A sink whose every write fails."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def write(self, record: TraceRecord) -> None:
        self.calls += 1
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_trace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TRACE, raising=False)


# -- records and redaction ---------------------------------------------------------------------------------


def test_record_is_the_verdict_with_every_text_field_redacted() -> None:
    sink = MemorySink()
    tracer = Tracer([sink], capture_content=True)
    verdict = make_verdict(
        Decision.UNDETERMINED,
        error=ErrorInfo(type="server", message=f"upstream echoed {API_KEY}", status_code=500, policy="allow"),
    )
    record = tracer.record(verdict, prompt=[{"role": "user", "content": f"I am {EMAIL}, card {CARD}"}])
    assert record is not None and sink.records == [record]
    assert not leaked(record.model_dump_json())
    assert record.answer == "Call [REDACTED:phone] and pay with [REDACTED:card]."
    assert record.trace.raw_output == f"<think>\n{record.reasoning}\n</think>\n\n{record.answer}"
    assert record.prompt is not None and record.prompt[0].content == "I am [REDACTED:email], card [REDACTED:card]"
    # Everything else is the verdict as it was.
    assert record.trace.verdict_id == verdict.trace.verdict_id
    assert record.trace.usage == verdict.trace.usage and record.allowed is True
    assert isinstance(record, Verdict)
    assert TraceRecord.model_validate_json(record.model_dump_json()) == record


def test_records_are_built_as_model_construct_builds_them() -> None:
    from tarsguard.tracing._record import _new_record

    verdict = make_verdict()
    fields = {**{name: getattr(verdict, name) for name in Verdict.model_fields}, "prompt": None, "sample_rate": 0.5}
    fast, reference = _new_record(dict(fields)), TraceRecord.model_construct(**fields)
    assert fast == reference and fast.model_dump_json() == reference.model_dump_json()
    assert fast.model_fields_set == reference.model_fields_set == set(TraceRecord.model_fields)
    assert fast.__pydantic_extra__ is reference.__pydantic_extra__ is None
    assert fast.__pydantic_private__ is reference.__pydantic_private__ is None
    # What _new_record leaves out must stay absent from TraceRecord.
    assert not TraceRecord.__private_attributes__ and TraceRecord.model_config.get("extra") != "allow"
    assert TraceRecord.__pydantic_post_init__ is None
    copied = fast.model_copy(update={"sample_rate": 1.0})
    assert copied.sample_rate == 1.0 and fast.sample_rate == 0.5


@pytest.mark.parametrize(
    "raw",
    [
        f"<think>{LEAKY_REASONING}</think>Note for {EMAIL}: {LEAKY_ANSWER}",  # text between the tags and the answer
        f"{LEAKY_ANSWER}<think>{LEAKY_REASONING}</think>{LEAKY_ANSWER}",  # the answer before the reasoning too
        f"<think>{LEAKY_REASONING} {PHONE}</think>",  # neither part verbatim
    ],
)
def test_raw_output_is_redacted_wherever_the_parts_sit_in_it(raw: str) -> None:
    verdict = make_verdict()
    verdict = verdict.model_copy(update={"trace": verdict.trace.model_copy(update={"raw_output": raw})})
    record = build_record(verdict, redact_builtin, 1.0, None)
    assert record.trace.raw_output == redact_builtin(raw)


def test_prompt_is_stored_only_with_capture_content() -> None:
    sink = MemorySink()
    Tracer([sink]).record(make_verdict(), prompt="a prompt that stays private")
    assert sink.records[0].prompt is None
    assert "stays private" not in sink.records[0].model_dump_json()


def test_redaction_can_be_switched_off_or_chosen() -> None:
    sink = MemorySink()
    Tracer([sink], redact=False).record(make_verdict())
    assert sink.records[0].answer == LEAKY_ANSWER

    sink.clear()
    Tracer([sink], redact=["email", str.upper]).record(make_verdict())
    record = sink.records[0]
    assert EMAIL not in record.reasoning  # type: ignore[operator]
    assert record.answer == LEAKY_ANSWER.upper()  # the phone and card stay: only "email" was chosen
    with pytest.raises(ConfigurationError, match="unknown redaction"):
        Tracer([sink], redact=["emails"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+tag@mail.example.co.uk today", "write to [REDACTED:email] today"),
        ("josé@exämple.de, 用户@例子.广告", "[REDACTED:email], [REDACTED:email]"),
        ("call 555-123-4567, or +44 20 7946 0958", "call [REDACTED:phone], or [REDACTED:phone]"),
        ("E.164 +15551234567 and 555.123.4567", "E.164 [REDACTED:phone] and [REDACTED:phone]"),
        ("card 4111-1111-1111-1111 ok", "card [REDACTED:card] ok"),
        ("AKIAIOSFODNN7EXAMPLE and ghp_" + "a" * 36, "[REDACTED:api_key] and [REDACTED:api_key]"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: [REDACTED:api_key]"),
        (
            '{"password": "hunter2hunter2", "api_key": xyzxyzxyzxyz}',
            '{"password": "[REDACTED:api_key]", "api_key": [REDACTED:api_key]}',
        ),
    ],
)
def test_builtin_redactions(text: str, expected: str) -> None:
    assert redact_builtin(text) == expected


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-" + "Ab1" * 10,
        "sk-ant-api03-" + "Zx9" * 10,
        "AKIA" + "IOSFODNN7EXAMPLE",
        "ASIA" + "Q" * 16,
        "ghp_" + "a1" * 18,
        "gho_" + "B2" * 18,
        "ghs_" + "c3" * 18,
        "github_pat_" + "11" + "AbZ_" * 8,
        "xoxb-" + "1234-5678-abcd",
        "AIza" + "Sy" + "Q" * 33,
        "hf_" + "Tq" * 17,
        "eyJ" + "hbGciOiJIUzI1" + ".eyJ" + "zdWIiOiIxMjM0" + "." + "SflKxwRJSMeK",
    ],
)
def test_every_api_key_shape_is_redacted_on_its_own(key: str) -> None:
    """Each shape alone in plain words: no other part of the text may be what lets the key be found."""
    assert redact_builtin(f"my key is {key} and that is all") == "my key is [REDACTED:api_key] and that is all"


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 at 10:30:45",
        "ip 192.168.100.200 and 10.0.0.1",
        "pi is 3.14159265, version 1.2.3",
        "a Luhn-invalid 4111 1111 1111 1112",
        "pid 12345, port 8080, 1234567 items, max_tokens: 4096",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "the task-runner, a risk-free token budget",
    ],
)
def test_builtin_redactions_leave_ordinary_text_alone(text: str) -> None:
    assert redact_builtin(text) == text


def test_every_card_and_phone_number_passes_the_cheap_digit_test() -> None:
    """The card and phone patterns run only where a seven-digit run is found; that test must never hide one."""
    import random

    from tarsguard.tracing._redact import _CARD, _PHONE, _SEVEN_DIGITS, _card_sub, _phone_sub

    pieces = ["+", "(", ")", " ", ".", "-", "0", "12", "555", "4111", "7946", "x", "call ", "\n", "+44 ", "(0)"]
    rng = random.Random(3)
    redacted = 0
    for _ in range(20000):
        text = "".join(rng.choices(pieces, k=rng.randint(3, 14)))
        by_patterns = _PHONE.sub(_phone_sub, _CARD.sub(_card_sub, text))
        if by_patterns != text:
            redacted += 1
            assert _SEVEN_DIGITS.search(text), text
            assert redact_builtin(text) == by_patterns, text
    assert redacted > 300  # the generated cases hold many numbers that are redacted


@pytest.mark.parametrize("names", [list(BUILTIN_REDACTIONS), ["phone"], ["api_key", "email"]])
def test_redacting_several_texts_at_once_equals_redacting_each(names: list[str]) -> None:
    """Evidence items are redacted in one call when nothing is found; items cut around PII must still match."""
    import random

    redactor = make_redactor(names)
    assert redactor is not None
    pieces = [
        "Bearer",
        " ",
        "sk-",
        "abcDEF1234567890abcdEF",
        "token",
        "=",
        ":",
        "api_key",
        '"',
        "'",
        "@",
        "john",
        "example.com",
        ".",
        "-",
        "+1",
        "555",
        "123",
        "4567",
        "4111",
        "1111 1111 1111",
        "\n",
        "AKIA",
        "IOSFODNN7EXAMPLE",
        "hf_",
        "x" * 30,
        "word",
        "  ",
        "(",
        ")",
        "0",
        "9",
    ]
    rng = random.Random(7)
    for _ in range(3000):
        texts = tuple("".join(rng.choices(pieces, k=rng.randint(1, 6))) for _ in range(rng.randint(2, 5)))
        assert redact_each(texts, redactor) == tuple(redactor(t) for t in texts), texts
    custom = make_redactor([lambda t: "[X]" if t == "secret" else t])
    assert custom is not None
    assert redact_each(("a secret", "secret"), custom) == ("a secret", "[X]")  # callables see each text alone


def test_a_failing_redactor_drops_the_record_rather_than_leak_it(caplog: pytest.LogCaptureFixture) -> None:
    def explode(text: str) -> str:
        raise RuntimeError("bad redactor")

    sink = MemorySink()
    tracer = Tracer([sink], redact=[explode])
    with caplog.at_level(logging.WARNING, "tarsguard.tracing"):
        assert tracer.record(make_verdict()) is None
        assert tracer.record(make_verdict()) is None
    assert sink.records == []
    assert tracer.stats().failed == 2
    assert len(caplog.records) == 1 and "bad redactor" in caplog.records[0].getMessage()


def test_make_redactor_specs() -> None:
    assert make_redactor(True) is redact_builtin and make_redactor(None) is redact_builtin
    assert make_redactor(False) is None and make_redactor([]) is None
    with pytest.raises(ConfigurationError):
        make_redactor("email")  # type: ignore[arg-type]


# -- sampling ------------------------------------------------------------------------------------------------


def test_sampling_keeps_every_decline_and_a_share_of_the_rest() -> None:
    sink = MemorySink()
    tracer = Tracer([sink], sample=0.25, redact=False)
    answered = [make_verdict() for _ in range(2000)]
    kept_always = [
        make_verdict(d) for d in (Decision.DECLINED, Decision.PARTIAL, Decision.UNDETERMINED) for _ in range(50)
    ]
    for verdict in answered + kept_always:
        tracer.record(verdict)
    records = sink.records
    by_decision = summarize(records).by_decision
    assert by_decision["declined"] == by_decision["partial"] == by_decision["undetermined"] == 50
    # Binomial(2000, 0.25): mean 500, sd ~19.4; six sd either side.
    assert 384 < by_decision["answered"] < 616
    assert all(r.sample_rate == 0.25 for r in records if r.decision is Decision.ANSWERED)
    assert all(r.sample_rate == 1.0 for r in records if r.decision is not Decision.ANSWERED)
    stats = tracer.stats()
    assert stats.recorded == len(records) and stats.recorded + stats.sampled_out == 2150
    # The choice hangs on the verdict id: another tracer at the same rate keeps the same verdicts.
    other = MemorySink()
    again = Tracer([other], sample=0.25, redact=False)
    for verdict in answered:
        again.record(verdict)
    assert {r.trace.verdict_id for r in other.records} == {
        r.trace.verdict_id for r in records if r.decision is Decision.ANSWERED
    }
    estimate = summarize(records).estimated_total
    assert 2150 * 0.75 < estimate < 2150 * 1.25


@pytest.mark.parametrize("rate", [-0.1, 1.5, True, "0.5"])
def test_sample_rate_is_validated(rate: Any) -> None:
    with pytest.raises(ConfigurationError, match="sample rate"):
        Tracer([MemorySink()], sample=rate)


def test_sample_zero_keeps_only_declines() -> None:
    sink = MemorySink()
    tracer = Tracer([sink], sample=0.0)
    tracer.record(make_verdict())
    tracer.record(make_verdict(Decision.DECLINED))
    assert [r.decision for r in sink.records] == [Decision.DECLINED]


# -- failures ---------------------------------------------------------------------------------------------


def test_a_failing_sink_is_reported_once_counted_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, good = Broken(), MemorySink()
    tracer = Tracer([broken, good])
    with caplog.at_level(logging.WARNING, "tarsguard.tracing"):
        for _ in range(5):
            assert tracer.record(make_verdict()) is not None
    assert broken.calls == 5 and len(good) == 5
    warnings = [r for r in caplog.records if r.name == "tarsguard.tracing"]
    assert len(warnings) == 1 and "broken" in warnings[0].getMessage()
    broken_stats, good_stats = tracer.stats().sinks
    assert (broken_stats.failed, broken_stats.written) == (5, 0)
    assert broken_stats.last_error is not None and "No space left" in broken_stats.last_error
    assert (good_stats.failed, good_stats.written) == (0, 5)


async def test_checks_keep_returning_verdicts_while_every_sink_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sinks = [Broken(), JsonlSink(blocker / "traces.jsonl"), JsonlSink("/dev/full"), SQLiteSink(blocker / "t.db")]
    tracer = Tracer(sinks)
    async with AsyncGuard(backend=ScriptedBackend([DECLINED_OUTPUT])) as guard:
        for _ in range(3):
            with tracer.check() as scope:
                verdict = await guard.check("how do I build a weapon?")
                scope.record(verdict, prompt="how do I build a weapon?")
            assert verdict.decision is Decision.DECLINED
    assert tracer.flush(10)
    assert [s.failed for s in tracer.stats().sinks] == [3, 3, 3, 3]


# -- resolution --------------------------------------------------------------------------------------------


def test_resolve_tracer_reads_specs_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_tracer(None) is None
    assert resolve_tracer(False) is None and resolve_tracer([]) is None

    monkeypatch.setenv(ENV_TRACE, f"{tmp_path}/a.jsonl, sqlite:///{tmp_path}/b.db")
    tracer = resolve_tracer(None, sample=0.5)
    assert tracer is not None
    jsonl, sqlite = tracer.sinks
    assert isinstance(jsonl, JsonlSink) and jsonl.path == tmp_path / "a.jsonl"
    assert isinstance(sqlite, SQLiteSink) and sqlite.path == tmp_path / "b.db"
    tracer.record(make_verdict(Decision.DECLINED))
    tracer.close()
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
    assert resolve_tracer(False) is None  # an explicit False wins over the environment

    memory = MemorySink()
    tracer = resolve_tracer([memory, str(tmp_path / "c.db")], redact=False)
    assert tracer is not None and tracer.sinks[0] is memory and isinstance(tracer.sinks[1], SQLiteSink)
    tracer.record(make_verdict())
    assert memory.records[0].answer == LEAKY_ANSWER
    tracer.close()  # closes the database it opened; the memory sink is the caller's

    given = Tracer([memory])
    assert resolve_tracer(given) is given
    with pytest.raises(ConfigurationError, match="on the Tracer itself"):
        resolve_tracer(given, sample=0.5)


@pytest.mark.parametrize("spec", ["traces.txt", "sqlite://x.db", "sqlite:///", "True"])
def test_resolve_tracer_rejects_unknown_specs(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError):
        resolve_tracer(spec)
    monkeypatch.setenv(ENV_TRACE, spec)
    with pytest.raises(ConfigurationError, match=ENV_TRACE):
        resolve_tracer(None)


def test_otel_spec_gives_spans() -> None:
    tracer = resolve_tracer("otel")
    assert tracer is not None and isinstance(tracer.spans, OTelSpans) and tracer.sinks == ()


def test_importing_tarsguard_and_tracing_loads_neither_sqlite_nor_opentelemetry() -> None:
    code = (
        "import sys, tarsguard; "
        "assert 'tarsguard.tracing' not in sys.modules; "
        "from tarsguard import Tracer, JsonlSink, MemorySink, OTelSpans, resolve_tracer; "
        "from tarsguard.tracing import open_traces, summarize; "
        "import os; os.environ['TARSGUARD_TRACE'] = os.devnull + '.jsonl'; "
        "t = resolve_tracer(None); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('sqlite3', '_sqlite3', 'opentelemetry')]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_the_api_key_never_reaches_a_sink_even_when_the_output_echoes_it(tmp_path: Path) -> None:
    from tarsguard.testing import Reply, ScriptedServer

    secret = "sk-live-" + "Q" * 32
    echo = f"<think>\nThe user pasted {secret} and {EMAIL}.\n</think>\n\nI'm sorry, but I can't help with that."
    jsonl, db = tmp_path / "t.jsonl", tmp_path / "t.db"
    tracer = Tracer([JsonlSink(jsonl), SQLiteSink(db)], capture_content=True)
    with ScriptedServer([Reply(content=echo)]) as server:
        async with AsyncGuard(server.base_url, api_key=secret, model="scripted-tars") as guard:
            with tracer.check() as scope:
                verdict = await guard.check(f"my key is {secret}")
                scope.record(verdict, prompt=f"my key is {secret}")
    tracer.close()
    assert secret in verdict.trace.raw_output  # type: ignore[operator]  # the verdict itself is untouched
    stored = b"".join(path.read_bytes() for path in _files(tmp_path))
    assert b"[REDACTED:api_key]" in stored and b"QQQQQQQQ" not in stored and EMAIL.encode() not in stored


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key=[REDACTED:api_key]",
        ),
        ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY: [REDACTED:api_key]"),
        ("export DB_PASSWORD=CorrectHorse99", "export DB_PASSWORD=[REDACTED:api_key]"),
        (
            "the password reset link failed, so log in with password=hunter2 now",
            "the password reset link failed, so log in with password=[REDACTED:api_key] now",
        ),
        (
            "Password: reset it from the login page. password: hunter2",
            "Password: reset it from the login page. password: [REDACTED:api_key]",
        ),
        (
            "mysql -u root pwd=abc123 (if token == None: pass)",
            "mysql -u root pwd=[REDACTED:api_key] (if token == None: pass)",
        ),
        ("please pass the salt; user=bob pass=letmein", "please pass the salt; user=bob pass=[REDACTED:api_key]"),
        ('{"password": "secret", "max_tokens": 4096}', '{"password": "[REDACTED:api_key]", "max_tokens": 4096}'),
        (
            "a compass: north, bypass=yes, client_secret: 'x9'",
            "a compass: north, bypass=yes, client_secret: '[REDACTED:api_key]'",
        ),
    ],
)
def test_secret_assignments_of_any_length_and_name_are_redacted_and_prose_is_not(text: str, expected: str) -> None:
    assert redact_builtin(text) == expected
