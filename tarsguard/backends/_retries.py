"""How many times the check in progress has been retried so far, for a check its deadline cuts short."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["count_retry", "retries_so_far", "start_counting"]

_RETRIES: ContextVar[int] = ContextVar("tarsguard_retries", default=0)


def start_counting() -> None:
    """Start counting the retries of a new check (in the current task)."""
    _RETRIES.set(0)


def count_retry() -> None:
    """Note that the check in progress is being retried once more."""
    _RETRIES.set(_RETRIES.get() + 1)


def retries_so_far() -> int:
    """The retries noted since ``start_counting`` in the current task."""
    return _RETRIES.get()
