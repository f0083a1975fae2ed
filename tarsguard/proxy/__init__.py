"""``tarsguard proxy``: an OpenAI-compatible HTTP service that screens prompts before an upstream answers them.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus-client), loaded when a name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._config import ProxyConfig, is_loopback, read_keys
    from ._server import ProxyServer, serve

__all__ = ["ProxyConfig", "ProxyServer", "create_app", "is_loopback", "read_keys", "serve"]

_MODULE_OF = {
    "create_app": "._app",
    "ProxyConfig": "._config",
    "is_loopback": "._config",
    "read_keys": "._config",
    "ProxyServer": "._server",
    "serve": "._server",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
