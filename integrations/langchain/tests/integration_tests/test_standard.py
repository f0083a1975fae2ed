"""LangChain's standard integration tests for ChatTARS against a real vLLM server (the SmolLM2 stand-in).

Declared: no tool calling, structured output, JSON mode or multimodal input (TARS and the stand-in are
text-only chat models without tools). Everything else in the suite runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from tests.support.standin import SERVED_NAME
from tests.support.vllm_server import ALT_SERVED_NAME

from langchain_tarsguard import ChatTARS


class TestChatTARSIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, vllm_base_url: str) -> None:
        self.base_url = vllm_base_url

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTARS

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": SERVED_NAME, "max_tokens": 48, "temperature": 0.0, "seed": 0}

    @property
    def model_override_value(self) -> str:
        return ALT_SERVED_NAME

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False
