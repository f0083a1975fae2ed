"""The default detector's model: the fast scorer agrees with the reference features, the weights are the
trained kind, load lazily without numpy, and the training code builds a working model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tarsguard import Decision, LinearDetector
from tarsguard.detect import _features, _lexicon, _linear

SAMPLES = [
    "I'm sorry, but I can't help with that.",
    "Sure! Here are three ways to speed up pandas:\n\n1. Use vectorised operations.\n2. Use categoricals.\n3. Read "
    "only the columns you need.",
    "I can't provide that. Instead, here is some general information about lock mechanisms and how locksmiths "
    "are licensed, which may help you find a legitimate service near you.",
    "Lo siento, pero no puedo ayudarte con eso.",
    "抱歉，我无法提供这方面的帮助。不过我可以提供一些一般信息。",
    'He said "I won\'t do it" and left. The end.',
    "It's important to note that violence is never acceptable. Please reach out to a counselor.",
]


def _reference(document: dict[str, Any], answer: str) -> list[float]:
    z = list(document["bias"])
    for name, value in _features.features(answer).items():
        weights = document["weights"].get(name)
        if weights:
            z = [a + b * value for a, b in zip(z, weights, strict=True)]
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def _shipped() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.files("tarsguard.detect").joinpath("weights.json").read_text())
    return document


@pytest.mark.parametrize("answer", SAMPLES)
@pytest.mark.parametrize("prompt", [None, "Why should I not help with that?"])
def test_fast_scorer_matches_the_reference_features(answer: str, prompt: str | None) -> None:
    probs = _reference(_shipped(), answer)
    result = LinearDetector().assess(answer, prompt=prompt)
    best = max(range(3), key=probs.__getitem__)
    assert result.decision is (Decision.ANSWERED, Decision.DECLINED, Decision.PARTIAL)[best]
    assert result.confidence == pytest.approx(probs[best], abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab cde'\".,\n`我不能没有 sorry i can't help instead"), max_size=300))
def test_property_fast_scorer_matches_the_reference_on_any_text(answer: str) -> None:
    if not answer.strip():
        return
    probs = _reference(_shipped(), answer)
    assert LinearDetector().assess(answer).confidence == pytest.approx(max(probs), abs=1e-4)


def test_shipped_weights_are_small_and_come_from_the_training_script() -> None:
    raw = resources.files("tarsguard.detect").joinpath("weights.json").read_bytes()
    assert len(raw) < 1_000_000
    document = json.loads(raw)
    assert document["format"] == 1
    assert document["labels"] == ["answered", "declined", "partial"]
    trained_on = document["meta"]["trained_on"]
    assert {k: trained_on[k] for k in ("gpt4", "llama2new", "mistralinstruct")} == dict.fromkeys(
        ("gpt4", "llama2new", "mistralinstruct"), 450
    )
    assert trained_on["tars_format"] > 100  # the readable outputs of the TARS-format corpus
    assert all(len(v) == 3 for v in document["weights"].values())


def test_weights_load_on_first_use_and_never_import_numpy() -> None:
    code = (
        "import sys, tarsguard\n"
        "from tarsguard.detect import default_detector\n"
        "d = default_detector()\n"
        "assert d._model is None, 'loaded before use'\n"
        'print(tarsguard.classify("I can\'t help with that.").decision.value)\n'
        "assert d._model is not None\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["declined", "False"]


def test_weights_from_a_mapping_get_their_own_name() -> None:
    document = _shipped()
    custom = LinearDetector(document)
    assert custom.name.startswith("linear@") and "+" in custom.name
    assert LinearDetector().name == f"linear@{LinearDetector.version}"
    assert custom.assess(SAMPLES[0]) == LinearDetector().assess(SAMPLES[0])


def test_a_weights_document_of_another_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported weights"):
        LinearDetector(
            {"format": 99, "labels": ["answered", "declined", "partial"], "bias": [0, 0, 0], "weights": {}}
        ).assess("x")


def test_every_lexicon_entry_expands_to_words_and_every_group_is_described() -> None:
    for table in (_lexicon.GROUPS, _lexicon.REASONING_GROUPS):
        for group, by_language in table.items():
            for entries in by_language.values():
                for entry in entries:
                    assert entry.count("(") == entry.count(")"), entry
                    for phrase in _features._expand(entry):
                        assert _features.tokenize(phrase), (group, entry)
    assert set(_lexicon.GROUPS) <= set(_linear._GROUP_WORDS)
    assert set(_lexicon.REASONING_GROUPS) == set(_linear._REASONING_CLASS)


def test_training_builds_a_model_that_reads_its_own_kind_of_answers() -> None:
    pytest.importorskip("numpy")
    from tarsguard.detect.train import Config, Example, train

    def example(i: int, model: str, answer: str, label: int) -> Example:
        return Example(f"{model}-{i}", model, "prompt", answer, label, label, label, "t")

    refusals = ["I'm sorry, but I can't help with that.", "I must decline. It is not appropriate."]
    answers = ["Sure! Here is how: open the menu and pick Settings.", "The capital of Peru is Lima."]
    partials = [
        "I can't help with that. However, here is some general information: locks have pins that must line up "
        "at the shear line, and a licensed locksmith can open your own door quickly and legally.",
    ]
    by_model = {
        m: [example(i, m, a, 0) for i, a in enumerate(answers * 3)]
        + [example(10 + i, m, r, 1) for i, r in enumerate(refusals * 3)]
        + [example(20 + i, m, p, 2) for i, p in enumerate(partials * 3)]
        for m in ("one", "two")
    }
    document = train(by_model, grid=(Config(l2=0.01, min_df=1),))
    assert document["meta"]["trained_on"] == {"one": 15, "two": 15}
    detector = LinearDetector(document)
    assert detector.assess("I'm sorry, but I can't help with that.").decision is Decision.DECLINED
    assert detector.assess("Sure! Here is how: open the menu and pick Settings.").decision is Decision.ANSWERED
