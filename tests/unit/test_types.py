"""Public data types: Decision values, Verdict round-trips, schema export, ``allowed``, secret-free reprs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pydantic
import pytest

import tarsguard
from tarsguard import (
    Decision,
    ErrorInfo,
    Guard,
    Message,
    SamplingParams,
    Timings,
    Trace,
    Usage,
    Verdict,
)

SECRET = "sk-test-SECRET-0123456789"


def make_verdict(
    decision: Decision = Decision.ANSWERED,
    *,
    error: ErrorInfo | None = None,
    answer: str = "Sure, here is how.",
) -> Verdict:
    trace = Trace(
        verdict_id="abc123",
        request_id="req-1",
        created_at=datetime(2026, 11, 2, 12, 30, tzinfo=UTC),
        model="tars-7b",
        backend="http",
        endpoint="http://127.0.0.1:8000/v1",
        sampling=SamplingParams(seed=7, stop=("\n\n\n",)),
        streamed=True,
        usage=Usage(prompt_tokens=10, completion_tokens=20, reasoning_tokens=15, answer_tokens=5),
        finish_reason="stop",
        format_ok=True,
        timings=Timings(total_ms=12.5, first_token_ms=1.0, reasoning_end_ms=8.0),
        retries=1,
        detector="patterns@1",
        raw_output="<think>\nfine\n</think>\n\nSure, here is how.",
        error=error,
        version=tarsguard.__version__,
    )
    return Verdict(
        decision=decision,
        answer=answer,
        reasoning="fine",
        confidence=0.8,
        evidence=("no refusal cue",),
        trace=trace,
    )


def test_decision_has_exactly_four_values() -> None:
    assert {d.value for d in Decision} == {"answered", "declined", "partial", "undetermined"}
    assert len(Decision) == 4
    assert Decision("declined") is Decision.DECLINED
    assert Decision.PARTIAL == "partial"  # a str enum: compares and serialises as its value


@pytest.mark.parametrize("decision", list(Decision))
def test_verdict_json_round_trip(decision: Decision) -> None:
    verdict = make_verdict(decision)
    dumped = verdict.model_dump_json()
    # The computed field is exported ...
    assert json.loads(dumped)["allowed"] is verdict.allowed
    # ... and tolerated on the way back in.
    assert Verdict.model_validate_json(dumped) == verdict
    assert Verdict.model_validate(json.loads(dumped)) == verdict


def test_verdict_round_trip_with_error() -> None:
    error = ErrorInfo(type="timeout", message="too slow", status_code=None, policy="allow")
    verdict = make_verdict(Decision.UNDETERMINED, error=error)
    again = Verdict.model_validate_json(verdict.model_dump_json())
    assert again == verdict
    assert again.trace.error == error
    assert again.allowed is True


def test_verdict_ignores_unknown_keys_from_newer_versions() -> None:
    data = json.loads(make_verdict().model_dump_json())
    data["future_field"] = 1
    data["trace"]["another_future_field"] = {"x": 1}
    assert Verdict.model_validate(data) == make_verdict()


def test_verdict_is_frozen() -> None:
    verdict = make_verdict()
    with pytest.raises(pydantic.ValidationError):
        verdict.decision = Decision.DECLINED  # type: ignore[misc]


def test_verdict_rejects_confidence_out_of_range() -> None:
    data = json.loads(make_verdict().model_dump_json())
    data["confidence"] = 1.5
    with pytest.raises(pydantic.ValidationError):
        Verdict.model_validate(data)


def test_verdict_json_schema_exports() -> None:
    schema = Verdict.model_json_schema(mode="serialization")
    assert schema["type"] == "object"
    props = schema["properties"]
    for name in ("decision", "answer", "reasoning", "confidence", "evidence", "trace", "allowed"):
        assert name in props, name
    json.dumps(schema)  # serialisable as is
    decision = schema["$defs"]["Decision"]
    assert set(decision["enum"]) == {d.value for d in Decision}
    # The validation schema exports too (without the computed field).
    assert "decision" in Verdict.model_json_schema()["properties"]


@pytest.mark.parametrize(
    ("decision", "policy", "allowed"),
    [
        (Decision.ANSWERED, None, True),
        (Decision.DECLINED, None, False),
        (Decision.PARTIAL, None, False),
        (Decision.UNDETERMINED, None, False),
        (Decision.UNDETERMINED, "decline", False),
        (Decision.UNDETERMINED, "allow", True),
        (Decision.UNDETERMINED, "raise", False),
    ],
)
def test_allowed_semantics(decision: Decision, policy: str | None, allowed: bool) -> None:
    error = None if policy is None else ErrorInfo(type="timeout", message="x", policy=policy)  # type: ignore[arg-type]
    assert make_verdict(decision, error=error).allowed is allowed


def test_allowed_needs_the_recorded_min_confidence() -> None:
    cases = [
        (Decision.ANSWERED, 0.8, 0.81, False),
        (Decision.ANSWERED, 0.8, 0.8, True),
        (Decision.ANSWERED, 0.8, None, True),
        (Decision.DECLINED, 0.99, 0.0, False),
        (Decision.PARTIAL, 0.99, 0.0, False),
    ]
    for decision, confidence, threshold, allowed in cases:
        verdict = make_verdict(decision)
        trace = verdict.trace.model_copy(update={"min_confidence": threshold})
        verdict = verdict.model_copy(update={"confidence": confidence, "trace": trace})
        assert verdict.allowed is allowed, (decision, confidence, threshold)
        again = Verdict.model_validate_json(verdict.model_dump_json())
        assert again == verdict and again.allowed is allowed


def test_verdict_repr_is_short_and_has_no_secret() -> None:
    verdict = make_verdict(answer="x" * 500)
    text = repr(verdict)
    assert text.startswith("Verdict(decision='answered'")
    assert "abc123" in text
    assert len(text) < 200
    assert str(verdict) == text


def test_guard_repr_never_contains_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(base_url="http://user:pw@127.0.0.1:9/v1?token=q", api_key=SECRET, model="m")
    try:
        for text in (repr(guard), str(guard), repr(guard.backend), str(guard.backend.endpoint)):
            assert SECRET not in text
            assert "pw" not in text
            assert "token=q" not in text
        assert "127.0.0.1:9" in repr(guard)
    finally:
        guard.close()
    monkeypatch.setenv("TARSGUARD_API_KEY", SECRET)
    with Guard(base_url="http://127.0.0.1:9/v1") as guard:
        assert SECRET not in repr(guard)
        assert SECRET not in repr(guard.backend)


def test_message_and_sampling_params_are_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        Message(role="tool", content="x")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        SamplingParams(temprature=0.1)  # type: ignore[call-arg]
    defaults = SamplingParams()
    assert (defaults.temperature, defaults.top_p, defaults.max_tokens) == (0.6, 1.0, 4096)
    assert defaults.seed is None and defaults.stop is None


def test_public_names_are_exported() -> None:
    for name in tarsguard.__all__:
        assert hasattr(tarsguard, name), name


def test_public_names_load_lazily_and_all_resolve() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tarsguard; "
        "loaded = [m for m in sys.modules if m.startswith('tarsguard.')]; "
        "assert set(loaded) <= {'tarsguard._version', 'tarsguard._lazy'}, loaded; "
        "assert set(tarsguard.__all__) == set(tarsguard._MODULE_OF) | {'__version__'}; "
        "[getattr(tarsguard, n) for n in tarsguard.__all__]; "
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'langchain_core', 'typer', 'rich') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
