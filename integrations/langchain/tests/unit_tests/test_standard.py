"""LangChain's standard unit tests for ChatTARS (construction, standard parameters, LangSmith params)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_tarsguard import ChatTARS


class TestChatTARSStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTARS

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Nothing is sent at construction: the HTTP backend connects on the first call.
        return {"base_url": "http://127.0.0.1:9/v1", "model": "tars-7b"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"TARSGUARD_BASE_URL": "http://127.0.0.1:9/v1", "TARSGUARD_API_KEY": "env-key", "TARSGUARD_MODEL": "tars"},
            {},
            {"base_url": "http://127.0.0.1:9/v1", "api_key": "env-key", "model_name": "tars"},
        )

    @property
    def model_override_value(self) -> str:
        return "tars-7b-alt"
