"""Turning what a user passes to ``check`` into validated chat messages, before any request."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._exceptions import InvalidInput
from ._types import Message

__all__ = ["Prompt", "check_strings", "check_text", "guard_messages", "neutralise_tags", "to_messages"]

Prompt = str | Sequence[Message | Mapping[str, Any]]
"""A user prompt as text, or a conversation as chat messages (dicts or ``Message``)."""

_ROLES = frozenset({"system", "user", "assistant"})

_SURROGATE = re.compile("[\ud800-\udfff]")
# What a tokenizer still reads as a reasoning tag: any case, with spaces, line breaks or invisible format
# characters (zero-width space, joiners, soft hyphen, BOM) before, after or inside the tag's letters.
_GAP = "[\\s\u00ad\u200b-\u200f\u2060-\u2064\ufeff]*"
_TAG = re.compile("<" + _GAP + "(?:/" + _GAP + ")?" + _GAP.join("think") + _GAP + ">", re.IGNORECASE)
TAG_OPEN_LOOKALIKE = "\u2039"
"""``‹`` (single left-pointing angle quotation mark): what a tag's ``<`` becomes in checked text."""
TAG_CLOSE_LOOKALIKE = "\u203a"
"""``›`` (single right-pointing angle quotation mark): what a tag's ``>`` becomes in checked text."""


def to_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Validate ``prompt`` and return it as a list of ``{"role", "content"}`` dicts.

    Raises ``InvalidInput`` for an empty prompt, an unknown role, non-text content, text that is not valid
    Unicode (a lone surrogate cannot be encoded, so it could never be checked), or a conversation that does
    not end with a user turn.
    """
    if isinstance(prompt, str):
        check_text(prompt, "the prompt")
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


def guard_messages(prompt: Prompt) -> list[dict[str, str]]:
    """``to_messages(prompt)`` with every reasoning tag in the text neutralised: what a check sends to TARS."""
    return [{"role": m["role"], "content": neutralise_tags(m["content"])} for m in to_messages(prompt)]


def neutralise_tags(text: str) -> str:
    """``text`` with every ``<think>``/``</think>`` (in any case or spacing) made unreadable as a tag.

    The tag's angle brackets become the look-alikes ``‹`` and ``›`` (``</think>`` reads ``‹/think›``), so the
    text stays readable while the reasoner, and the parser of its output, never see a tag the user wrote.
    """
    if "<" not in text:
        return text
    return _TAG.sub(lambda m: TAG_OPEN_LOOKALIKE + m.group()[1:-1] + TAG_CLOSE_LOOKALIKE, text)


def check_text(texts: str | Iterable[str], what: str) -> None:
    """Raise ``InvalidInput`` when any of ``texts`` holds a lone surrogate (text that cannot be encoded)."""
    for text in [texts] if isinstance(texts, str) else texts:
        found = _SURROGATE.search(text)
        if found is not None:
            raise InvalidInput(
                f"{what} is not valid Unicode text: a lone surrogate (U+{ord(found.group()):04X}) at "
                f"position {found.start()}"
            )


def check_strings(value: object, what: str = "the request", *, _depth: int = 0) -> None:
    """Raise ``InvalidInput`` when any string in ``value`` (a string, or mappings and sequences of them, keys
    included) holds a lone surrogate: such a request cannot be encoded, so it could never be checked."""
    if isinstance(value, str):
        check_text(value, what)
    elif _depth < 32 and isinstance(value, Mapping):
        for key, item in value.items():
            check_strings(key, what, _depth=_depth + 1)
            check_strings(item, what, _depth=_depth + 1)
    elif _depth < 32 and isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        for item in value:
            check_strings(item, what, _depth=_depth + 1)
    elif isinstance(value, Message):
        check_text(value.content, what)


def _message(item: object, index: int) -> dict[str, str]:
    if isinstance(item, Message):
        check_text(item.content, f"message {index}")
        return {"role": item.role, "content": item.content}
    if not isinstance(item, Mapping):
        raise InvalidInput(f"message {index} must be a mapping with 'role' and 'content', got {type(item).__name__}")
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidInput(f"message {index} has role {role!r}; expected one of system, user, assistant")
    name = item.get("name")
    if isinstance(name, str):
        check_text(name, f"message {index}'s name")
    content = _text(item.get("content"), index)
    check_text(content, f"message {index}")
    return {"role": role, "content": content}


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
