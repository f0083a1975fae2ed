"""Backends: where generations come from. One protocol, several implementations."""

from ._base import (
    Backend,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    GenerationRestart,
    TextDelta,
    TokenLogprob,
)

__all__ = [
    "Backend",
    "EndpointPool",
    "EndpointStatus",
    "GenerationEnd",
    "GenerationEvent",
    "GenerationRequest",
    "GenerationRestart",
    "HTTPBackend",
    "TextDelta",
    "TokenLogprob",
    "TransformersBackend",
    "VLLMEngineBackend",
]


def __getattr__(name: str) -> object:
    # The HTTP backend pulls in httpx; load it only when asked for.
    if name == "HTTPBackend":
        from .http import HTTPBackend

        return HTTPBackend
    if name in ("EndpointPool", "EndpointStatus"):
        from . import pool

        return getattr(pool, name)
    if name == "TransformersBackend":  # torch and transformers load with the model, not here
        from .transformers import TransformersBackend

        return TransformersBackend
    if name == "VLLMEngineBackend":
        from .vllm_engine import VLLMEngineBackend

        return VLLMEngineBackend
    raise AttributeError(name)
