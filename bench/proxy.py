"""Latency the tarsguard proxy adds in front of an upstream, and its throughput, against calling the upstream directly.

The upstream is the scripted OpenAI-compatible server (tarsguard.testing) in its own process on 127.0.0.1,
replying with a ~60-token chat answer, in two kinds: instant (the reply as fast as the server can send it:
the proxy's cost laid bare) and chatbot-like (paced at 200 tokens/s, ~0.3 s a reply, a fast chatbot; it gets
a fifth of the requests, so both kinds take similar time). The proxy runs in its own process (uvicorn, screen
mode) with an instant scripted guard: in-process (``ScriptedBackend``: the check pipeline without network) or
the scripted server in a third process over loopback (HTTP). One client process (a pooled
``aiohttp.ClientSession``, responses read to the end) sends the same request directly to the upstream and
through the proxy, in interleaved rounds: at concurrency 1 the two targets alternate request by request; at
concurrency 32 each round runs a batch against each, in alternating order. The proxy's CPU time per request
is read from /proc during the concurrency-32 batches. Everything shares the machine's cores.

Targets (issue 6): p50 <= 2 ms and p99 <= 10 ms added at concurrency 1 and 32; throughput >= 0.9x direct.

    .venv/bin/python bench/proxy.py [--rounds 3] [--requests 150] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

MODEL = "chatbot"
ANSWER = (
    "Here are the usual ways to stop a Python process: press Ctrl-C in its terminal; from another shell find "
    "its id with pgrep and run kill with it, or kill -9 if it ignores SIGTERM; on Windows use taskkill. Prefer "
    "SIGTERM first so the program can clean up after itself."
)
GUARD_OUTPUT = "<think>\nA routine system administration question; benign.\n</think>\n\nSure, here is how."
MESSAGES = [{"role": "user", "content": "How do I kill a Python process?"}]
CHATBOT_PACE = 200.0  # tokens per second of the chatbot-like upstream: ~0.3 s a reply


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints ``ready URL``; return it and the URL."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"{args} did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def scripted_server(replies: Path, model: str, pace: float | None = None) -> tuple[subprocess.Popen[str], str]:
    args = ["-m", "tarsguard._scripted_server", "--port", "0", "--model", model, "--replies", str(replies)]
    return start(args + (["--tokens-per-second", str(pace)] if pace else []))


def serve_proxy(upstream: str, guard_url: str | None) -> None:
    """Run the proxy in this process until SIGTERM (the benchmark starts this with ``--serve-proxy``)."""
    from tarsguard import AsyncGuard
    from tarsguard.proxy import ProxyConfig, ProxyServer
    from tarsguard.testing import ScriptedBackend

    if guard_url is None:
        guard = AsyncGuard(backend=ScriptedBackend([GUARD_OUTPUT]), on_error="decline")
    else:
        guard = AsyncGuard(guard_url, model="scripted-tars", on_error="decline", max_retries=0)
    config = ProxyConfig(upstream=upstream, port=0, mode="screen")
    with ProxyServer(config, guard=guard) as server:
        print(f"ready {server.base_url}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


class Target:
    """One place to send the request: the upstream directly, or the proxy."""

    def __init__(self, name: str, base_url: str, stream: bool) -> None:
        self.name = name
        self.url = base_url + "/chat/completions"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self.body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 256, "stream": stream}).encode()
        self.headers = {"content-type": "application/json"}
        self.stream = stream

    async def call(self) -> int:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
            if response.status != 200:
                raise RuntimeError(f"{self.name}: unexpected status {response.status}: {await response.text()}")
            if not self.stream:
                body = await response.read()
                if ANSWER[:40].encode() not in body:
                    raise RuntimeError(f"{self.name}: unexpected response {body[:200]!r}")
                return len(body)
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
            return size

    async def close(self) -> None:
        await self.session.close()


async def batch(call: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> tuple[list[float], float]:
    """``requests`` calls with ``concurrency`` in flight: each call's latency, and the requests per second."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    upstream: str, proxy: str, proxy_pid: int, stream: bool, rounds: int, requests: int
) -> dict[str, Any]:
    targets = [Target("direct", upstream, stream), Target("proxy", proxy, stream)]
    for target in targets:
        await batch(target.call, 200, 32)  # warm the pools and both servers
    c1: dict[str, list[float]] = {t.name: [] for t in targets}
    c32: dict[str, list[float]] = {t.name: [] for t in targets}
    rps: dict[str, list[float]] = {t.name: [] for t in targets}
    proxy_cpu = 0.0
    for round_ in range(rounds):
        for i in range(requests):
            for target in targets[i % 2 :] + targets[: i % 2]:
                started = time.perf_counter()
                await target.call()
                c1[target.name].append(time.perf_counter() - started)
        for target in targets[round_ % 2 :] + targets[: round_ % 2]:
            cpu = cpu_seconds(proxy_pid)
            latencies, throughput = await batch(target.call, requests * 4, 32)
            if target.name == "proxy":
                proxy_cpu += cpu_seconds(proxy_pid) - cpu
            c32[target.name] += latencies
            rps[target.name].append(throughput)
    for target in targets:
        await target.close()
    result: dict[str, Any] = {
        name: {
            "c1_p50": statistics.median(c1[name]) * 1000,
            "c1_p99": percentile(c1[name], 0.99) * 1000,
            "c32_p50": statistics.median(c32[name]) * 1000,
            "c32_p99": percentile(c32[name], 0.99) * 1000,
            "rps": statistics.median(rps[name]),
        }
        for name in c1
    }
    result["proxy_cpu_ms"] = proxy_cpu / (rounds * requests * 4) * 1000
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| upstream | guard | response | c=1 p50 added | c=1 p99 added | c=32 p50 added | c=32 p99 added "
        "| c=32 direct / proxy | ratio | proxy CPU per request |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        d, p = r["direct"], r["proxy"]
        lines.append(
            f"| {label} | {p['c1_p50'] - d['c1_p50']:+.2f} ms | {p['c1_p99'] - d['c1_p99']:+.2f} ms "
            f"| {p['c32_p50'] - d['c32_p50']:+.2f} ms | {p['c32_p99'] - d['c32_p99']:+.2f} ms "
            f"| {d['rps']:.0f} / {p['rps']:.0f} req/s | {p['rps'] / d['rps']:.2f}x | {r['proxy_cpu_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150, help="per round and target at c=1; 4x that at c=32")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--serve-proxy", nargs="+", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        serve_proxy(args.serve_proxy[0], args.serve_proxy[1] if len(args.serve_proxy) > 1 else None)
        return
    results: dict[str, dict[str, Any]] = {}
    processes: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            upstream_replies = Path(tmp) / "upstream.jsonl"
            upstream_replies.write_text(json.dumps({"content": ANSWER}) + "\n")
            guard_replies = Path(tmp) / "guard.jsonl"
            guard_replies.write_text(json.dumps({"content": GUARD_OUTPUT}) + "\n")
            guard_proc, guard_url = scripted_server(guard_replies, "scripted-tars")
            processes.append(guard_proc)
            for upstream_label, pace in (("instant", None), (f"chatbot-like ({CHATBOT_PACE:.0f} tok/s)", CHATBOT_PACE)):
                upstream_proc, upstream = scripted_server(upstream_replies, MODEL, pace)
                processes.append(upstream_proc)
                for guard_label, guard in (("in-process", None), ("HTTP", guard_url)):
                    proxy_proc, proxy = start([__file__, "--serve-proxy", upstream, *([guard] if guard else [])])
                    processes.append(proxy_proc)
                    requests = args.requests if pace is None else max(20, args.requests // 5)
                    for stream in (False, True):
                        label = f"{upstream_label} | {guard_label} | {'streamed' if stream else 'whole'}"
                        results[label] = asyncio.run(
                            measure(upstream, proxy, proxy_proc.pid, stream, args.rounds, requests)
                        )
                    proxy_proc.terminate()
                    proxy_proc.wait(10)
                upstream_proc.terminate()
                upstream_proc.wait(10)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    print(
        f"scripted upstream, scripted guard and proxy in separate processes on loopback ({os.cpu_count()} CPUs), "
        f"{args.rounds} interleaved rounds; added = proxy minus direct"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
