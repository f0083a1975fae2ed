"""Defaults and configuration resolution, in one place: arguments, then environment, then defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._exceptions import ConfigurationError
from ._types import SamplingParams

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MIN_CONFIDENCE",
    "DEFAULT_SAMPLING",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MAX_RESPONSE_BYTES",
    "ENV_MIN_CONFIDENCE",
    "ENV_MODEL",
    "ENV_TIMEOUT",
    "ENV_TRACE",
    "Timeout",
]

ENV_BASE_URL = "TARSGUARD_BASE_URL"
ENV_MODEL = "TARSGUARD_MODEL"
ENV_API_KEY = "TARSGUARD_API_KEY"
ENV_TIMEOUT = "TARSGUARD_TIMEOUT"
ENV_TRACE = "TARSGUARD_TRACE"
ENV_MIN_CONFIDENCE = "TARSGUARD_MIN_CONFIDENCE"


@dataclass(frozen=True, slots=True)
class Timeout:
    """Time limits of one check, in seconds (``None`` means no limit).

    ``connect``: establishing a connection; ``read``: waiting for the next bytes of a response (the whole
    response when not streamed); ``total``: the whole check, retries and backoff included.
    """

    total: float | None = 300.0
    connect: float | None = 5.0
    read: float | None = 120.0

    def __post_init__(self) -> None:
        for name in ("total", "connect", "read"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigurationError(f"Timeout.{name} must be a positive, finite number of seconds or None")

    @classmethod
    def of(cls, value: float | Timeout | None) -> Timeout:
        """A ``Timeout`` from a number of seconds for the whole check, or a ``Timeout`` as it is."""
        if value is None or isinstance(value, Timeout):
            return value or DEFAULT_TIMEOUT
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"timeout must be a number of seconds, got {value!r}") from None
        if not 0 < seconds < math.inf:  # also rejects NaN
            raise ConfigurationError(
                f"timeout must be a positive, finite number of seconds (None for no limit), got {value!r}"
            )
        return cls(total=seconds, connect=min(5.0, seconds), read=seconds)


DEFAULT_TIMEOUT = Timeout()
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""The most bytes the HTTP backend reads of one response (16 MiB, about 80k streamed tokens of vLLM's events);
a longer one fails the check with ``ResponseTooLarge``. ``HTTPBackend(max_response_bytes=)`` or
``TARSGUARD_MAX_RESPONSE_BYTES`` sets another."""
ENV_MAX_RESPONSE_BYTES = "TARSGUARD_MAX_RESPONSE_BYTES"
DEFAULT_MIN_CONFIDENCE = 0.7
"""The confidence an answered decision needs before a verdict allows the prompt (``Guard(min_confidence=)``).
Chosen from the measured trade-off (docs/benchmarks.md): the lowest threshold at which under 3% of declined or
partial answers pass on unseen TARS-format outputs and on two of three chat models' answers, at about 10%
over-block; lower it to block less, raise it to pass less."""
DEFAULT_SAMPLING = SamplingParams()
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "seed", "stop")


def resolve(value: Any, env_name: str) -> str | None:
    """The argument if given, else the environment variable if set and non-empty, else ``None``."""
    if value is not None:
        return str(value)
    return os.environ.get(env_name) or None


def resolve_base_url(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The base URL(s) from the argument, else ``TARSGUARD_BASE_URL``; comma-separated URLs are split.

    ``None`` when neither gives one.
    """
    if value is None:
        value = os.environ.get(ENV_BASE_URL) or None
        if value is None:
            return None
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [str(value)]
    if not all(isinstance(part, str) for part in parts):
        raise ConfigurationError(f"base_url must be a URL or a list of URLs, got {value!r}")
    urls = tuple(part.strip() for part in parts if part.strip())
    if not urls:
        raise ConfigurationError(f"base_url holds no URL: {value!r}")
    return urls


def resolve_timeout(value: float | Timeout | None) -> Timeout:
    """The timeout argument, else ``TARSGUARD_TIMEOUT`` (seconds for the whole check), else the default."""
    if value is not None:
        return Timeout.of(value)
    env = os.environ.get(ENV_TIMEOUT)
    if not env:
        return DEFAULT_TIMEOUT
    try:
        return Timeout.of(float(env))
    except ValueError:
        raise ConfigurationError(f"{ENV_TIMEOUT} must be a number of seconds, got {env!r}") from None


def resolve_min_confidence(value: float | None) -> float:
    """The min_confidence argument, else ``TARSGUARD_MIN_CONFIDENCE``, else ``DEFAULT_MIN_CONFIDENCE``.

    Raises ``ConfigurationError`` unless the value is a number from 0 to 1.
    """
    number, source = _number_setting(value, ENV_MIN_CONFIDENCE, "min_confidence", float, "a number from 0 to 1")
    if number is None:
        return DEFAULT_MIN_CONFIDENCE
    if not 0.0 <= number <= 1.0:
        raise ConfigurationError(f"{source} must be a number from 0 to 1, got {number!r}")
    return float(number)


def resolve_max_response_bytes(value: int | None) -> int:
    """The response size limit: the argument, else ``TARSGUARD_MAX_RESPONSE_BYTES``, else the default."""
    what = "a positive number of bytes"
    number, source = _number_setting(value, ENV_MAX_RESPONSE_BYTES, "max_response_bytes", int, what)
    if number is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    if not isinstance(number, int) or number < 1:
        raise ConfigurationError(f"{source} must be {what}, got {number!r}")
    return number


def _number_setting(
    value: float | None, env_name: str, argument: str, parse: type[int] | type[float], what: str
) -> tuple[float | None, str]:
    """``value``, else the environment variable read with ``parse``, else ``None``, and where it came from; not a
    number (or a bool) is a ``ConfigurationError`` naming that."""
    if value is None:
        env = os.environ.get(env_name)
        if not env:
            return None, env_name
        try:
            return parse(env), env_name
        except ValueError:
            raise ConfigurationError(f"{env_name} must be {what}, got {env!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{argument} must be {what}, got {value!r}")
    return value, argument


def merge_sampling(base: SamplingParams, overrides: dict[str, Any]) -> SamplingParams:
    """``base`` with the non-``None`` overrides applied; invalid values raise ``ConfigurationError``."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return base
    if "stop" in changes:
        stop = changes["stop"]
        changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    try:
        return SamplingParams.model_validate({**base.model_dump(), **changes})
    except ValueError as exc:
        raise ConfigurationError(f"invalid sampling parameters: {exc}") from None
