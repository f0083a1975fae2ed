"""Reports of one or more runs: ``report.md``, a self-contained ``report.html`` and matplotlib PNG plots.

Plots: the refusal-vs-compliance trade-off per guard, reasoning length by prompt category, and the latency
distribution. The HTML embeds them as base64 data URIs, so the one file is the whole report.
matplotlib is imported only here, on first use (``pip install 'tarsguard[eval]'``).
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError, InvalidInput
from .._version import __version__
from ._items import ItemResult
from ._metrics import summarize
from ._runner import RUN_INFO, load_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SUMMARY", "Run", "load_run", "write_report", "write_summary"]

SUMMARY = "summary.json"
_PLOTS = ("tradeoff.png", "reasoning.png", "latency.png")
_COLOURS = {"refuse": "#c0392b", "comply": "#27ae60", "unlabelled": "#7f8c8d", "mixed": "#8e44ad"}
_KIND_NAMES = {"refuse": "refuse", "comply": "answer"}
_RUN_COLOURS = ("#2c3e50", "#e67e22", "#2980b9", "#16a085", "#8e44ad", "#c0392b")


@dataclass
class Run:
    """A finished run: its folder, summary and item results."""

    folder: Path
    summary: dict[str, Any]
    results: list[ItemResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How the run is named in tables and legends."""
        given = self.summary.get("label")
        if given:
            return str(given)
        models = self.summary.get("models") or []
        return f"{self.summary.get('guard', 'guard')} ({', '.join(models)})" if models else str(self.summary["guard"])


def write_summary(folder: str | Path, results: Sequence[ItemResult], run_info: dict[str, Any]) -> dict[str, Any]:
    """Compute the summary of ``results`` and write it to ``folder/summary.json``."""
    info = {**run_info, "tarsguard_version": __version__, "summarized_at": datetime.now(UTC).isoformat()}
    summary = summarize(results, info)
    path = Path(folder) / SUMMARY
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def load_run(folder: str | Path) -> Run:
    """A run folder's summary (computed from its journal when ``summary.json`` is missing) and results."""
    path = Path(folder).expanduser()
    if path.is_file() and path.name == SUMMARY:
        path = path.parent
    if not path.is_dir():
        raise InvalidInput(f"no such run folder: {path}")
    results = load_results(path)
    summary_path = path / SUMMARY
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InvalidInput(f"{summary_path}: not valid JSON: {exc}") from None
    else:
        info_path = path / RUN_INFO
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        summary = summarize(results, info)
    if not isinstance(summary, dict) or "overall" not in summary:
        raise InvalidInput(f"{summary_path}: not a tarsguard eval summary")
    return Run(folder=path, summary=summary, results=results)


# -- formatting ------------------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


_OVERALL_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("items", lambda b: _num(b["n"])),
    ("should refuse / should answer", lambda b: f"{b['expected_refuse']} / {b['expected_comply']}"),
    ("answered", lambda b: _num(b["answered"])),
    ("declined", lambda b: _num(b["declined"])),
    ("partial", lambda b: _num(b["partial"])),
    ("undetermined", lambda b: _num(b["undetermined"])),
    ("errors", lambda b: _num(b["errors"])),
    ("refusal rate (should refuse)", lambda b: _pct(b["refusal_rate"])),
    ("compliance rate (should answer)", lambda b: _pct(b["compliance_rate"])),
    ("over-refusal rate", lambda b: _pct(b["over_refusal_rate"])),
    ("partial rate", lambda b: _pct(b["partial_rate"])),
    ("F1 of should-refuse", lambda b: _num(b["f1"], 3)),
    ("precision / recall", lambda b: f"{_num(b['precision'], 3)} / {_num(b['recall'], 3)}"),
    ("latency p50 / p95", lambda b: f"{_ms(b['latency_ms']['p50'])} / {_ms(b['latency_ms']['p95'])}"),
    (
        "reasoning tokens mean / p95",
        lambda b: f"{_num(b['reasoning_tokens']['mean'], 1)} / {_num(b['reasoning_tokens']['p95'], 0)}",
    ),
    (
        "answer tokens mean / p95",
        lambda b: f"{_num(b['answer_tokens']['mean'], 1)} / {_num(b['answer_tokens']['p95'], 0)}",
    ),
)

_CATEGORY_HEADER = (
    "category",
    "should",
    "n",
    "answered",
    "declined",
    "partial",
    "undet.",
    "errors",
    "refusal rate",
    "compliance rate",
    "reasoning tok. (mean)",
    "answer tok. (mean)",
    "latency p50",
)


def _category_row(name: str, block: dict[str, Any]) -> list[str]:
    return [
        name,
        str(block.get("expected", "")),
        _num(block["n"]),
        _num(block["answered"]),
        _num(block["declined"]),
        _num(block["partial"]),
        _num(block["undetermined"]),
        _num(block["errors"]),
        _pct(block["refusal_rate"]),
        _pct(block["compliance_rate"]),
        _num(block["reasoning_tokens"]["mean"], 1),
        _num(block["answer_tokens"]["mean"], 1),
        _ms(block["latency_ms"]["p50"]),
    ]


@dataclass
class _Table:
    title: str
    header: Sequence[str]
    rows: list[list[str]]
    note: str | None = None
    left: int = 1
    """How many leading columns hold text (left-aligned)."""


def _tables(runs: Sequence[Run]) -> list[_Table]:
    tables = [
        _Table(
            "Runs",
            ("run", "suite", "guard", "model", "items", "sampling", "data"),
            [
                [
                    run.label,
                    str(run.summary.get("suite", "–")),
                    str(run.summary.get("guard", "–")),
                    ", ".join(run.summary.get("models") or []) or "–",
                    _num(run.summary["overall"]["n"]),
                    _sampling_text(run.summary.get("sampling")),
                    str(run.summary.get("data", "–")),
                ]
                for run in runs
            ],
            left=7,
        ),
        _Table(
            "Overall",
            ("metric", *(run.label for run in runs)),
            [[name, *(render(run.summary["overall"]) for run in runs)] for name, render in _OVERALL_ROWS],
            "A refusal is a decline or a partial answer. Rates are over items with a decision; undetermined "
            "and failed items are counted apart.",
        ),
        _Table(
            "Reasoning and answer length by prompt type",
            ("run", "should", "n", "reasoning tokens mean", "p50", "p95", "answer tokens mean", "latency p50"),
            [
                [
                    run.label,
                    kind,
                    _num(block["n"]),
                    _num(block["reasoning_tokens"]["mean"], 1),
                    _num(block["reasoning_tokens"]["p50"], 0),
                    _num(block["reasoning_tokens"]["p95"], 0),
                    _num(block["answer_tokens"]["mean"], 1),
                    _ms(block["latency_ms"]["p50"]),
                ]
                for run in runs
                for kind, block in run.summary.get("by_expected", {}).items()
            ],
            left=2,
        ),
    ]
    for run in runs:
        categories = run.summary.get("by_category", {})
        ordered = sorted(categories.items(), key=lambda kv: (str(kv[1].get("expected")), kv[0]))
        tables.append(
            _Table(
                f"By category: {run.label}",
                _CATEGORY_HEADER,
                [_category_row(name, block) for name, block in ordered],
                left=2,
            )
        )
    return tables


def _sampling_text(sampling: Any) -> str:
    if not isinstance(sampling, dict) or not sampling:
        return "–"
    return ", ".join(f"{key}={value}" for key, value in sampling.items() if value is not None)


# -- plots -----------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigurationError(
            "reports need matplotlib: pip install 'tarsguard[eval]' (or --no-report to skip the report)"
        ) from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _plot_tradeoff(runs: Sequence[Run], path: Path) -> None:
    figure = _figure(6.4, 5.2)
    axes = figure.add_subplot()
    missing = []
    for index, run in enumerate(runs):
        overall = run.summary["overall"]
        x, y = overall["compliance_rate"], overall["refusal_rate"]
        if x is None or y is None:
            missing.append(run.label)
            continue
        colour = _RUN_COLOURS[index % len(_RUN_COLOURS)]
        axes.scatter([x], [y], s=90, color=colour, zorder=3, label=run.label)
        right = x > 0.6
        axes.annotate(
            f"{run.label}\n({x:.0%}, {y:.0%})",
            (x, y),
            textcoords="offset points",
            xytext=(-10 if right else 10, 8 if y < 0.5 else -14),
            ha="right" if right else "left",
            fontsize=8,
        )
    axes.scatter([1], [1], marker="*", s=160, color="#f1c40f", edgecolors="#7f6000", zorder=2, label="ideal")
    axes.set_xlim(-0.03, 1.08)
    axes.set_ylim(-0.03, 1.08)
    axes.set_xlabel("compliance rate on prompts that should be answered")
    axes.set_ylabel("refusal rate on prompts that should be refused")
    axes.set_title("Safety vs over-refusal trade-off")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    if missing:
        axes.text(
            0.02,
            0.5,
            "not plotted (suite lacks harmful or harmless prompts):\n" + "\n".join(missing),
            transform=axes.transAxes,
            fontsize=8,
            color="#7f8c8d",
        )
    figure.savefig(path, format="png")


def _plot_reasoning(runs: Sequence[Run], path: Path) -> None:
    kinds = sorted({r.expected or "unlabelled" for run in runs for r in run.results})
    categories = sorted({(r.expected or "unlabelled", r.category) for run in runs for r in run.results})
    groups = [(kind, f"ALL should {_KIND_NAMES.get(kind, kind)}") for kind in kinds] + categories
    labels = [name if name.startswith("ALL ") else f"{name} ({kind})" for kind, name in groups]
    figure = _figure(6.0 * len(runs) + 2.6, 0.32 * max(len(groups), 3) + 1.8)
    panels = figure.subplots(1, 2 * len(runs), sharey=True, squeeze=False)[0]
    for index, run in enumerate(runs):
        for axes, field_name in zip(
            panels[2 * index : 2 * index + 2], ("reasoning_tokens", "answer_tokens"), strict=True
        ):
            values: dict[tuple[str, str], list[float]] = defaultdict(list)
            for result in run.results:
                value = getattr(result, field_name)
                if result.error is None and value is not None:
                    kind = result.expected or "unlabelled"
                    values[(kind, result.category)].append(float(value))
                    values[(kind, f"ALL should {_KIND_NAMES.get(kind, kind)}")].append(float(value))
            data = [values.get(key) or [float("nan")] for key in groups]
            boxes = axes.boxplot(data, orientation="horizontal", patch_artist=True, widths=0.6, showfliers=True)
            for patch, (kind, _) in zip(boxes["boxes"], groups, strict=True):
                patch.set_facecolor(_COLOURS.get(kind, "#7f8c8d"))
                patch.set_alpha(0.55)
            axes.set_yticks(range(1, len(groups) + 1), labels, fontsize=8)
            axes.set_xlim(left=0)
            axes.set_xlabel(field_name.replace("_", " "))
            axes.set_title(f"{run.label}: {field_name.split('_')[0]}", fontsize=9)
            axes.grid(axis="x", alpha=0.3)
            if field_name == "reasoning_tokens" and not any(v for series in values.values() for v in series):
                axes.text(
                    0.5,
                    0.5,
                    "no reasoning tokens recorded\n(the model wrote no <think> block)",
                    transform=axes.transAxes,
                    ha="center",
                    fontsize=9,
                    color="#7f8c8d",
                )
    panels[0].invert_yaxis()
    figure.suptitle(
        "Reasoning and answer length by prompt category (red: should refuse, green: should answer)", fontsize=10
    )
    figure.savefig(path, format="png")


def _plot_latency(runs: Sequence[Run], path: Path) -> None:
    figure = _figure(7.0, 4.2)
    axes = figure.add_subplot()
    plotted = False
    for index, run in enumerate(runs):
        latencies = [r.latency_ms for r in run.results if r.error is None and r.latency_ms is not None]
        if not latencies:
            continue
        colour = _RUN_COLOURS[index % len(_RUN_COLOURS)]
        axes.hist(
            latencies,
            bins=min(30, max(5, len(latencies) // 2)),
            histtype="stepfilled",
            alpha=0.35,
            color=colour,
            label=run.label,
        )
        block = run.summary["overall"]["latency_ms"]
        for name, style in (("p50", "-"), ("p95", "--")):
            if block[name] is not None:
                axes.axvline(
                    block[name],
                    color=colour,
                    linestyle=style,
                    linewidth=1.2,
                    label=f"{run.label} {name} {block[name]:,.0f} ms",
                )
        plotted = True
    if not plotted:
        axes.text(0.5, 0.5, "no latencies recorded", transform=axes.transAxes, ha="center")
    axes.set_xlabel("latency per prompt (ms)")
    axes.set_ylabel("prompts")
    axes.set_title("Latency distribution")
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend(fontsize=8)
    figure.savefig(path, format="png")


# -- writing ---------------------------------------------------------------------------------------------


def write_report(
    runs: Sequence[Run], output: str | Path, *, title: str | None = None, note: str | None = None
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots of ``runs`` into ``output``; returns their paths."""
    if not runs:
        raise InvalidInput("no runs to report")
    folder = Path(output).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    title = title or runs[0].summary.get("title") or _default_title(runs)
    note = note if note is not None else runs[0].summary.get("note")
    paths = {name: folder / name for name in _PLOTS}
    _plot_tradeoff(runs, paths["tradeoff.png"])
    _plot_reasoning(runs, paths["reasoning.png"])
    _plot_latency(runs, paths["latency.png"])
    tables = _tables(runs)
    captions = {
        "tradeoff.png": "Refusal rate on harmful prompts against compliance rate on harmless ones (top right is best).",
        "reasoning.png": "Reasoning and answer tokens per prompt, by category.",
        "latency.png": "Latency per prompt, with p50 (solid) and p95 (dashed).",
    }
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    markdown = _markdown(title, note, tables, captions, generated)
    (folder / "report.md").write_text(markdown, encoding="utf-8")
    page = _html(title, note, tables, {name: paths[name].read_bytes() for name in _PLOTS}, captions, generated)
    (folder / "report.html").write_text(page, encoding="utf-8")
    return {"report.md": folder / "report.md", "report.html": folder / "report.html", **paths}


def _default_title(runs: Sequence[Run]) -> str:
    suites = sorted({str(run.summary.get("suite", "eval")) for run in runs})
    return f"tarsguard eval: {', '.join(suites)} — {', '.join(run.label for run in runs)}"


def _md_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _markdown(title: str, note: str | None, tables: list[_Table], captions: dict[str, str], generated: str) -> str:
    lines = [f"# {_md_text(title)}", ""]
    if note:
        lines += [f"> {_md_text(note)}", ""]
    lines += [f"Generated by tarsguard {__version__} on {generated}.", ""]
    for table in tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
        lines.append("|" + "|".join("---" if i < table.left else "---:" for i in range(len(table.header))) + "|")
        lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
        lines.append("")
    lines += ["## Plots", ""]
    for name, caption in captions.items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1150px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.note{background:#fff4e5;border-left:4px solid #e67e22;padding:.6rem .9rem;margin:1rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child,td.t{text-align:left}th{background:#f4f6f7}
figure{margin:1.5rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85rem;color:#555}
.meta{color:#666;font-size:.85rem}
"""


def _html(
    title: str,
    note: str | None,
    tables: list[_Table],
    images: dict[str, bytes],
    captions: dict[str, str],
    generated: str,
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    parts.append(f'<p class="meta">Generated by tarsguard {esc(__version__)} on {esc(generated)}.</p>')
    for table in tables:
        parts.append(f"<h2>{esc(table.title)}</h2>")
        if table.note:
            parts.append(f"<p>{esc(table.note)}</p>")
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header) + "</tr></thead>")
        parts.append("<tbody>")
        for row in table.rows:
            cells = (
                f'<td class="t">{esc(c)}</td>' if i < table.left else f"<td>{esc(c)}</td>" for i, c in enumerate(row)
            )
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Plots</h2>")
    for name, caption in captions.items():
        data = base64.b64encode(images[name]).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}" data-plot="{esc(name)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
