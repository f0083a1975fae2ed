"""Turning what a user passes to ``check`` into validated chat messages, before any request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._exceptions import InvalidInput
from ._types import Message

__all__ = ["Prompt", "to_messages"]

Prompt = str | Sequence[Message | Mapping[str, Any]]
"""A user prompt as text, or a conversation as chat messages (dicts or ``Message``)."""

_ROLES = frozenset({"system", "user", "assistant"})


def to_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Validate ``prompt`` and return it as a list of ``{"role", "content"}`` dicts.

    Raises ``InvalidInput`` for an empty prompt, an unknown role, non-text content, or a conversation that
    does not end with a user turn.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidInput("the prompt is empty")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise InvalidInput(f"expected a string or a list of chat messages, got {type(prompt).__name__}")
    if not prompt:
        raise InvalidInput("the conversation has no messages")
    messages = [_message(item, i) for i, item in enumerate(prompt)]
    if messages[-1]["role"] != "user":
        raise InvalidInput(f"the last message must be from the user, not {messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise InvalidInput("the last user message is empty")
    return messages


def _message(item: object, index: int) -> dict[str, str]:
    if isinstance(item, Message):
        return {"role": item.role, "content": item.content}
    if not isinstance(item, Mapping):
        raise InvalidInput(f"message {index} must be a mapping with 'role' and 'content', got {type(item).__name__}")
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidInput(f"message {index} has role {role!r}; expected one of system, user, assistant")
    return {"role": role, "content": _text(item.get("content"), index)}


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part in content:
            if not isinstance(part, Mapping):
                raise InvalidInput(f"message {index} has a content part of type {type(part).__name__}")
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type")
                raise InvalidInput(f"message {index} has non-text content ({kind}); only text can be checked")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidInput(f"message {index} has no text content (got {type(content).__name__})")
