"""Test doubles: a scripted in-memory backend and a scripted OpenAI-compatible HTTP server on 127.0.0.1.

Use them to exercise faults and edge cases without a model: 5xx, 429 with Retry-After, slow responses,
dropped connections, malformed JSON, truncated streams.
"""

from ._scripted_server import RecordedRequest, Reply, ScriptedServer
from .backends.scripted import ScriptedBackend, ScriptedOutput

__all__ = ["RecordedRequest", "Reply", "ScriptedBackend", "ScriptedOutput", "ScriptedServer"]
