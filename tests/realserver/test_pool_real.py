"""One guard over two real vLLM replicas serving the SmolLM2 stand-in; one replica is killed mid-run.

The stand-in is a tiny general chat model, not a safety model: nothing here is about which decision it makes,
only that every check gets a verdict from a replica that is still alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest

from tarsguard import AsyncGuard, TarsGuardError, Verdict
from tarsguard.backends import EndpointPool
from tests.realserver.conftest import LOG_DIR, MAX_MODEL_LEN
from tests.support.fixtures import require_vllm
from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin
from tests.support.vllm_server import vllm_server

CHECKS = 24
PROMPTS = [
    "How do I boil an egg?",
    "What is the capital of France?",
    "Give me three tips for a job interview.",
    "How do I kill a Python process?",
]


async def test_a_replica_killed_mid_run_loses_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    require_vllm()
    model_dir = build_standin(DEFAULT_DEST)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB each: two servers share this machine
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as servers:
        urls = [
            servers.enter_context(
                vllm_server(
                    model_dir,
                    served_name=SERVED_NAME,
                    max_model_len=MAX_MODEL_LEN,
                    log_path=LOG_DIR / f"vllm-replica-{n}-{os.getpid()}.log",
                    on_start=processes.append,
                )
            )
            for n in (1, 2)
        ]
        survivor, victim = urls
        killed_with: list[int] = []

        async with AsyncGuard(base_url=urls, max_tokens=48, timeout=240) as guard:
            pool = guard.backend
            assert isinstance(pool, EndpointPool)

            def on_result(index: int, result: Verdict | TarsGuardError) -> None:
                in_flight = pool.status()[1].in_flight
                if not killed_with and in_flight >= 2:
                    os.killpg(processes[1].pid, signal.SIGKILL)  # the API server and its engine, at once
                    killed_with.append(in_flight)

            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(CHECKS)]
            results = await guard.check_many(prompts, concurrency=8, on_result=on_result)
            after = await guard.check("One more, please: how do I make tea?")
            health = await guard.health()

    assert killed_with, "the victim never had two checks in flight"
    failed = [r for r in results if not isinstance(r, Verdict)]
    assert not failed, f"checks lost: {failed}"
    verdicts = [r for r in results if isinstance(r, Verdict)]
    assert len(verdicts) == CHECKS
    assert all(v.trace.error is None and v.trace.model == SERVED_NAME for v in verdicts)
    assert all(v.trace.endpoint in (survivor, victim) for v in verdicts)
    restarted = [v for v in verdicts if v.trace.retries > 0]
    assert len(restarted) >= killed_with[0]  # every check in flight on the victim was run again elsewhere
    assert all(v.trace.endpoint == survivor for v in restarted)
    assert all(v.trace.usage.completion_tokens for v in verdicts)
    assert after.trace.endpoint == survivor and after.trace.retries == 0
    assert health.ok and health.detail is not None and health.detail.startswith("1 of 2 endpoints healthy")
    assert [status.up for status in pool.status()] == [True, False]
