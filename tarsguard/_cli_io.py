"""Shared pieces of the command lines: reading and writing files or stdio, failing with an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

EXIT_USAGE = 2

_stderr = Console(stderr=True, soft_wrap=True)


def fail(code: int, message: str) -> NoReturn:
    """Print ``message`` as an error on stderr and exit with ``code``."""
    _stderr.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def open_in(path: Path | None) -> Iterator[IO[str]]:
    """``path`` opened for reading, or stdin for ``None`` and ``-``."""
    if path is None or str(path) == "-":
        yield sys.stdin
        return
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read {path}: {exc.strerror}")
    with handle:
        yield handle


@contextmanager
def open_out(path: Path | None, *, newline: str | None = None) -> Iterator[IO[str]]:
    """``path`` opened for writing, or stdout for ``None`` and ``-``."""
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        handle = path.open("w", encoding="utf-8", newline=newline)
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot write {path}: {exc.strerror}")
    with handle:
        yield handle
