"""Benchmark guards on safety and over-refusal suites: loaders, guard adapters, a resumable runner, metrics,
reports with plots, and run comparison.

    from tarsguard.eval import build_guard, load_suite, run_eval, sample

Names load on first use; matplotlib only when a report is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._compare import Change, Comparison, Thresholds, compare_runs
    from ._guards import (
        ENTRY_POINT_GROUP,
        LLAMA_GUARD_3_CATEGORIES,
        AdapterGuard,
        ChatModelAdapter,
        EvalGuard,
        GuardAdapter,
        Judgement,
        LlamaGuard3Adapter,
        Outcome,
        TarsEvalGuard,
        available_guards,
        build_guard,
        resolve_adapter,
    )
    from ._items import EvalItem, Expected, ItemError, ItemResult
    from ._loaders import SUITES, load_file, load_suite, sample
    from ._metrics import block_metrics, percentile, summarize
    from ._report import Run, load_run, write_report, write_summary
    from ._runner import RateLimiter, RunResult, load_results, read_journal, run_eval

_SOURCES = {
    "._compare": ("Change", "Comparison", "Thresholds", "compare_runs"),
    "._guards": (
        "ENTRY_POINT_GROUP",
        "LLAMA_GUARD_3_CATEGORIES",
        "AdapterGuard",
        "ChatModelAdapter",
        "EvalGuard",
        "GuardAdapter",
        "Judgement",
        "LlamaGuard3Adapter",
        "Outcome",
        "TarsEvalGuard",
        "available_guards",
        "build_guard",
        "resolve_adapter",
    ),
    "._items": ("EvalItem", "Expected", "ItemError", "ItemResult"),
    "._loaders": ("SUITES", "load_file", "load_suite", "sample"),
    "._metrics": ("block_metrics", "percentile", "summarize"),
    "._report": ("Run", "load_run", "write_report", "write_summary"),
    "._runner": ("RateLimiter", "RunResult", "load_results", "read_journal", "run_eval"),
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "LLAMA_GUARD_3_CATEGORIES",
    "SUITES",
    "AdapterGuard",
    "Change",
    "ChatModelAdapter",
    "Comparison",
    "EvalGuard",
    "EvalItem",
    "Expected",
    "GuardAdapter",
    "ItemError",
    "ItemResult",
    "Judgement",
    "LlamaGuard3Adapter",
    "Outcome",
    "RateLimiter",
    "Run",
    "RunResult",
    "TarsEvalGuard",
    "Thresholds",
    "available_guards",
    "block_metrics",
    "build_guard",
    "compare_runs",
    "load_file",
    "load_results",
    "load_run",
    "load_suite",
    "percentile",
    "read_journal",
    "resolve_adapter",
    "run_eval",
    "sample",
    "summarize",
    "write_report",
    "write_summary",
]

__getattr__ = lazy_getattr(__name__, {name: module for module, names in _SOURCES.items() for name in names})


def __dir__() -> list[str]:
    return __all__
