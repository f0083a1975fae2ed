"""Backends: where generations come from. One protocol, several implementations."""

from ._base import Backend, GenerationEnd, GenerationEvent, GenerationRequest, TextDelta

__all__ = ["Backend", "GenerationEnd", "GenerationEvent", "GenerationRequest", "HTTPBackend", "TextDelta"]


def __getattr__(name: str) -> object:
    # The HTTP backend pulls in httpx; load it only when asked for.
    if name == "HTTPBackend":
        from .http import HTTPBackend

        return HTTPBackend
    raise AttributeError(name)
