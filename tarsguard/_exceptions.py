"""The exceptions tarsguard raises: one base class, a few precise kinds."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigurationError",
    "ContextLengthExceeded",
    "InvalidInput",
    "ResponseTooLarge",
    "TarsGuardError",
]


class TarsGuardError(Exception):
    """Base class of every error tarsguard raises on purpose."""

    kind: str = "error"
    retries: int = 0
    """How many times the request was retried before this error was final."""


class InvalidInput(TarsGuardError, ValueError):
    """The prompt or messages cannot be checked (empty, wrong role, non-text content); nothing was sent."""

    kind = "invalid_input"


class ContextLengthExceeded(InvalidInput):
    """The prompt does not fit the guard model's context, so it cannot be checked as it is.

    Raised when the guard's server refused the prompt as longer than its context, when a guard with
    ``long_prompts="reject"`` is given a prompt longer than that context, or when a prompt would need more
    windows than a guard checks. Like every ``InvalidInput``, it is raised under every ``on_error`` policy:
    it is never a failed check to be allowed. ``limit`` is the context length in tokens, where known.
    """

    kind = "context_length_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: int | None = None,
        prompt_tokens: int | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.prompt_tokens = prompt_tokens
        self.status_code = status_code


class ConfigurationError(TarsGuardError, ValueError):
    """The guard was configured in a way that cannot work (no endpoint, a bad option)."""

    kind = "configuration"


class BackendUnavailable(TarsGuardError):
    """The backend could not be reached, or dropped the connection before answering."""

    kind = "unavailable"


class BackendTimeout(TarsGuardError):
    """The backend did not answer within the configured timeout."""

    kind = "timeout"


class BackendError(TarsGuardError):
    """The backend answered with an error, or with a response that cannot be read.

    ``message`` is the server's own message where it sent one.
    """

    kind = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message if status_code is None else f"HTTP {status_code}: {message}")
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.code = code
        self.retry_after = retry_after


class ResponseTooLarge(BackendError):
    """The server's response grew past the backend's size limit (``max_response_bytes``); it was not read further.

    ``limit`` is that limit in bytes.
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
