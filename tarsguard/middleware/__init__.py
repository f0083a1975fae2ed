"""Guarding existing chatbots: ``protect`` for callables, ``wrap_openai`` for OpenAI clients.

``wrap_openai`` loads ``openai`` when first used; nothing here imports it before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ._core import DEFAULT_DECLINE_MESSAGE, Declined, GuardedText, Mode, OnDecline, Scope, verdict_of
from ._protect import GuardedAsyncIterator, GuardedIterator, ProtectOptions, protect

if TYPE_CHECKING:
    from ._openai import wrap_openai

__all__ = [
    "DEFAULT_DECLINE_MESSAGE",
    "Declined",
    "GuardedAsyncIterator",
    "GuardedIterator",
    "GuardedText",
    "Mode",
    "OnDecline",
    "ProtectOptions",
    "Scope",
    "protect",
    "verdict_of",
    "wrap_openai",
]


__getattr__ = lazy_getattr(__name__, {"wrap_openai": "._openai"})
