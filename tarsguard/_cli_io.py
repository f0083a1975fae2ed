"""Shared pieces of the command lines: reading and writing files or stdio, failing with an exit code."""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

EXIT_USAGE = 2
EXIT_OUTPUT = 9
"""The output could not be written (a full disk, a closed pipe, a file that cannot be created)."""

_stderr = Console(stderr=True, soft_wrap=True)


class OutputFailed(Exception):
    """Writing the command's output failed; ``open_out`` turns it into ``EXIT_OUTPUT``."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


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
def input_lines(path: Path | None) -> Iterator[Iterator[tuple[int, str | None]]]:
    """The lines of ``path`` (stdin for ``None`` and ``-``) as ``(number, text)``, numbered from 1.

    ``text`` is ``None`` for a line that is not valid UTF-8, so that one bad line costs only itself.
    """
    if path is None or str(path) == "-":
        stdin = sys.stdin
        raw = getattr(stdin, "buffer", None) or (line.encode("utf-8", "surrogateescape") for line in stdin)
        yield _numbered(raw)
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read {path}: {exc.strerror}")
    with handle:
        yield _numbered(handle)


def _numbered(lines: Any) -> Iterator[tuple[int, str | None]]:
    for number, raw in enumerate(lines, 1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line; text that UTF-8 cannot hold (a lone surrogate) is written as a JSON escape."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True)
    return text + "\n"


def write(out: IO[str], text: str) -> None:
    """Write ``text`` to ``out``; a failure raises ``OutputFailed``."""
    try:
        out.write(text)
    except OSError as exc:
        raise OutputFailed(exc) from exc


class _Output(io.TextIOWrapper):
    """A text file whose failed writes and flushes raise ``OutputFailed``, not an ``OSError`` a caller might take
    for a failure to read its input."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as exc:
            raise OutputFailed(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise OutputFailed(exc) from exc

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:
            raise OutputFailed(exc) from exc


@contextmanager
def open_out(path: Path | None, *, newline: str | None = None) -> Iterator[IO[str]]:
    """``path`` opened for writing, or stdout for ``None`` and ``-``.

    A write, flush or close that fails (a full disk, a closed pipe) exits with ``EXIT_OUTPUT`` and a one-line
    message; on stdout, writes made through ``write`` do.
    """
    if path is None or str(path) == "-":
        try:
            yield sys.stdout
            sys.stdout.flush()
        except (BrokenPipeError, OutputFailed) as exc:
            _stdout_gone()
            fail(EXIT_OUTPUT, f"cannot write the output: {_reason(exc)}")
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EPIPE, errno.EIO):
                raise
            _stdout_gone()
            fail(EXIT_OUTPUT, f"cannot write the output: {_reason(exc)}")
        return
    try:
        handle = _Output(path.open("wb"), encoding="utf-8", newline=newline)
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot write {path}: {exc.strerror}")
    try:
        try:
            yield handle
        except BaseException:
            # What the handle still buffers may be what could not be written: closing could only fail again.
            with suppress(OSError, OutputFailed):
                handle.close()
            raise
        handle.close()
    except OutputFailed as exc:
        fail(EXIT_OUTPUT, f"cannot write {path}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    error = exc.error if isinstance(exc, OutputFailed) else exc
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def _stdout_gone() -> None:
    """Point stdout at the null device, so that the interpreter's last flush of a closed pipe stays quiet."""
    with suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
