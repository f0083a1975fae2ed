"""Turning LangChain inputs (strings, messages, prompt values, dicts) into what tarsguard checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from tarsguard import InvalidInput
from tarsguard.middleware._core import DEFAULT_SCOPE, Part, Scope
from tarsguard.middleware._core import screened_parts as _screened_parts

__all__ = ["DEFAULT_INPUT_KEYS", "Scope", "chat_messages", "message_text", "screened_parts", "to_messages"]

DEFAULT_INPUT_KEYS = ("input", "question", "query", "messages")
"""Keys looked up, in order, in a dict input when no ``input_key`` is given."""

_SKIPPED_BLOCKS = frozenset({"reasoning", "thinking"})
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_messages(value: Any, *, input_key: str | None = None) -> list[BaseMessage]:
    """The chat messages in ``value``: a string, a message, messages, a ``PromptValue``, or a dict holding one."""
    if isinstance(value, Mapping) and not _looks_like_message(value):
        value = _lookup(value, input_key)
    if isinstance(value, str):
        return [HumanMessage(value)]
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        try:
            return convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise InvalidInput(f"cannot read chat messages from the input: {exc}") from None
    if isinstance(value, Mapping):
        return convert_to_messages([dict(value)])
    raise InvalidInput(
        f"cannot screen an input of type {type(value).__name__}: expected a string, chat messages, "
        "a PromptValue, or a dict holding one"
    )


def screened_parts(value: Any, *, input_key: str | None = None, scope: Scope = DEFAULT_SCOPE) -> list[Part]:
    """The parts of a runnable's input that the guard checks: tarsguard's ``screened_parts`` of its messages.

    ``all`` (default): every part the model reads (system, user and assistant turns, tool results, tool calls,
    names), each on its own. ``conversation``: the turns up to and including the latest user turn as one
    prompt, and what that leaves out on its own. ``last``: the latest user turn. Raises ``InvalidInput`` when no
    user turn has text, or a screened turn holds content other than text (an image cannot be screened).
    """
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput("the prompt is empty")
        return _screened_parts(value, scope)
    messages = to_messages(value, input_key=input_key)
    return _screened_parts([_openai_message(message) for message in messages], scope)


def _openai_message(message: BaseMessage) -> dict[str, Any]:
    """``message`` in OpenAI's chat format, as tarsguard screens it (reasoning blocks left out)."""
    role = message.role if isinstance(message, ChatMessage) else _OPENAI_ROLES.get(message.type, message.type)
    content: Any = message.content
    if not isinstance(content, str):
        content = [
            {"type": "text", "text": part} if isinstance(part, str) else part
            for part in content
            if isinstance(part, str) or part.get("type") not in _SKIPPED_BLOCKS
        ]
    out: dict[str, Any] = {"role": role, "content": content}
    if message.name:
        out["name"] = message.name
    if isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": call["name"], "arguments": json.dumps(call["args"], ensure_ascii=False)}}
            for call in message.tool_calls
        ]
    return out


_OPENAI_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}


def chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Messages for the reasoner: system, user and assistant turns as text, ending with a user turn."""
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = _ROLES.get(message.type)
        if role is None:
            raise InvalidInput(
                f"message {index} is a {message.type!r} message; ChatTARS takes system, user and assistant turns"
            )
        out.append({"role": role, "content": _text(message, index, strict=True)})
    if not out:
        raise InvalidInput("there are no messages")
    if out[-1]["role"] != "user":
        raise InvalidInput(f"the last message must be from the user, not {out[-1]['role']!r}")
    if not out[-1]["content"].strip():
        raise InvalidInput("the last user message is empty")
    return out


def message_text(message: Any) -> str:
    """The text of a chain's output, for output screening: a message's text, a string, or ``""``."""
    if isinstance(message, str):
        return message
    if isinstance(message, BaseMessage):
        return message.text
    return ""


def _text(message: BaseMessage, index: int, *, strict: bool) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif strict and kind not in _SKIPPED_BLOCKS:
            raise InvalidInput(f"message {index} has {kind or 'non-text'} content; only text can be screened")
    return "".join(texts)


def _looks_like_message(value: Mapping[str, Any]) -> bool:
    return "role" in value and "content" in value


def _lookup(value: Mapping[str, Any], input_key: str | None) -> Any:
    if input_key is not None:
        if input_key not in value:
            raise InvalidInput(f"the input dict has no key {input_key!r} (keys: {', '.join(map(str, value))})")
        return value[input_key]
    for key in DEFAULT_INPUT_KEYS:
        if key in value:
            return value[key]
    raise InvalidInput(
        f"the input dict has none of the keys {', '.join(DEFAULT_INPUT_KEYS)}; pass input_key= to say which to screen"
    )
