"""The proxy's wire formats (OpenAI's, the parts the proxy reads or answers with), for validation and docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "ErrorResponse",
    "HealthStatus",
    "ModelList",
]


class _Open(BaseModel):
    """A JSON object that may carry more fields than the ones named here."""

    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(_Open):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ContentPart(_Open):
    """A part of an assistant's or a tool's content: text, or another kind."""

    type: str
    text: str | None = None


class UserMessage(_Open):
    """A user turn. Only text can be screened, so only text is accepted."""

    role: Literal["user"]
    content: str | list[TextPart]
    name: str | None = None


class SystemMessage(_Open):
    """A system or developer turn (screened), text only."""

    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class AssistantMessage(_Open):
    """An assistant turn (its text and tool calls are screened); other fields pass through."""

    role: Literal["assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ToolMessage(_Open):
    """A tool's (or a legacy function's) result. It is screened, so only text is accepted."""

    role: Literal["tool", "function"]
    content: str | list[TextPart] | None = None


ChatMessage = Annotated[UserMessage | SystemMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]

# A character that is not whitespace to Python's str.strip(), spelled the same in JSON Schema's regex dialect.
_NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_USER_TEXT = {
    "type": "object",
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                {"type": "string", "pattern": _NOT_BLANK},
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "properties": {"type": {"const": "text"}, "text": {"type": "string", "pattern": _NOT_BLANK}},
                        "required": ["type", "text"],
                    },
                },
            ]
        },
    },
    "required": ["role", "content"],
}


def _whole_number(value: Any) -> Any:
    """A JSON number with no fraction (``2.0``) is an integer, as JSON Schema has it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class StreamOptions(_Open):
    """Options of a streamed response."""

    include_usage: bool | None = None


class ChatCompletionRequest(_Open):
    """A chat completion request. Fields not named here are passed to the upstream as they are.

    The conversation needs a user turn with text. What is screened follows the proxy's ``screen`` setting: by
    default every part of the conversation the upstream reads.
    """

    model: str
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={"contains": cast(Any, _USER_TEXT)})
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128), BeforeValidator(_whole_number)] | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_text(cls, messages: list[Any]) -> list[Any]:
        for message in messages:
            if isinstance(message, UserMessage) and _has_text(message.content):
                return messages
        raise ValueError("the conversation needs a user turn with text")


def _has_text(content: str | list[TextPart]) -> bool:
    if isinstance(content, str):
        return not content.isspace() and bool(content)
    return any(part.text and not part.text.isspace() for part in content)


class ResponseMessage(_Open):
    """The reply in a chat completion; ``refusal`` holds the decline message when the guard declined."""

    role: str
    content: str | None = None
    refusal: str | None = None


class Choice(_Open):
    """One reply of a chat completion."""

    index: int
    message: ResponseMessage
    finish_reason: str | None = None


class ChatCompletion(_Open):
    """A chat completion, from the upstream or, for a decline, from the proxy."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]


class ErrorDetail(_Open):
    """What went wrong."""

    message: str
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(_Open):
    """An error in OpenAI's format, from the proxy or passed on from the upstream."""

    error: ErrorDetail


class ModelCard(_Open):
    """A model the upstream serves."""

    id: str
    object: str = "model"


class ModelList(_Open):
    """The upstream's models."""

    object: str
    data: list[ModelCard]


class HealthStatus(BaseModel):
    """The proxy is up."""

    status: Literal["ok"]
