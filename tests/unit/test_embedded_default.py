"""The embedded default: which in-process backend and model a guard with no server gets, and its errors.

Availability (CUDA, vLLM, transformers) is monkeypatched; nothing here loads a model or imports torch.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tarsguard import AsyncGuard, BackendUnavailable, ConfigurationError, Guard
from tarsguard.backends import _embedded
from tarsguard.backends._embedded import CPU_MODEL, CUDA_MODEL, choose_embedded, load_error, model_source
from tarsguard.backends.transformers import TransformersBackend
from tarsguard.backends.vllm_engine import VLLMEngineBackend


def _machine(monkeypatch: pytest.MonkeyPatch, *, cuda: bool, vllm: bool, transformers: bool = True) -> None:
    monkeypatch.setattr(_embedded, "cuda_available", lambda: cuda)
    monkeypatch.setattr(_embedded, "vllm_importable", lambda: vllm)
    monkeypatch.setattr(_embedded, "transformers_importable", lambda: transformers)


@pytest.mark.parametrize(
    ("cuda", "vllm", "kind", "model"),
    [
        (True, True, "vllm", CUDA_MODEL),
        (True, False, "transformers", CUDA_MODEL),
        (False, True, "transformers", CPU_MODEL),
        (False, False, "transformers", CPU_MODEL),
    ],
)
def test_choice_follows_cuda_and_vllm(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, vllm: bool, kind: str, model: str
) -> None:
    _machine(monkeypatch, cuda=cuda, vllm=vllm)
    choice = choose_embedded()
    assert (choice.kind, choice.model) == (kind, model)
    assert choice.reason


def test_defaults_are_the_tars_models() -> None:
    assert CUDA_MODEL == "CMU-AIRe/TARS-7B"
    assert CPU_MODEL == "CMU-AIRe/TARS-1.5B"


def test_model_argument_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=False, vllm=False)
    monkeypatch.setenv("TARSGUARD_MODEL", "org/from-env")
    assert choose_embedded().model == "org/from-env"
    assert choose_embedded("org/from-arg").model == "org/from-arg"
    monkeypatch.setenv("TARSGUARD_MODEL", "")
    assert choose_embedded().model == CPU_MODEL


def test_guard_without_server_runs_transformers_in_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _machine(monkeypatch, cuda=False, vllm=True)
    with caplog.at_level(logging.INFO, logger="tarsguard"), Guard() as guard:
        backend = guard.backend
        assert isinstance(backend, TransformersBackend)
        assert backend.kind == "transformers"
        assert backend.model == CPU_MODEL
        assert CPU_MODEL in backend.endpoint
        assert not backend.loaded  # lazy: nothing loads before the first check
    logged = caplog.text
    assert CPU_MODEL in logged and "transformers" in logged and "in-process" in logged


def test_guard_without_server_on_cuda_with_vllm_runs_the_vllm_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=True, vllm=True)
    guard = AsyncGuard()
    assert isinstance(guard.backend, VLLMEngineBackend)
    assert guard.backend.kind == "vllm"
    assert guard.backend.model == CUDA_MODEL
    assert guard.backend.engine is None  # the engine starts on the first check


def test_guard_model_and_env_pick_the_embedded_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _machine(monkeypatch, cuda=False, vllm=False)
    with Guard(model="org/some-model") as guard:
        assert isinstance(guard.backend, TransformersBackend) and guard.backend.model == "org/some-model"
    monkeypatch.setenv("TARSGUARD_MODEL", str(tmp_path))
    with Guard() as guard:
        assert isinstance(guard.backend, TransformersBackend)
        assert guard.backend.model == tmp_path.name
        assert str(tmp_path) in guard.backend.endpoint


def test_base_url_env_still_means_http(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=True, vllm=True)
    monkeypatch.setenv("TARSGUARD_BASE_URL", "http://127.0.0.1:9/v1")
    with Guard() as guard:
        assert guard.backend.kind == "http"


def test_nothing_to_run_in_process_is_a_helpful_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=False, vllm=False, transformers=False)
    with pytest.raises(ConfigurationError) as info:
        Guard()
    message = str(info.value)
    for part in ("base_url", "TARSGUARD_BASE_URL", "backend=", "tarsguard[transformers]"):
        assert part in message
    with pytest.raises(ConfigurationError):
        AsyncGuard()


def test_model_source_reads_folders_gguf_files_and_hub_ids(tmp_path: Path) -> None:
    folder = model_source(tmp_path)
    assert folder.local and folder.location == str(tmp_path.resolve()) and folder.gguf_file is None
    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    from_file = model_source(gguf)
    assert from_file.local and from_file.location == str(tmp_path.resolve()) and from_file.gguf_file == gguf.name
    assert from_file.name == gguf.name
    hub = model_source("CMU-AIRe/TARS-1.5B")
    assert not hub.local and hub.location == "CMU-AIRe/TARS-1.5B" and hub.name == "CMU-AIRe/TARS-1.5B"


@pytest.mark.parametrize("bad", ["./no/such/folder", "/no/such/weights", "~/missing.gguf", "x/y/z", ""])
def test_missing_local_paths_fail_at_construction(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        TransformersBackend(bad)
    with pytest.raises(ConfigurationError):
        VLLMEngineBackend(bad)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigurationError, match=r"not a \.gguf file"):
        TransformersBackend(weights)


def test_hub_failure_says_how_to_point_at_local_weights() -> None:
    error = load_error(model_source("CMU-AIRe/TARS-1.5B"), OSError("We couldn't connect to the Hub\nmore"), backend="x")
    assert isinstance(error, BackendUnavailable)
    message = str(error)
    assert "CMU-AIRe/TARS-1.5B" in message and "We couldn't connect to the Hub" in message and "more" not in message
    assert "hf download CMU-AIRe/TARS-1.5B --local-dir ./TARS-1.5B" in message
    assert "TARSGUARD_MODEL=./TARS-1.5B" in message and "base_url=" in message


def test_broken_local_weights_are_a_configuration_error(tmp_path: Path) -> None:
    error = load_error(model_source(tmp_path), OSError("no config.json"), backend="transformers")
    assert isinstance(error, ConfigurationError)
    assert str(tmp_path.resolve()) in str(error) and "no config.json" in str(error)
    assert "TARSGUARD_MODEL" in str(error)


def test_backend_options_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        TransformersBackend("org/model", max_batch_size=0)
    with pytest.raises(ConfigurationError):
        TransformersBackend("org/model", batch_window=-1)


def test_in_process_backends_do_not_import_heavy_packages() -> None:
    code = (
        "import sys, tarsguard, tarsguard.backends as b\n"
        "b.TransformersBackend('org/model'); b.VLLMEngineBackend('org/model')\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
