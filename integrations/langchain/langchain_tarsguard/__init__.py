"""LangChain integration for tarsguard: screen runnables' inputs with TARS, use TARS as a chat model, guard agents.

    from langchain_tarsguard import ChatTARS, GuardMiddleware, GuardRunnable, with_guard

``GuardMiddleware`` needs ``langchain>=1`` (``pip install 'langchain-tarsguard[agents]'``) and loads it on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import GuardDeclined
from .chat_models import ChatTARS
from .runnables import GuardRunnable, ScreenedText, with_guard

if TYPE_CHECKING:
    from .middleware import GuardMiddleware

__version__ = "0.1.0"

__all__ = ["ChatTARS", "GuardDeclined", "GuardMiddleware", "GuardRunnable", "ScreenedText", "__version__", "with_guard"]


def __getattr__(name: str) -> Any:
    if name == "GuardMiddleware":
        try:
            from .middleware import GuardMiddleware
        except ImportError as exc:
            raise ImportError("GuardMiddleware needs langchain>=1: pip install 'langchain-tarsguard[agents]'") from exc
        return GuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
