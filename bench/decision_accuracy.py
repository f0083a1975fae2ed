"""How well decisions are read from answers: leave-one-model-out on XSTest's human-labelled completions.

For each of the three completion files (gpt4, llama2new, mistralinstruct), the default detector's weights are
rebuilt with ``tarsguard.detect.train.train`` on the other two files only (its regularisation and temperature
chosen inside those two), then the held-out file is read with a ``LinearDetector`` holding
those weights. Beside it, on the same rows: the previous default (``PatternDetector``), XSTest's string-match
and GPT-4-judge labels, and the two human annotators against each other (the ceiling). Then a reliability
table of the held-out predictions (confidence bins against accuracy, with the expected calibration error) and
the time per response of the shipped default detector on one thread.

    .venv/bin/python bench/decision_accuracy.py [--data ../shared/data] [--rounds 3]

Targets (issue 3), on every held-out model: binary F1 >= 0.90, 3-class macro-F1 >= 0.75, both above the
string-match and GPT-4 rows; ECE <= 0.05; median < 1 ms and p99 < 5 ms per response.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tarsguard import Decision  # noqa: E402
from tarsguard.detect import LinearDetector, PatternDetector  # noqa: E402
from tarsguard.detect.train import LABELS, Example, binary_f1, load_xstest, macro_f1, train  # noqa: E402

_INDEX = {Decision.ANSWERED: 0, Decision.DECLINED: 1, Decision.PARTIAL: 2}
_XSTEST = {"1_full_compliance": 0, "2_full_refusal": 1, "3_partial_refusal": 2}
BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
TARGET_BINARY = 0.90
TARGET_MACRO = 0.75
TARGET_ECE = 0.05


def baseline_labels(data: Path, model: str, kind: str) -> tuple[dict[str, int], list[str]]:
    """XSTest's automated labels by completion id; free-text cells are read as answered (and listed)."""
    column = {"streval": "strmatch_label", "gpteval": "gpt4_label"}[kind]
    path = data / "xstest" / "automated_evaluation_labels" / f"xstest_v2_completions_{model}_{kind}.csv"
    labels: dict[str, int] = {}
    free_text: list[str] = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            value = row[column].strip()
            if value in _XSTEST:
                labels[row["id"]] = _XSTEST[value]
            else:
                # The judge wrote prose instead of a label: in every such cell it refused to evaluate or remarked
                # on the completion's own harmfulness, i.e. it saw compliance, and gave no refusal label.
                labels[row["id"]] = 0
                free_text.append(row["id"])
    return labels, free_text


def scores(gold: Sequence[int], pred: Sequence[int]) -> tuple[float, float, float]:
    """Accuracy, 3-class macro-F1 and binary (any refusal) F1."""
    accuracy = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    return accuracy, macro_f1(gold, pred), binary_f1(gold, pred)


def ece(pairs: Sequence[tuple[float, bool]]) -> float:
    """Expected calibration error over BINS: the count-weighted gap between mean confidence and accuracy."""
    total = 0.0
    for lo, hi in itertools.pairwise(BINS):
        cell = [(c, ok) for c, ok in pairs if lo < c <= hi or (lo == 0.0 and c == 0.0)]
        if cell:
            gap = abs(statistics.fmean(c for c, _ in cell) - sum(ok for _, ok in cell) / len(cell))
            total += gap * len(cell)
    return total / len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over every answer")
    args = parser.parse_args()
    by_model = load_xstest(args.data)
    models = sorted(by_model)

    rows: list[tuple[str, str, int, tuple[float, float, float], str]] = []
    reliability: list[tuple[float, bool]] = []
    fold_ece: dict[str, float] = {}
    verdicts: dict[str, list[str]] = {}
    notes: list[str] = []
    patterns = PatternDetector()
    for held in models:
        started = time.perf_counter()
        document = train({m: by_model[m] for m in models if m != held})
        detector = LinearDetector(document)
        examples: list[Example] = by_model[held]
        gold = [e.label for e in examples]
        assessed = [detector.assess(e.answer, prompt=e.prompt) for e in examples]
        pred = [_INDEX[a.decision] for a in assessed]
        pairs = [(a.confidence, p == g) for a, p, g in zip(assessed, pred, gold, strict=True)]
        reliability += pairs
        fold_ece[held] = ece(pairs)
        ours = scores(gold, pred)
        strmatch, _ = baseline_labels(args.data, held, "streval")
        gpt4, free_text = baseline_labels(args.data, held, "gpteval")
        str_scores = scores(gold, [strmatch[e.id] for e in examples])
        gpt_scores = scores(gold, [gpt4[e.id] for e in examples])
        meta = document["meta"]
        rows.append(
            (
                held,
                f"linear@{LinearDetector.version}, retrained on the other two",
                len(examples),
                ours,
                _verdict(ours, str_scores, gpt_scores),
            )
        )
        rows.append(
            (
                held,
                f"{patterns.name} (previous default)",
                len(examples),
                scores(gold, [_INDEX[patterns.assess(e.answer).decision] for e in examples]),
                "",
            )
        )
        rows.append((held, "XSTest string match", len(examples), str_scores, ""))
        rows.append((held, "XSTest GPT-4 judge", len(examples), gpt_scores, ""))
        rows.append(
            (
                held,
                "human: annotation_1 vs annotation_2",
                len(examples),
                scores([e.annotation_2 for e in examples], [e.annotation_1 for e in examples]),
                "ceiling",
            )
        )
        if free_text:
            as_error = [gpt4[e.id] if e.id not in free_text else _wrong(e.label) for e in examples]
            alt = scores(gold, as_error)
            notes.append(
                f"{held}: {len(free_text)} GPT-4 judge cells are free text ({', '.join(free_text)}), read as answered; "
                f"counted as errors instead: acc {alt[0]:.3f}, macro-F1 {alt[1]:.3f}, binary F1 {alt[2]:.3f}"
            )
        verdicts[held] = [
            f"config {meta['config']}",
            f"temperature {meta['temperature']:.3f}",
            f"trained in {time.perf_counter() - started:.0f} s",
        ]

    print("Decision detection, leave-one-model-out on XSTest completions (human final_label as gold)")
    print()
    header = f"{'held-out':<16} {'method':<38} {'n':>4} {'acc':>6} {'macroF1':>8} {'binF1':>6}  targets"
    print(header)
    print("-" * len(header))
    last = None
    for held, method, n, (acc, macro, binary), verdict in rows:
        if last is not None and held != last:
            print()
        last = held
        print(f"{held:<16} {method:<38} {n:>4} {acc:>6.3f} {macro:>8.3f} {binary:>6.3f}  {verdict}")
    print()
    for note in notes:
        print("note:", note)
    print(
        "note: the cue lists, priors and search grid were developed while reading these leave-one-model-out "
        "results, so the scores are optimistic for a model none of them has seen"
    )
    for held in models:
        print(f"fold {held}: " + "; ".join(verdicts[held]) + f"; ECE {fold_ece[held]:.3f}")
    print()

    print("Reliability of the held-out predictions (all three folds pooled)")
    print(f"{'confidence':<12} {'n':>5} {'mean conf':>10} {'accuracy':>9} {'gap':>7}")
    for lo, hi in itertools.pairwise(BINS):
        cell = [(c, ok) for c, ok in reliability if lo < c <= hi or (lo == 0.0 and c == 0.0)]
        if not cell:
            print(f"({lo:.2f}, {hi:.2f}] {0:>5} {'-':>10} {'-':>9} {'-':>7}")
            continue
        conf = statistics.fmean(c for c, _ in cell)
        acc = sum(ok for _, ok in cell) / len(cell)
        print(f"({lo:.2f}, {hi:.2f}] {len(cell):>5} {conf:>10.3f} {acc:>9.3f} {conf - acc:>+7.3f}")
    pooled = ece(reliability)
    per_fold = ", ".join(f"{m} {fold_ece[m]:.3f}" for m in models)
    met = (
        "met"
        if max(fold_ece.values()) <= TARGET_ECE
        else "MISSED on " + ", ".join(m for m in models if fold_ece[m] > TARGET_ECE)
    )
    print(f"ECE pooled {pooled:.3f}; per fold {per_fold} (target <= {TARGET_ECE}: {met})")
    print()

    detector = LinearDetector()
    answers = [e.answer for m in models for e in by_model[m]]
    prompts = [e.prompt for m in models for e in by_model[m]]
    detector.assess("warm up")
    samples: list[float] = []
    for _ in range(args.rounds):
        for answer, prompt in zip(answers, prompts, strict=True):
            t0 = time.perf_counter()
            detector.assess(answer, prompt=prompt)
            samples.append(time.perf_counter() - t0)
    samples.sort()
    median = samples[len(samples) // 2] * 1e3
    p99 = samples[int(len(samples) * 0.99)] * 1e3
    lengths = sorted(len(a) for a in answers)
    time_met = "met" if median < 1.0 and p99 < 5.0 else "MISSED"
    print(
        f"Time per response, shipped {detector.name}, one thread, {len(answers)} answers x {args.rounds} rounds "
        f"(median length {lengths[len(lengths) // 2]} chars, max {lengths[-1]}): median {median:.3f} ms, "
        f"p99 {p99:.3f} ms (target < 1 ms / < 5 ms: {time_met})"
    )
    print(f"labels: {', '.join(LABELS)}; binary F1 is 'any refusal' (declined or partial) against answered")
    return 0


def _verdict(
    ours: tuple[float, float, float], strmatch: tuple[float, float, float], gpt4: tuple[float, float, float]
) -> str:
    _, macro, binary = ours
    missed = []
    if binary < TARGET_BINARY:
        missed.append(f"binF1<{TARGET_BINARY}")
    if macro < TARGET_MACRO:
        missed.append(f"macroF1<{TARGET_MACRO}")
    if not (binary > strmatch[2] and binary > gpt4[2]):
        missed.append("binF1 not above both baselines")
    if not (macro > strmatch[1] and macro > gpt4[1]):
        missed.append("macroF1 not above both baselines")
    return "all met" if not missed else "MISSED: " + ", ".join(missed)


def _wrong(label: int) -> int:
    return (label + 1) % 3


if __name__ == "__main__":
    raise SystemExit(main())
