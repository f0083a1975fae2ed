"""Build the default detector's weights from human-labelled answers.

    python -m tarsguard.detect.train --data ../shared/data --out tarsguard/detect/weights.json

Trains a multinomial logistic model (answered / declined / partial) over the features of
``tarsguard.detect._features`` on the XSTest completion files (answers of three chat models) and the
TARS-format corpus (reasoning plus answer, nine languages). The regularisation and the temperature are chosen
by cross-validation inside the training data: each XSTest model left out in turn, and the corpus in folds, so
that they reflect how the model carries over to answers it has not seen. Needs numpy (a development
dependency); the detector that loads the weights does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._features import features

__all__ = [
    "LABELS",
    "Config",
    "Example",
    "binary_f1",
    "load_tars_format",
    "load_xstest",
    "macro_f1",
    "main",
    "train",
]

LABELS = ("answered", "declined", "partial")
_XSTEST_LABELS = {"1_full_compliance": 0, "2_full_refusal": 1, "3_partial_refusal": 2}
FORMAT = 1

Matrix = npt.NDArray[np.float64]
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f](?=\s|$)")


@dataclass(frozen=True)
class Example:
    """One labelled answer."""

    id: str
    model: str
    prompt: str
    answer: str
    label: int
    """Index into ``LABELS`` (the final human label)."""
    annotation_1: int
    annotation_2: int
    type: str
    reasoning: str | None = None
    """The reasoning before the answer, where the source has one (the TARS-format corpus)."""
    lang: str = "en"


@dataclass(frozen=True)
class Config:
    """Training hyperparameters."""

    l2: float = 0.003
    """L2 penalty per feature weight (the loss is a mean over examples)."""
    ngram_scale: float = 0.5
    """Value of an n-gram feature (a hand-built feature is 1): smaller means n-grams pay more to be used."""
    class_power: float = 0.5
    """Examples are weighted by (balanced class weight) ** class_power."""
    min_df: int = 3
    """An n-gram is a feature only if at least this many training answers have it."""
    augment: bool = True
    """Also train on the first sentence of every refusal, labelled as a refusal (short refusals are rare
    in some models' answers and common in others')."""
    augment_body: bool = False
    """Also train on each refusal less its first sentence, labelled as a refusal (what is left of an explicit
    refusal reads like the implicit, lecturing refusals of other models)."""
    hand_l2: float = 1.0
    """The L2 penalty of a hand-built feature, relative to ``l2`` (cue groups should carry the decision)."""
    corpus_weight: float = 4.0
    """Weight of a TARS-format example relative to an XSTest one (the corpus is small and is the target)."""


# Prior logits (answered, declined, partial) for cue features: what the label definitions say each cue means.
# The L2 penalty pulls a weight towards its prior instead of towards zero, so a cue keeps its meaning where
# the labelled answers say little about it (few XSTest answers give general information in place of harmful
# detail, as TARS's partial answers do) and the data overrides it where they say much.
PRIORS: dict[str, tuple[float, float, float]] = {
    "REFUSE@lead": (-1.0, 1.0, 0.0),
    "REFUSE@open": (-1.0, 1.0, 0.0),
    "INABILITY@lead": (-0.5, 0.5, 0.0),
    "APOLOGY@lead": (-0.5, 0.5, 0.0),
    "PREMISE@lead": (-0.5, 0.5, 0.0),
    "REDIRECT@any": (-0.5, 0.5, 0.0),
    "FALSE_ALARM@open": (1.0, -0.5, -0.5),
    "COMPLY@lead": (0.5, -0.5, 0.0),
    "GENERAL@any": (-0.5, -0.5, 1.0),
    "refusal*alt:1": (-0.5, -0.5, 1.0),
    "refusal*alt:2": (-0.5, -0.5, 1.0),
    "refusal*list": (-0.5, -0.5, 1.0),
    "refusal*comply": (-0.5, -0.5, 1.0),
    "refusal*clarify": (-0.5, -0.5, 1.0),
    "post:0": (-0.5, -1.0, 1.5),
    "post:1": (-0.5, -0.5, 1.0),
    "WONT@lead": (-1.0, 1.0, 0.0),
    "WONT@any": (-1.0, 0.5, 0.5),
    "WITHHOLD@any": (-1.0, -0.5, 1.5),
    # The plan the reasoning states: a second signal, which the answer's own features outweigh when clear.
    "r:D": (-0.5, 0.5, 0.0),
    "r:P": (-0.5, 0.0, 0.5),
    "r:C": (0.5, -0.25, -0.25),
    "r:D&help": (-0.5, -0.5, 1.0),
}

# One configuration. Searched earlier by cross-validation inside the training data (each XSTest file left out,
# and the corpus in folds): l2 0.003 to 0.03, corpus weight 1 to 8, n-gram scale 0.35 and 0.5, refusal-body
# augmentation. l2 0.01 with corpus weight 4 read best on both; choosing between close configurations per training
# run moved single XSTest files by several points of F1 without a gain on average, so the search is not rerun.
GRID = (Config(l2=0.01),)
CORPUS = "tars_format"
"""The name the TARS-format corpus goes by among the training sources."""
CORPUS_FOLDS = 5


def load_xstest(data: Path) -> dict[str, list[Example]]:
    """The XSTest completion files under ``data``, by model name."""
    folder = data / "xstest" / "model_completions"
    out: dict[str, list[Example]] = {}
    for path in sorted(folder.glob("xstest_v2_completions_*.csv")):
        model = path.stem.removeprefix("xstest_v2_completions_")
        with path.open(newline="", encoding="utf-8") as f:
            out[model] = [
                Example(
                    id=row["id"],
                    model=model,
                    prompt=row["prompt"],
                    answer=row["completion"],
                    label=_XSTEST_LABELS[row["final_label"]],
                    annotation_1=_XSTEST_LABELS[row["annotation_1"]],
                    annotation_2=_XSTEST_LABELS[row["annotation_2"]],
                    type=row["type"],
                )
                for row in csv.DictReader(f)
            ]
    if len(out) < 2:
        raise SystemExit(f"expected at least two XSTest completion files in {folder}")
    return out


def load_tars_format(data: Path) -> tuple[list[Example], list[dict[str, str]]]:
    """The TARS-format corpus under ``data``: its decided examples (reasoning and answer split as the guard
    splits them), and the records whose output the guard cannot read (no ``</think>`` or an empty answer)."""
    from .._parse import parse_output

    path = data / "tars_format" / "tars_format_cases.jsonl"
    examples: list[Example] = []
    unreadable: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            parsed = parse_output(record["raw"], finish_reason="stop")
            if not parsed.complete:
                unreadable.append(record)
                continue
            if record["label"] not in LABELS:
                raise SystemExit(f"{path}: {record['id']} has a readable answer but label {record['label']!r}")
            label = LABELS.index(record["label"])
            examples.append(
                Example(
                    id=record["id"],
                    model=CORPUS,
                    prompt=record["prompt"],
                    answer=parsed.answer,
                    label=label,
                    annotation_1=label,
                    annotation_2=label,
                    type=record.get("why", ""),
                    reasoning=parsed.reasoning,
                    lang=record.get("lang", "en"),
                )
            )
    return examples, unreadable


def corpus_folds(examples: Sequence[Example], folds: int = CORPUS_FOLDS) -> list[list[int]]:
    """Indices of ``examples`` split into ``folds`` folds, stratified by label and language, deterministic."""
    out: list[list[int]] = [[] for _ in range(folds)]
    order = sorted(range(len(examples)), key=lambda i: (examples[i].label, examples[i].lang, examples[i].id))
    for k, i in enumerate(order):
        out[k % folds].append(i)
    return out


def macro_f1(gold: Sequence[int], pred: Sequence[int], classes: int = 3) -> float:
    """Unweighted mean of per-class F1 (a class absent from both gold and predictions counts 0)."""
    return sum(_f1([g == c for g in gold], [p == c for p in pred]) for c in range(classes)) / classes


def binary_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """F1 of "any refusal" (declined or partial) against answered."""
    return _f1([g != 0 for g in gold], [p != 0 for p in pred])


def _f1(gold: Sequence[bool], pred: Sequence[bool]) -> float:
    tp = sum(g and p for g, p in zip(gold, pred, strict=True))
    fp = sum(p and not g for g, p in zip(gold, pred, strict=True))
    fn = sum(g and not p for g, p in zip(gold, pred, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _score(gold: Sequence[int], pred: Sequence[int]) -> float:
    accuracy = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    return (accuracy + macro_f1(gold, pred) + binary_f1(gold, pred)) / 3


class _Featurized:
    """Feature-name sets of examples, computed once."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)
        self.names: list[dict[str, float]] = [features(e.answer, e.reasoning) for e in examples]
        self.labels = np.array([e.label for e in examples], dtype=np.int64)

    def with_openings(self, body: bool) -> _Featurized:
        """These examples plus the first sentence of each refusal (when it is shorter than the answer), and
        with ``body`` the rest of it."""
        out = self.subset(range(len(self.examples)))
        for example, label in zip(self.examples, self.labels.tolist(), strict=True):
            if label != 1:
                continue
            text = example.answer.strip()
            match = _SENTENCE_END.search(text, 20)
            if match is None or match.end() >= len(text) - 5:
                continue
            pieces = [text[: match.end()]]
            if body:
                pieces.append(text[match.end() :].strip())
            for piece in pieces:
                out.examples.append(replace(example, answer=piece))
                out.names.append(features(piece, example.reasoning))
        out.labels = np.array([e.label for e in out.examples], dtype=np.int64)
        return out

    def subset(self, keep: Sequence[int]) -> _Featurized:
        out = _Featurized.__new__(_Featurized)
        out.examples = [self.examples[i] for i in keep]
        out.names = [self.names[i] for i in keep]
        out.labels = self.labels[list(keep)]
        return out


def _vocabulary(data: _Featurized, min_df: int) -> list[str]:
    df: Counter[str] = Counter()
    for names in data.names:
        df.update(names)
    return sorted(n for n, c in df.items() if not _is_ngram(n) or c >= min_df)


def _is_ngram(name: str) -> bool:
    return name[:2] == "o:"


def _matrix(data: _Featurized, vocab: Sequence[str], scale: float) -> Matrix:
    index = {n: i for i, n in enumerate(vocab)}
    scales = np.array([scale if _is_ngram(n) else 1.0 for n in vocab])
    x = np.zeros((len(data.names), len(vocab)))
    for row, names in enumerate(data.names):
        cols = [index[n] for n in names if n in index]
        x[row, cols] = [names[n] for n in names if n in index]
    out: Matrix = x * scales
    return out


def _softmax(z: Matrix) -> Matrix:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Matrix = e / e.sum(axis=1, keepdims=True)
    return out


def _fit(
    x: Matrix, y: npt.NDArray[np.int64], weights: Matrix, penalty: Matrix, prior: Matrix, iterations: int = 300
) -> Matrix:
    """Multinomial logistic regression by L-BFGS, each weight penalised by its squared distance from its prior.

    Returns a (features + 1) x classes matrix, bias last.
    """
    n, d = x.shape
    k = len(LABELS)
    onehot = np.eye(k)[y]
    total = weights.sum()
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.append(penalty, 0.0)[:, None]
    center = np.vstack([prior, np.zeros((1, k))])

    def loss_grad(theta: Matrix) -> tuple[float, Matrix]:
        w = theta.reshape(d + 1, k)
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(weights * (onehot * logp).sum(axis=1)).sum() / total + 0.5 * float((penalty * (w - center) ** 2).sum())
        grad = xb.T @ ((np.exp(logp) - onehot) * weights[:, None]) / total + penalty * (w - center)
        return float(loss), grad.ravel()

    theta = center.ravel().copy()
    loss, grad = loss_grad(theta)
    history: list[tuple[Matrix, Matrix]] = []
    for _ in range(iterations):
        direction = _two_loop(grad, history)
        step = 1.0
        slope = float(grad @ direction)
        if slope >= 0:
            direction, slope, history = -grad, -float(grad @ grad), []
        while True:
            candidate = theta + step * direction
            new_loss, new_grad = loss_grad(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, g = candidate - theta, new_grad - grad
        if float(s @ g) > 1e-12:
            history.append((s, g))
            history = history[-10:]
        converged = abs(loss - new_loss) < 1e-10 * max(1.0, abs(loss))
        theta, loss, grad = candidate, new_loss, new_grad
        if converged or float(np.abs(grad).max()) < 1e-7:
            break
    out: Matrix = theta.reshape(d + 1, k)
    return out


def _two_loop(grad: Matrix, history: list[tuple[Matrix, Matrix]]) -> Matrix:
    q = grad.copy()
    alphas = []
    for s, y in reversed(history):
        rho = 1.0 / float(y @ s)
        alpha = rho * float(s @ q)
        q -= alpha * y
        alphas.append((rho, alpha, s, y))
    if history:
        s, y = history[-1]
        q *= float(s @ y) / float(y @ y)
    for rho, alpha, s, y in reversed(alphas):
        beta = rho * float(y @ q)
        q += (alpha - beta) * s
    out: Matrix = -q
    return out


@dataclass
class _Fitted:
    vocab: list[str]
    theta: Matrix
    config: Config

    def logits(self, data: _Featurized) -> Matrix:
        x = _matrix(data, self.vocab, self.config.ngram_scale)
        out: Matrix = x @ self.theta[:-1] + self.theta[-1]
        return out


def _train_once(data: _Featurized, config: Config) -> _Fitted:
    if config.augment:
        data = data.with_openings(config.augment_body)
    vocab = _vocabulary(data, config.min_df)
    x = _matrix(data, vocab, config.ngram_scale)
    counts = np.bincount(data.labels, minlength=len(LABELS)).astype(np.float64)
    balanced = len(data.labels) / (len(LABELS) * np.maximum(counts, 1.0))
    weights = balanced[data.labels] ** config.class_power
    weights = weights * np.array([config.corpus_weight if e.model == CORPUS else 1.0 for e in data.examples])
    penalty = np.array([config.l2 if _is_ngram(n) else config.l2 * config.hand_l2 for n in vocab])
    prior = np.array([PRIORS.get(n, (0.0, 0.0, 0.0)) for n in vocab], dtype=np.float64)
    return _Fitted(vocab, _fit(x, data.labels, weights, penalty, prior), config)


def _nll(logits: Matrix, labels: npt.NDArray[np.int64]) -> float:
    p = _softmax(logits)
    return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)).mean())


def _temperature(logits: Matrix, labels: npt.NDArray[np.int64]) -> float:
    grid = np.exp(np.linspace(math.log(0.25), math.log(4.0), 121))
    return float(min(grid, key=lambda t: _nll(logits / t, labels)))


def train(
    by_model: Mapping[str, Sequence[Example]],
    *,
    grid: Sequence[Config] = GRID,
    log: Any = None,
) -> dict[str, Any]:
    """Train on every example of ``by_model``; choose the hyperparameters by leave-one-model-out within it.

    Returns the weights document that ``LinearDetector`` loads (temperature folded in).
    """
    models = sorted(by_model)
    everything = _Featurized([e for m in models for e in by_model[m]])
    groups = {m: [i for i, e in enumerate(everything.examples) if e.model == m] for m in models if m != CORPUS}
    if CORPUS in by_model:
        at = [i for i, e in enumerate(everything.examples) if e.model == CORPUS]
        for k, fold in enumerate(corpus_folds([everything.examples[i] for i in at], min(4, len(at)))):
            groups[f"{CORPUS}/{k}"] = [at[i] for i in fold]
    folds = [
        (
            everything.subset([i for other, idx in groups.items() if other != g for i in idx]),
            everything.subset(groups[g]),
        )
        for g in groups
    ]
    best: tuple[float, Config] | None = None
    inner: dict[Config, tuple[Matrix, npt.NDArray[np.int64]]] = {}
    for config in grid:
        parts = [(_train_once(train_part, config).logits(held), held.labels) for train_part, held in folds]
        inner[config] = (np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        # Each inner fold is scored on its own, then averaged: held-out models differ in size and balance.
        score = sum(_score(labels.tolist(), logits.argmax(axis=1).tolist()) for logits, labels in parts) / len(parts)
        if log is not None:
            print(f"  {config} inner score={score:.4f}", file=log)
        if best is None or score > best[0] + 1e-9:
            best = (score, config)
    assert best is not None
    score, config = best
    temperature = _temperature(*inner[config])
    fitted = _train_once(everything, config)
    theta = fitted.theta / temperature
    theta -= theta.mean(axis=1, keepdims=True)
    weights: dict[str, list[float]] = {}
    for name, row in zip(fitted.vocab, theta[:-1], strict=True):
        value = row * (config.ngram_scale if _is_ngram(name) else 1.0)
        if float(np.abs(value).max()) >= 0.001:
            weights[name] = [round(float(v), 4) for v in value]
    return {
        "format": FORMAT,
        "labels": list(LABELS),
        "bias": [round(float(v), 4) for v in theta[-1]],
        "weights": weights,
        "meta": {
            "trained_on": {m: len(by_model[m]) for m in models},
            "config": asdict(config),
            "temperature": round(temperature, 4),
            "inner_score": round(score, 4),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: train on every XSTest completion file and write the weights."""
    parser = argparse.ArgumentParser(prog="python -m tarsguard.detect.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("weights.json"), help="where to write the weights"
    )
    parser.add_argument("--verbose", action="store_true", help="print every inner score")
    args = parser.parse_args(argv)
    by_model: dict[str, list[Example]] = dict(load_xstest(args.data))
    by_model[CORPUS], _ = load_tars_format(args.data)
    document = train(by_model, log=sys.stderr if args.verbose else None)
    args.out.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n")
    meta = document["meta"]
    print(
        f"wrote {args.out}: {len(document['weights'])} weights, {args.out.stat().st_size // 1024} KiB; "
        f"config {meta['config']}, temperature {meta['temperature']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
