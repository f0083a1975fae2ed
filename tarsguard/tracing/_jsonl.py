"""The JSONL trace sink (append-only, one line per verdict, rotated by size) and its tolerant reader."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ._record import TraceRecord
from ._sink import SinkStatus

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "JsonlFollower",
    "JsonlSink",
    "ReadProblem",
    "iter_jsonl",
    "jsonl_files",
    "parse_line",
]

DEFAULT_MAX_BYTES = 100 * 2**20
DEFAULT_BACKUPS = 10
_RECORD_START = b'{"decision":'
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20

_live_sinks: weakref.WeakSet[JsonlSink] = weakref.WeakSet()


class JsonlSink:
    """Appends one JSON line per record to ``path``, created owner-only (0600).

    Each line (each batch of lines, from ``write_many``) goes out in a single ``O_APPEND`` write, so lines from many
    threads and processes never interleave, and a line is in the file (the OS page cache) as soon as ``write``
    returns: a crashed process loses nothing it wrote. When the file reaches ``max_bytes`` it is renamed ``path.1``
    (older ones shift up to ``path.<backups>``, the oldest is deleted) and a new file starts; processes coordinate
    the rename through ``path.lock``. Each process looks at the file's size after every 1/64 of ``max_bytes`` (at
    most 256 KiB) it has written, so a file ends up to that much per writing process past ``max_bytes``.
    ``max_bytes=None`` never rotates.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1 or None")
        if backups < 1:
            raise ValueError("backups must be >= 1")
        self.path = Path(path).expanduser()
        self.name = f"jsonl:{self.path}"
        self.status = SinkStatus(self.name)
        self._size_checks = None if max_bytes is None else (max_bytes, max(1, min(max_bytes // 64, 256 * 1024)))
        """``(max_bytes, bytes written between looks at the file's size)``, when rotating."""
        self._unchecked = 0
        """Bytes this process has written since it last looked at the file's size."""
        self._backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        _live_sinks.add(self)

    def write(self, record: TraceRecord) -> None:
        """Append ``record`` as one line; raises ``OSError`` if the file cannot be opened or written."""
        self._append(record.__pydantic_serializer__.to_json(record) + b"\n", 1)

    def write_many(self, records: Sequence[TraceRecord]) -> None:
        """Append ``records``, a line each, in one write; raises ``OSError`` if the file cannot be opened or written."""
        if records:
            lines = [record.__pydantic_serializer__.to_json(record) for record in records]
            lines.append(b"")
            self._append(b"\n".join(lines), len(records))

    def _append(self, line: bytes, count: int) -> None:
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.name} is closed")
            fd = self._fd if self._fd is not None else self._open()
            try:
                written = os.write(fd, line)
                while written < len(line):  # only on a failing disk; the reader repairs a torn line
                    written += os.write(fd, line[written:])
                if self._size_checks is not None:
                    max_bytes, every = self._size_checks
                    self._unchecked += len(line)
                    if self._unchecked >= every:
                        self._unchecked = 0
                        if os.fstat(fd).st_size >= max_bytes:
                            self._rotate(fd, max_bytes)
            except OSError:
                self._drop_fd()
                raise
        self.status.wrote(count)

    def close(self) -> None:
        """Close the file; later writes fail."""
        with self._lock:
            self._closed = True
            self._drop_fd()

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        return self._fd

    def _drop_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _rotate(self, fd: int, max_bytes: int) -> None:
        """Rotate the file if ours is still the live one and full; follow another process's rotation if not."""
        import fcntl

        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                live = os.stat(self.path)
            except FileNotFoundError:
                live = None
            mine = os.fstat(fd)
            if live is not None and (live.st_ino, live.st_dev) == (mine.st_ino, mine.st_dev):
                if live.st_size < max_bytes:
                    return
                for index in range(self._backups - 1, 0, -1):
                    older = Path(f"{self.path}.{index}")
                    if older.exists():
                        os.replace(older, f"{self.path}.{index + 1}")
                os.replace(self.path, f"{self.path}.1")
            self._drop_fd()
            self._open()
        finally:
            os.close(lock_fd)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"


def _reset_after_fork() -> None:
    for sink in list(_live_sinks):
        sink._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# -- reading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """A line of a trace file that could not be read in full, and what was lost."""

    path: str
    line: int
    reason: str
    partial: bool = False
    """An unterminated last line: a write cut off mid-line, or one still in progress."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def parse_line(line: bytes, path: str, number: int, problems: list[ReadProblem]) -> TraceRecord | None:
    """The record on one complete line; a torn line followed by a whole record yields that record."""
    try:
        return TraceRecord.model_validate_json(line)
    except ValidationError as exc:
        start = line.find(_RECORD_START, 1)
        if start != -1:
            try:
                record = TraceRecord.model_validate_json(line[start:])
            except ValidationError:
                pass
            else:
                problems.append(
                    ReadProblem(path, number, f"a torn write of {start} bytes preceded this record; it is lost")
                )
                return record
        first = exc.errors()[0]
        problems.append(ReadProblem(path, number, f"not a trace record: {first['msg']}"))
        return None


def jsonl_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and its rotated files, oldest first."""
    base = Path(path).expanduser()
    rotated: list[tuple[int, Path]] = []
    for sibling in base.parent.glob(f"{base.name}.*"):
        suffix = sibling.name[len(base.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), sibling))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if base.exists() or not files:
        files.append(base)
    return files


def iter_jsonl(
    path: str | os.PathLike[str], problems: list[ReadProblem], *, end: int | None = None
) -> Iterator[TraceRecord]:
    """The records of one JSONL trace file (its first ``end`` bytes, if given).

    Lines that cannot be read are skipped and added to ``problems``; a last line without its newline is
    reported as partial (``ReadProblem.partial``) and not read.
    """
    name = str(path)
    number = 0
    rest = b""
    left = -1 if end is None else end
    with open(path, "rb") as handle:
        while left and (chunk := handle.read(_CHUNK if left < 0 else min(_CHUNK, left))):
            left -= len(chunk) if left > 0 else 0
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                if line.strip():
                    record = parse_line(line, name, number, problems)
                    if record is not None:
                        yield record
    if rest.strip():
        problems.append(
            ReadProblem(name, number + 1, f"partial last line ({len(rest)} bytes, no newline): not read", True)
        )


class JsonlFollower:
    """Reads records as they are appended to a JSONL trace file, across rotations (``tail -f``).

    It starts at the end of the file as it is when created (or at its beginning with ``from_start``);
    ``backlog(n)`` gives the last ``n`` records before that point, rotated files included, and ``poll()`` the
    complete lines added since the last call (a line still without its newline waits for the next call).
    """

    def __init__(self, path: str | os.PathLike[str], *, from_start: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.problems: list[ReadProblem] = []
        self._file: os.stat_result | None = None
        self._rest = b""
        self._line = 0
        self._fd: int | None = None
        self._start = 0
        if self._reopen(at_end=not from_start):
            self._start = self._offset()

    def backlog(self, count: int) -> list[TraceRecord]:
        """The last ``count`` records written before this follower's starting point."""
        latest: deque[TraceRecord] = deque(maxlen=count)
        if count <= 0:
            return []
        for file in jsonl_files(self.path):
            if file == self.path:
                if self._fd is not None and self._start:
                    latest.extend(iter_jsonl(file, self.problems, end=self._start))
            elif file.exists():
                latest.extend(iter_jsonl(file, self.problems))
        return list(latest)

    def poll(self) -> list[TraceRecord]:
        """The records completed since the last call."""
        records: list[TraceRecord] = []
        if self._fd is None and not self._reopen(at_end=False):  # a file that appears later: from its beginning
            return records
        self._drain(records)
        try:
            live = os.stat(self.path)
        except FileNotFoundError:
            return records
        assert self._fd is not None and self._file is not None
        current = os.fstat(self._fd)
        if (live.st_ino, live.st_dev) != (self._file.st_ino, self._file.st_dev) or current.st_size < self._offset():
            # Rotated or truncated: finish the old file, then start the new one from its beginning.
            self._drain(records)
            self._close()
            if self._reopen(at_end=False):
                self._drain(records)
        return records

    def close(self) -> None:
        """Stop following."""
        self._close()

    def _offset(self) -> int:
        assert self._fd is not None
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def _reopen(self, *, at_end: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise
        self._fd, self._file, self._rest, self._line = fd, os.fstat(fd), b"", 0
        if at_end:
            os.lseek(fd, 0, os.SEEK_END)
        return True

    def _drain(self, records: list[TraceRecord]) -> None:
        assert self._fd is not None
        while chunk := os.read(self._fd, _CHUNK):
            lines = (self._rest + chunk).split(b"\n")
            self._rest = lines.pop()
            for line in lines:
                self._line += 1
                if line.strip():
                    record = parse_line(line, str(self.path), self._line, self.problems)
                    if record is not None:
                        records.append(record)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
