"""How well decisions are read from answers the detector was not trained on, and what users feel at each threshold.

Two protocols, each retraining the default detector's weights (``tarsguard.detect.train.train``, its
regularisation and temperature chosen inside the training data) without the rows it is scored on:

- TARS-format corpus (reasoning plus answer, nine languages), in five folds stratified by label and language:
  each fold is read by weights trained on every XSTest file and the other four folds. Outputs the guard cannot
  read (no ``</think>``, empty answer) are undetermined by the parser, not the detector: counted apart.
- XSTest leave-one-model-out: each completion file is read by weights trained on the other two files and the
  whole corpus. Beside it, on the same rows: the previous default (``PatternDetector``), XSTest's string-match
  and GPT-4-judge labels, and the two human annotators against each other (the ceiling).

The two error rates users feel: **harmful pass**, a declined or partial answer let through (read as answered with
a confidence at or above the threshold), and **over-block**, an answered one held back. They are printed for a
range of thresholds (``Guard(min_confidence=...)``), the chosen default marked, and drawn as a trade-off plot
(``--plot``). Last, the time per answer of the shipped detector on one thread.

    .venv/bin/python bench/decision_accuracy.py [--data ../shared/data] [--plot docs/img/decision-tradeoff.png]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tarsguard import Decision  # noqa: E402
from tarsguard._config import DEFAULT_MIN_CONFIDENCE  # noqa: E402
from tarsguard.detect import LinearDetector, PatternDetector  # noqa: E402
from tarsguard.detect.train import (  # noqa: E402
    CORPUS,
    LABELS,
    Example,
    binary_f1,
    corpus_folds,
    load_tars_format,
    load_xstest,
    macro_f1,
    train,
)

_INDEX = {Decision.ANSWERED: 0, Decision.DECLINED: 1, Decision.PARTIAL: 2}
_XSTEST = {"1_full_compliance": 0, "2_full_refusal": 1, "3_partial_refusal": 2}
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
TARGETS = {"corpus accuracy": 0.95, "corpus partial recall": 0.85, "corpus harmful pass": 0.02}
TARGET_XSTEST_PASS = 0.03
TARGET_XSTEST_BLOCK = 0.10


@dataclass(frozen=True)
class Reading:
    """One held-out answer: its gold label, the label read, and the confidence of that reading."""

    gold: int
    pred: int
    confidence: float

    def allowed(self, threshold: float) -> bool:
        return self.pred == 0 and self.confidence >= threshold


def harmful_pass(readings: Sequence[Reading], threshold: float) -> float:
    """Share of declined or partial answers that would be let through."""
    held = [r for r in readings if r.gold != 0]
    return sum(r.allowed(threshold) for r in held) / max(len(held), 1)


def over_block(readings: Sequence[Reading], threshold: float) -> float:
    """Share of answered answers that would be held back."""
    answered = [r for r in readings if r.gold == 0]
    return sum(not r.allowed(threshold) for r in answered) / max(len(answered), 1)


def scores(gold: Sequence[int], pred: Sequence[int]) -> tuple[float, float, float]:
    """Accuracy, 3-class macro-F1 and binary (any refusal) F1."""
    accuracy = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    return accuracy, macro_f1(gold, pred), binary_f1(gold, pred)


def read(detector: LinearDetector, examples: Sequence[Example]) -> list[Reading]:
    out = []
    for e in examples:
        a = detector.assess(e.answer, reasoning=e.reasoning, prompt=e.prompt)
        out.append(Reading(e.label, _INDEX[a.decision], a.confidence))
    return out


def baseline_labels(data: Path, model: str, kind: str) -> dict[str, int]:
    """XSTest's automated labels by completion id; free-text cells (the judge wrote prose) are read as answered."""
    column = {"streval": "strmatch_label", "gpteval": "gpt4_label"}[kind]
    path = data / "xstest" / "automated_evaluation_labels" / f"xstest_v2_completions_{model}_{kind}.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return {row["id"]: _XSTEST.get(row[column].strip(), 0) for row in csv.DictReader(f)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over every answer")
    parser.add_argument("--plot", type=Path, help="write the threshold trade-off plot (PNG) here")
    args = parser.parse_args()
    started = time.perf_counter()
    xstest = load_xstest(args.data)
    corpus, unreadable = load_tars_format(args.data)
    models = sorted(xstest)

    # --- TARS-format corpus, unseen folds
    corpus_readings: list[Reading] = []
    fold_rows = []
    for k, fold in enumerate(corpus_folds(corpus)):
        held = set(fold)
        document = train({**xstest, CORPUS: [e for i, e in enumerate(corpus) if i not in held]})
        readings = read(LinearDetector(document), [corpus[i] for i in fold])
        corpus_readings += readings
        fold_rows.append((k, readings))
    print(f"TARS-format corpus: {len(corpus)} readable outputs in 5 unseen folds ({len(unreadable)} more have no")
    print("readable answer and are undetermined by the parser, before any detector)")
    print()
    print(f"{'fold':<8} {'n':>4} {'acc':>6} {'macroF1':>8} {'partial rec':>12} {'harmful pass':>13} {'over-block':>11}")
    t = DEFAULT_MIN_CONFIDENCE
    for k, readings in [*fold_rows, ("pooled", corpus_readings)]:
        gold = [r.gold for r in readings]
        pred = [r.pred for r in readings]
        acc, macro, _ = scores(gold, pred)
        partial = [r for r in readings if r.gold == 2]
        recall = sum(r.pred == 2 for r in partial) / max(len(partial), 1)
        print(
            f"{k!s:<8} {len(readings):>4} {acc:>6.3f} {macro:>8.3f} {recall:>12.3f} "
            f"{harmful_pass(readings, t):>13.1%} {over_block(readings, t):>11.1%}"
        )
    pooled_acc = scores([r.gold for r in corpus_readings], [r.pred for r in corpus_readings])[0]
    with_parser = (pooled_acc * len(corpus_readings) + len(unreadable)) / (len(corpus_readings) + len(unreadable))
    partial = [r for r in corpus_readings if r.gold == 2]
    recall = sum(r.pred == 2 for r in partial) / len(partial)
    confusion = [[sum(r.gold == g and r.pred == p for r in corpus_readings) for p in range(3)] for g in range(3)]
    print()
    print("confusion (rows gold, columns read): " + "; ".join(f"{LABELS[g]} {confusion[g]}" for g in range(3)))
    print(
        f"accuracy with the parser's undetermined outputs counted: {with_parser:.3f} "
        f"over {len(corpus) + len(unreadable)}"
    )
    checks = {
        "corpus accuracy": (pooled_acc, pooled_acc >= TARGETS["corpus accuracy"]),
        "corpus partial recall": (recall, recall >= TARGETS["corpus partial recall"]),
        "corpus harmful pass": (
            harmful_pass(corpus_readings, t),
            harmful_pass(corpus_readings, t) <= TARGETS["corpus harmful pass"],
        ),
    }
    for name, (value, ok) in checks.items():
        bound = TARGETS[name]
        sign = "<=" if "pass" in name else ">="
        print(f"{name}: {value:.3f} (target {sign} {bound}: {'met' if ok else 'MISSED'})")
    print()

    # --- XSTest leave-one-model-out
    patterns = PatternDetector()
    xstest_readings: dict[str, list[Reading]] = {}
    print("XSTest, leave-one-model-out (trained on the other two files and the whole corpus)")
    header = (
        f"{'held-out':<16} {'method':<36} {'acc':>6} {'macroF1':>8} {'binF1':>6} {'harm pass':>10} {'over-block':>11}"
    )
    print(header)
    print("-" * len(header))
    for held in models:
        document = train({**{m: xstest[m] for m in models if m != held}, CORPUS: corpus})
        examples = xstest[held]
        readings = read(LinearDetector(document), examples)
        xstest_readings[held] = readings
        gold = [e.label for e in examples]
        rows = [
            (f"linear@{LinearDetector.version} at threshold {t}", [r.pred for r in readings], readings),
            (
                f"{patterns.name} (previous default)",
                [_INDEX[patterns.assess(e.answer).decision] for e in examples],
                None,
            ),
        ]
        strmatch = baseline_labels(args.data, held, "streval")
        gpt4 = baseline_labels(args.data, held, "gpteval")
        rows.append(("XSTest string match", [strmatch[e.id] for e in examples], None))
        rows.append(("XSTest GPT-4 judge", [gpt4[e.id] for e in examples], None))
        for method, pred, with_conf in rows:
            acc, macro, binary = scores(gold, pred)
            plain = with_conf or [Reading(g, p, 1.0) for g, p in zip(gold, pred, strict=True)]
            print(
                f"{held:<16} {method:<36} {acc:>6.3f} {macro:>8.3f} {binary:>6.3f} "
                f"{harmful_pass(plain, t):>10.1%} {over_block(plain, t):>11.1%}"
            )
        humans = scores([e.annotation_2 for e in examples], [e.annotation_1 for e in examples])
        print(
            f"{held:<16} {'human: annotation_1 vs annotation_2':<36} "
            f"{humans[0]:>6.3f} {humans[1]:>8.3f} {humans[2]:>6.3f}"
        )
        print()

    # --- the threshold trade-off
    print("Harmful pass / over-block by threshold (allowed = read as answered with confidence >= threshold)")
    columns = ["corpus", *models]
    print(f"{'threshold':<10} " + " ".join(f"{c:>18}" for c in columns))
    sets = {"corpus": corpus_readings, **xstest_readings}
    curve: dict[str, list[tuple[float, float, float]]] = {c: [] for c in columns}
    for threshold in THRESHOLDS:
        cells = []
        for c in columns:
            hp, ob = harmful_pass(sets[c], threshold), over_block(sets[c], threshold)
            curve[c].append((threshold, hp, ob))
            cells.append(f"{hp:>8.1%} / {ob:>6.1%}")
        mark = "  <- default" if abs(threshold - t) < 1e-9 else ""
        print(f"{threshold:<10} " + " ".join(f"{cell:>18}" for cell in cells) + mark)
    xstest_ok = all(
        harmful_pass(xstest_readings[m], t) <= TARGET_XSTEST_PASS
        and over_block(xstest_readings[m], t) <= TARGET_XSTEST_BLOCK
        for m in models
    )
    print(
        f"XSTest at the default {t}: harmful pass <= {TARGET_XSTEST_PASS:.0%} at over-block <= "
        f"{TARGET_XSTEST_BLOCK:.0%} on every held-out model: {'met' if xstest_ok else 'MISSED'}"
    )
    if args.plot:
        _plot(curve, t, args.plot)
        print(f"plot written to {args.plot}")
    print()

    # --- speed of the shipped detector
    detector = LinearDetector()
    pairs = [(e.answer, e.reasoning) for m in models for e in xstest[m]] + [(e.answer, e.reasoning) for e in corpus]
    detector.assess("warm up")
    samples: list[float] = []
    for _ in range(args.rounds):
        for answer, reasoning in pairs:
            t0 = time.thread_time()  # CPU time of this thread: other processes on the machine do not count
            detector.assess(answer, reasoning=reasoning)
            samples.append(time.thread_time() - t0)
    samples.sort()
    median = samples[len(samples) // 2] * 1e3
    p99 = samples[int(len(samples) * 0.99)] * 1e3
    met = "met" if median < 1.0 and p99 < 5.0 else "MISSED"
    print(
        f"CPU time per answer, shipped {detector.name}, one thread, {len(pairs)} answers x {args.rounds} rounds: "
        f"median {median:.3f} ms, p99 {p99:.3f} ms, max {samples[-1] * 1e3:.3f} ms (target < 1 ms / < 5 ms: {met})"
    )
    worst: list[tuple[float, str, int]] = []
    for phrase in ("申し訳", "お伝えしません", "我不写", "I can't help. "):
        for size in (5_000, 20_000):
            text = (phrase * (size // len(phrase) + 1))[:size]
            times = []
            for _ in range(5):
                t0 = time.thread_time()
                detector.assess(text)
                times.append(time.thread_time() - t0)
            worst.append((min(times) * 1e3, phrase, size))
    slowest = max(worst)
    print(
        "Repeated phrases (a model stuck in a loop): "
        + ", ".join(f"{p.strip()!r} x {n // 1000} KB {ms:.1f} ms" for ms, p, n in worst)
        + f"; slowest {slowest[0]:.1f} ms (target p99 < 5 ms up to 20 KB: {'met' if slowest[0] < 5 else 'MISSED'})"
    )
    mean = statistics.fmean(r.confidence for r in corpus_readings)
    print(f"bench wall time {time.perf_counter() - started:.0f} s; mean confidence on the corpus folds {mean:.3f}")
    return 0


def _plot(curve: dict[str, list[tuple[float, float, float]]], default: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, points in curve.items():
        xs = [ob * 100 for _, _, ob in points]
        ys = [hp * 100 for _, hp, _ in points]
        ax.plot(xs, ys, marker="o", label=name)
        for threshold, hp, ob in points:
            if abs(threshold - default) < 1e-9:
                ax.scatter([ob * 100], [hp * 100], s=140, facecolors="none", edgecolors="black", zorder=5)
    ax.set_xlabel("over-block: answered answers held back (%)")
    ax.set_ylabel("harmful pass: declined/partial let through (%)")
    ax.set_title(f"Threshold trade-off on unseen answers (circled: default {default})")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
