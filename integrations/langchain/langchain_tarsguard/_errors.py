"""The exception a guard runnable raises on a decline."""

from __future__ import annotations

from tarsguard import Declined

__all__ = ["GuardDeclined"]


class GuardDeclined(Declined):
    """The guard did not let the input through (declined, partial, or a check that failed closed).

    ``verdict`` is the guard's verdict. A subclass of ``tarsguard.Declined``, so one ``except`` catches both.
    """

    kind = "declined"
