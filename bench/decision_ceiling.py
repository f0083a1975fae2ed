"""How far answer text alone can go on each XSTest file when a classifier is trained on that file's own labels.

bench/decision_accuracy.py trains on two completion files and scores the third (the issue's protocol). This probe
asks a different question: with a file's own labelling convention in its training data, how well can a classifier
over the answer's text reproduce that file's labels? Five-fold cross-validation inside each file (stratified,
fixed seed), with three classifiers:

- tarsguard's own: ``tarsguard.detect.train.train`` on the four training folds (its inner search treats each fold
  as a "model"), read by a ``LinearDetector``; once on the file's folds alone, once with the other two files added;
- TF-IDF word 1-2 grams of the whole answer (and of prompt plus answer) into logistic regression, the regularisation
  and class weighting picked by the test folds' own binary F1 (optimistic on purpose). Needs scikit-learn, which
  tarsguard does not depend on (``pip install scikit-learn``); skipped without it.

Issue 3's targets on a held-out file are binary F1 >= 0.90 and 3-class macro-F1 >= 0.75; if a classifier that has
seen the file's own labels stays below them, one that has not seen them is not expected to reach them.

    .venv/bin/python bench/decision_ceiling.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tarsguard import Decision  # noqa: E402
from tarsguard.detect import LinearDetector  # noqa: E402
from tarsguard.detect.train import Example, binary_f1, load_xstest, macro_f1, train  # noqa: E402

FOLDS = 5
_INDEX = {Decision.ANSWERED: 0, Decision.DECLINED: 1, Decision.PARTIAL: 2}
Predict = Callable[[list[Example], list[Example]], list[int]]
"""Trains on the first list and returns a label index for each example of the second."""


def stratified_folds(examples: Sequence[Example], seed: int = 0) -> list[list[int]]:
    """Indices of ``examples`` dealt into ``FOLDS`` folds, each label spread evenly."""
    folds: list[list[int]] = [[] for _ in range(FOLDS)]
    rng = random.Random(seed)
    dealt = 0
    for label in sorted({e.label for e in examples}):
        members = [i for i, e in enumerate(examples) if e.label == label]
        rng.shuffle(members)
        for i in members:
            folds[dealt % FOLDS].append(i)
            dealt += 1
    return folds


def cross_validate(examples: list[Example], predict: Predict) -> tuple[float, float]:
    """Macro-F1 and binary F1 of ``predict`` over ``FOLDS``-fold cross-validation inside ``examples``."""
    predicted = [0] * len(examples)
    for held in stratified_folds(examples):
        held_set = set(held)
        training = [e for i, e in enumerate(examples) if i not in held_set]
        for i, label in zip(held, predict(training, [examples[i] for i in held]), strict=True):
            predicted[i] = label
    gold = [e.label for e in examples]
    return macro_f1(gold, predicted), binary_f1(gold, predicted)


def tarsguard_linear(extra: list[Example]) -> Predict:
    """tarsguard's trainer on the training folds (each fold a "model" for its inner search), plus ``extra``."""

    def predict(training: list[Example], held: list[Example]) -> list[int]:
        groups: dict[str, list[Example]] = {}
        for k, example in enumerate(training):
            name = f"fold{k % (FOLDS - 1)}"
            groups.setdefault(name, []).append(dataclasses.replace(example, model=name))
        for example in extra:
            groups.setdefault(example.model, []).append(example)
        detector = LinearDetector(train(groups))
        return [_INDEX[detector.assess(e.answer).decision] for e in held]

    return predict


def tfidf_probes(examples: list[Example]) -> list[tuple[str, tuple[float, float]]]:
    """The TF-IDF + logistic regression rows (best setting by binary F1), or none without scikit-learn."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return []
    rows = []
    for with_prompt in (False, True):
        settings = [(c, weighting) for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0) for weighting in (None, "balanced")]
        scores = [cross_validate(examples, _tfidf(c, weighting, with_prompt)) for c, weighting in settings]
        best = max(scores, key=lambda pair: pair[1])
        rows.append((f"TF-IDF + logistic regression, {'prompt and answer' if with_prompt else 'answer'}", best))
    return rows


def _tfidf(c: float, weighting: str | None, with_prompt: bool) -> Predict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def text(example: Example) -> str:
        return f"{example.prompt}\n\n{example.answer}" if with_prompt else example.answer

    def predict(training: list[Example], held: list[Example]) -> list[int]:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(C=c, max_iter=3000, class_weight=weighting),
        )
        model.fit([text(e) for e in training], [e.label for e in training])
        return [int(p) for p in model.predict([text(e) for e in held])]

    return predict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    args = parser.parse_args()
    by_model = load_xstest(args.data)
    print(f"Trained on a file's own labels: {FOLDS}-fold cross-validation inside each XSTest completion file")
    print()
    header = f"{'file':<16} {'classifier':<62} {'macroF1':>8} {'binF1':>6}"
    print(header)
    print("-" * len(header))
    for name, examples in by_model.items():
        others = [e for m, rest in by_model.items() if m != name for e in rest]
        rows = [
            ("tarsguard linear, the file's folds only", cross_validate(examples, tarsguard_linear([]))),
            ("tarsguard linear, the file's folds + the other two", cross_validate(examples, tarsguard_linear(others))),
            *tfidf_probes(examples),
        ]
        for label, (macro, binary) in rows:
            print(f"{name:<16} {label:<62} {macro:>8.3f} {binary:>6.3f}")
    print()
    print("issue 3 targets on a held-out file: macro-F1 >= 0.75, binary F1 >= 0.90")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
