"""``tarsguard serve`` for real: start vLLM on the SmolLM2 stand-in, check a prompt through it, stop it with Ctrl-C.

The stand-in is a tiny general chat model, not a safety model: nothing here is about which decision it makes.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tarsguard import Guard, Verdict
from tests.realserver.conftest import LOG_DIR, MAX_MODEL_LEN
from tests.support.fixtures import require_vllm
from tests.support.standin import DEFAULT_DEST, SERVED_NAME, build_standin
from tests.support.vllm_server import free_port, log_tail, server_env

STARTUP_SECONDS = 300.0
READY = re.compile(r"at (http://127\.0\.0\.1:\d+/v1)")


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (everything ``tarsguard serve`` started)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state != "Z":
            found.append(int(entry.name))
    return found


def read_until_ready(proc: subprocess.Popen[str], log_path: Path) -> tuple[str, str]:
    """Read ``tarsguard serve``'s stdout until the ready line; return the base URL and all stdout so far."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not readable:
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        match = READY.search(line)
        if match:
            return match.group(1), seen
    raise AssertionError(f"tarsguard serve never printed its URL; stdout:\n{seen}\nlog:\n{log_tail(log_path)}")


def test_serve_starts_vllm_answers_a_check_and_stops_cleanly_on_ctrl_c() -> None:
    require_vllm()
    model_dir = build_standin(DEFAULT_DEST)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"tarsguard-serve-{os.getpid()}.log"
    marker = f"TARSGUARD_SERVE_TEST={uuid.uuid4().hex}"
    env = server_env()
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # the KV cache size comes from --kv-cache-gib instead
    name, value = marker.split("=")
    env[name] = value
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tarsguard",
        "serve",
        str(model_dir),
        "--served-model-name",
        SERVED_NAME,
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--kv-cache-gib",
        "1",
        "--log-file",
        str(log_path),
        "--",
        "--max-num-seqs",
        "8",
    ]
    err_path = LOG_DIR / f"tarsguard-serve-{os.getpid()}.stderr"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
    try:
        base_url, stdout = read_until_ready(proc, log_path)
        assert base_url == f"http://127.0.0.1:{port}/v1"
        assert len(processes_with(marker)) >= 2  # tarsguard serve, the API server and its engine process

        with Guard(base_url=base_url) as guard:
            verdict = guard.check("How do I boil an egg?", max_tokens=48, temperature=0.0)
            health = guard.health()
        assert isinstance(verdict, Verdict)
        assert verdict.trace.model == SERVED_NAME and verdict.trace.endpoint == base_url
        assert verdict.trace.error is None and verdict.trace.usage.completion_tokens
        assert health.ok and health.models == (SERVED_NAME,)

        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal does to tarsguard serve
        proc.wait(timeout=90)
        assert proc.stdout is not None
        stdout += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_path.read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{err}\nlog:\n{log_tail(log_path)}"
    assert f'Guard(base_url="{base_url}")' in stdout
    assert f"TARSGUARD_BASE_URL={base_url}" in stdout
    assert "stopping the vLLM server (SIGINT" in err
    assert "vllm.entrypoints.openai.api_server" in err  # the fallback: vllm-cpu's console script cannot run
    leftovers = processes_with(marker)
    assert leftovers == [], f"processes left behind: {leftovers}"


def test_serve_reports_a_server_that_dies_while_starting(tmp_path: Path) -> None:
    require_vllm()
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    env = server_env()
    result = subprocess.run(
        [sys.executable, "-m", "tarsguard", "serve", str(not_a_model), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=STARTUP_SECONDS,
    )
    assert result.returncode == 6, result.stderr[-3000:]
    assert "exited with code" in result.stderr and "before it was ready" in result.stderr
    assert result.stdout == ""
