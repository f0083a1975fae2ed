"""The proxy's configuration, its API keys, and the rule that a proxy reachable beyond loopback needs them."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .._config import resolve_min_confidence
from .._exceptions import ConfigurationError
from ..middleware._core import DEFAULT_SCOPE, MODES, SCOPES, Mode, Scope

__all__ = [
    "ENV_KEYS",
    "ENV_UPSTREAM_KEY",
    "ENV_UPSTREAM_URL",
    "KeyRing",
    "ProxyConfig",
    "is_loopback",
    "read_keys",
]

ENV_KEYS = "TARSGUARD_PROXY_API_KEYS"
ENV_UPSTREAM_URL = "TARSGUARD_UPSTREAM_URL"
ENV_UPSTREAM_KEY = "TARSGUARD_UPSTREAM_API_KEY"
ProxyErrorPolicy = Literal["decline", "allow"]


@dataclass(frozen=True)
class ProxyConfig:
    """How the proxy runs.

    ``upstream``: the chatbot's OpenAI-compatible base URL, ending in ``/v1`` (not needed in answer mode).
    ``guard_url`` / ``guard_model``: the TARS server (else ``TARSGUARD_BASE_URL`` / ``TARSGUARD_MODEL``; its
    key comes from ``TARSGUARD_API_KEY``). ``mode``, ``screen``: as for ``protect``. ``on_error``: a failed
    check declines (default) or lets the request through. ``timeout``: seconds for one check;
    ``upstream_timeout``: seconds the upstream may stay silent; ``connect_timeout``: seconds to connect to
    it. ``decline_message``: the reply to a decline (default: the reasoner's own complete decline, else
    ``DEFAULT_DECLINE_MESSAGE``). ``api_keys``: the
    Bearer keys clients must send (required to bind beyond loopback). ``upstream_api_key``: sent to the
    upstream; without it the client's ``Authorization`` header is passed on when the proxy has no keys of
    its own. ``log_prompts``: log each screened prompt with its verdict (off: prompts are never logged).
    ``min_confidence``: the confidence an answered decision needs to be let through (else
    ``TARSGUARD_MIN_CONFIDENCE``, else the guard's default); applies to the guard the proxy builds itself.
    """

    upstream: str | None = None
    guard_url: str | None = None
    guard_model: str | None = None
    mode: Mode = "screen"
    screen: Scope = DEFAULT_SCOPE
    on_error: ProxyErrorPolicy = "decline"
    timeout: float = 60.0
    upstream_timeout: float = 600.0
    connect_timeout: float = 10.0
    decline_message: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    upstream_api_key: str | None = field(default=None, repr=False)
    log_prompts: bool = False
    min_confidence: float | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.screen not in SCOPES:
            raise ConfigurationError(f"screen must be one of {', '.join(SCOPES)}; got {self.screen!r}")
        if self.min_confidence is not None:
            resolve_min_confidence(self.min_confidence)
        if self.on_error not in ("decline", "allow"):
            raise ConfigurationError(f"on_error must be decline or allow; got {self.on_error!r}")
        if self.upstream is None:
            if self.mode != "answer":
                raise ConfigurationError(
                    f"no upstream: pass --upstream http://HOST:PORT/v1 or set {ENV_UPSTREAM_URL} (only answer mode "
                    "runs without one)"
                )
        else:
            parts = urlsplit(self.upstream)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(f"the upstream must be an http(s) URL, got {self.upstream!r}")
        for name in ("timeout", "upstream_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigurationError(f"{name} must be a positive, finite number of seconds")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, got {self.port}")
        if any(not key or key != key.strip() or len(key) < 16 for key in self.api_keys):
            raise ConfigurationError("API keys must be at least 16 characters, without surrounding whitespace")
        if self.max_connections < 1:
            raise ConfigurationError("max_connections must be >= 1")

    def check_binding(self) -> None:
        """Refuse a host beyond loopback unless clients need an API key."""
        if not self.api_keys and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to listen on {self.host!r} without API keys: anyone who can reach it could use the "
                f"upstream. Set {ENV_KEYS} (comma-separated) or pass --keys-file, or bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_keys(path: Path | None = None) -> tuple[str, ...]:
    """API keys from ``TARSGUARD_PROXY_API_KEYS`` (comma- or space-separated) and ``path`` (one per line)."""
    text = os.environ.get(ENV_KEYS, "").replace(",", " ")
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the keys file {path}: {exc.strerror}") from None
        text += " " + " ".join(line for line in lines if not line.lstrip().startswith("#"))
    return tuple(dict.fromkeys(text.split()))


class KeyRing:
    """Bearer API keys, held as digests and compared in constant time."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = tuple(hashlib.sha256(key.encode()).digest() for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the keys."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(token.strip().encode()).digest()
        found = False
        for known in self._digests:  # every key is compared, so timing does not tell which one matched
            found |= hmac.compare_digest(digest, known)
        return found
