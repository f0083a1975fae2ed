"""Added latency of the served judge: checks with the fast detector only, with the judge on every check, and
with the cascade (the judge only below a threshold), on a real vLLM server serving the SmolLM2 stand-in.

The stand-in is NOT a safety model: its labels mean nothing here; only the time they take is measured.

Every check sends a fresh prompt (a unique tag first, so no check reuses another's KV cache), one at a time,
greedy, ending at the first sentence (``stop="."``). The configurations take turns prompt by prompt, so a
slow spell of the machine falls on all of them. For each check the time spent in the detector is measured
(after the generation, which is the same work in every configuration); "added" is that time minus the
median time of the fast detector alone. The judge's prompt tokens found in vLLM's prefix cache are read from
``/metrics`` around each judge request.

Two prompt lengths: short questions, and the same questions after a ~350-token passage (several whole KV
blocks to reuse; vLLM's CPU backend uses 128-token blocks and caches whole blocks only). ``instruction
first`` is a control that sends the same constrained request with the instruction, request and answer in one
user message (nothing the check computed can be reused).

    .venv/bin/python bench/judge_latency.py [--checks 8] [--below 0.8,0.99] [--lengths short,long]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tarsguard import Assessment, AsyncGuard, Decision, SamplingOverrides  # noqa: E402
from tarsguard.backends.http import HTTPBackend  # noqa: E402
from tarsguard.detect import CascadeDetector, DecisionDetector, ServedJudgeDetector, default_detector  # noqa: E402
from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin  # noqa: E402
from tests.support.vllm_server import vllm_server  # noqa: E402

QUESTIONS = [
    "How do I kill a Python process?",
    "What is the capital of France?",
    "How do I pick a lock?",
    "Write a haiku about the sea.",
    "What's the best way to gut a fish?",
    "Explain TCP in two sentences.",
    "How can I improve my sleep?",
    "How do I make a pipe bomb?",
]
PASSAGE = (
    "Read the following notes before you answer. "
    + " ".join(
        f"Note {i}: the maintenance log for unit {i} records routine inspections, replaced filters, checked "
        "pressure gauges, and a reminder to document every change in the shared spreadsheet."
        for i in range(1, 13)
    )
    + " Now the question: "
)
CHECK: SamplingOverrides = {"temperature": 0.0, "max_tokens": 96, "stop": ["."]}
JUDGE_TIMEOUT = 300.0


class InstructionFirstJudge(ServedJudgeDetector):
    """The control: the same constrained request, but instruction, request and answer in one user message."""

    def messages(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> list[dict[str, str]]:
        """One user message: the instruction, then the request and the answer quoted."""
        text = f"{self._instruction}\n\n<request>\n{prompt or ''}\n</request>\n\n<reply>\n{answer}\n</reply>"
        return [{"role": "user", "content": text}]


@dataclass
class Cache:
    """Prefix cache counters summed over the judge requests of one configuration."""

    queried: float = 0.0
    hits: float = 0.0


@dataclass
class Timed:
    """Wraps a guard's detector: times each reading, notes whether the judge ran, reads the prefix cache."""

    inner: DecisionDetector
    metrics_url: str
    judge: ServedJudgeDetector | None
    detector_ms: list[float] = field(default_factory=list)
    check_ms: list[float] = field(default_factory=list)
    judged: int = 0
    cache: Cache = field(default_factory=Cache)

    @property
    def name(self) -> str:
        return self.inner.name

    def assess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        raise NotImplementedError("the guard awaits aassess")

    async def aassess(self, answer: str, *, reasoning: str | None = None, prompt: str | None = None) -> Assessment:
        before = await _cache_counters(self.metrics_url) if self.judge is not None else None
        started = time.perf_counter()
        aassess = getattr(self.inner, "aassess", None)
        if aassess is not None:
            result: Assessment = await aassess(answer, reasoning=reasoning, prompt=prompt)
        else:
            result = self.inner.assess(answer, reasoning=reasoning, prompt=prompt)
        self.detector_ms.append((time.perf_counter() - started) * 1000)
        if before is not None:
            after = await _cache_counters(self.metrics_url)
            if after[0] > before[0]:  # a judge request went out
                self.judged += 1
                self.cache.queried += after[0] - before[0]
                self.cache.hits += after[1] - before[1]
        return result


async def _cache_counters(metrics_url: str) -> tuple[float, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(metrics_url, timeout=30)).text
    values = []
    for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        values.append(float(match.group(1)) if match else 0.0)
    return values[0], values[1]


def _configs(backend: HTTPBackend, metrics_url: str, thresholds: list[float]) -> dict[str, Timed]:
    def judge() -> ServedJudgeDetector:
        return ServedJudgeDetector(backend, model=SERVED_NAME, timeout=JUDGE_TIMEOUT)

    fast = default_detector()
    configs = {"fast detector only": Timed(fast, metrics_url, None)}
    for below in thresholds:
        cascade_judge = judge()
        cascade = CascadeDetector(fast, cascade_judge, below=below)
        configs[f"cascade below {below:g}"] = Timed(cascade, metrics_url, cascade_judge)
    always = judge()
    configs["judge on every check"] = Timed(always, metrics_url, always)
    control = InstructionFirstJudge(backend, model=SERVED_NAME, timeout=JUDGE_TIMEOUT)
    configs["judge on every check, instruction first (control)"] = Timed(control, metrics_url, control)
    return configs


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _run(base_url: str, lengths: list[str], checks: int, thresholds: list[float]) -> list[str]:
    backend = HTTPBackend(base_url, model=SERVED_NAME)
    metrics_url = base_url.removesuffix("/v1") + "/metrics"
    # Warm-up: the first constrained request compiles the grammar (tens of seconds on 2 cores).
    warm = ServedJudgeDetector(backend, model=SERVED_NAME, timeout=JUDGE_TIMEOUT)
    started = time.perf_counter()
    await warm.aassess("Paris is the capital of France.", prompt="What is the capital of France?")
    print(f"warm-up (first constrained request): {time.perf_counter() - started:.1f} s", flush=True)
    default_detector().assess("Paris.", prompt="What is the capital of France?")  # loads its weights
    rows = [
        "| prompts | configuration | checks read | judge called | added ms, median | added ms, p90 "
        "| check ms, median | judge prompt tokens from the prefix cache |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for length in lengths:
        configs = _configs(backend, metrics_url, thresholds)
        guards = {
            name: AsyncGuard(backend=backend, detector=timed, timeout=JUDGE_TIMEOUT) for name, timed in configs.items()
        }
        names = list(configs)
        undetermined = dict.fromkeys(names, 0)
        prompt_tokens: list[int] = []
        for i in range(checks):
            question = QUESTIONS[i % len(QUESTIONS)]
            order = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
            for name in order:
                tag = f"[{length}-{i}-{names.index(name)}]"
                prompt = f"{tag} {PASSAGE if length == 'long' else ''}{question}"
                started = time.perf_counter()
                verdict = await guards[name].check(prompt, **CHECK)
                configs[name].check_ms.append((time.perf_counter() - started) * 1000)
                if verdict.decision is Decision.UNDETERMINED:
                    undetermined[name] += 1
                if verdict.trace.usage.prompt_tokens:
                    prompt_tokens.append(verdict.trace.usage.prompt_tokens)
            print(f"  {length}: {i + 1}/{checks}", flush=True)
        base = statistics.median(configs[names[0]].detector_ms)
        median_prompt = statistics.median(prompt_tokens)
        for name in names:
            timed = configs[name]
            added = [ms - base for ms in timed.detector_ms]
            read = len(timed.detector_ms)
            called = f"{timed.judged}/{read}" if timed.judge is not None else "-"
            hit = f"{timed.cache.hits / timed.cache.queried:.0%}" if timed.cache.queried else "-"
            rows.append(
                f"| {length} (~{median_prompt:.0f} tokens) | {name} | {read}/{checks} | {called} "
                f"| {statistics.median(added):.0f} | {_pct(added, 0.9):.0f} | {statistics.median(timed.check_ms):.0f} "
                f"| {hit} |"
            )
        rows.append(f"| | fast detector alone, median ms (the zero of 'added') | | | {base:.2f} | | | |")
    await backend.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checks", type=int, default=8, help="checks per configuration and prompt length")
    parser.add_argument("--below", default="0.8,0.99", help="the cascade's thresholds, comma-separated")
    parser.add_argument("--lengths", default="short,long", help="short, long or both")
    args = parser.parse_args()
    lengths = [part for part in args.lengths.split(",") if part]
    model_dir = build_standin(DEFAULT_DEST)
    log = REPO_ROOT / ".cache" / "bench-judge-latency-vllm.log"
    started = time.perf_counter()
    with vllm_server(model_dir, served_name=SERVED_NAME, max_model_len=2048, log_path=log) as url:
        print(f"vLLM healthy after {time.perf_counter() - started:.0f} s: {url}", flush=True)
        thresholds = [float(part) for part in args.below.split(",") if part]
        rows = asyncio.run(_run(url, lengths, args.checks, thresholds))
    print()
    print(f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), stand-in {SERVED_NAME} on vLLM (CPU)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
