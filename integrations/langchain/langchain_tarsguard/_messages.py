"""Turning LangChain inputs (strings, messages, prompt values, dicts) into what tarsguard checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from tarsguard import InvalidInput

__all__ = ["DEFAULT_INPUT_KEYS", "Scope", "chat_messages", "message_text", "screened_prompt", "to_messages"]

Scope = Literal["last", "conversation"]
"""What the guard checks: the latest user turn, or the conversation up to and including it."""

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


def screened_prompt(value: Any, *, input_key: str | None = None, scope: Scope = "last") -> str | list[dict[str, str]]:
    """The prompt the guard checks for a runnable's input.

    ``last``: the text of the latest user turn. ``conversation``: the system, user and assistant turns up to
    and including it (tool turns and assistant turns without text left out). Raises ``InvalidInput`` when no
    user turn has text, or a screened user turn holds content other than text (an image cannot be screened).
    """
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput("the prompt is empty")
        return value
    messages = to_messages(value, input_key=input_key)
    last = None
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].type == "human" and _text(messages[index], index, strict=True).strip():
            last = index
            break
    if last is None:
        raise InvalidInput("the input has no user turn with text to screen")
    if scope == "last":
        return _text(messages[last], last, strict=True)
    turns: list[dict[str, str]] = []
    for index, message in enumerate(messages[: last + 1]):
        role = _ROLES.get(message.type)
        if role is None:
            continue  # tool and function results are not the user's words
        text = _text(message, index, strict=role == "user")
        if text or role == "user":
            turns.append({"role": role, "content": text})
    return turns


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
