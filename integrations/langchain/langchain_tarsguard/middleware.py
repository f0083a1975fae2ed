"""GuardMiddleware: screens the user's turn before an agent's model is called (needs ``langchain>=1``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, hook_config
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.runtime import Runtime
from tarsguard import AsyncGuard, ConfigurationError, Guard, Timeout, Verdict
from tarsguard.middleware import DEFAULT_DECLINE_MESSAGE

from ._errors import GuardDeclined
from ._loop import run_sync
from ._messages import Scope, screened_prompt

__all__ = ["GuardMiddleware"]


class GuardMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Agent middleware for ``create_agent``: checks each new user turn with TARS before the model sees it.

    When the verdict does not allow it, the run ends with TARS's answer as the last message (or
    ``decline_message``; or ``GuardDeclined`` is raised with ``on_decline="raise"``). The model is only
    screened for a turn whose latest message is the user's, so tool rounds of an allowed turn run unchecked.
    The reply carries the verdict in ``response_metadata`` (``tarsguard_decision``, ``tarsguard_verdict``).
    """

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        *,
        screen: Scope = "last",
        on_decline: str = "answer",
        decline_message: str | None = None,
        timeout: float | Timeout | None = None,
    ) -> None:
        if not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"guard must be a tarsguard Guard or AsyncGuard, got {type(guard).__name__}")
        if on_decline not in ("answer", "raise"):
            raise ConfigurationError(f'on_decline must be "answer" or "raise"; got {on_decline!r}')
        if screen not in ("last", "conversation"):
            raise ConfigurationError(f"screen must be last or conversation; got {screen!r}")
        super().__init__()
        self.guard = guard
        self.screen: Scope = screen
        self.on_decline = on_decline
        self.decline_message = decline_message
        self.timeout = timeout

    @property
    def name(self) -> str:
        """``TarsGuard``: the node name in the agent's graph."""
        return "TarsGuard"

    def _prompt(self, state: AgentState[Any]) -> Any | None:
        messages: Sequence[BaseMessage] = state["messages"]
        if not messages or messages[-1].type != "human":
            return None
        return screened_prompt(messages, scope=self.screen)

    def _update(self, verdict: Verdict) -> dict[str, Any] | None:
        if verdict.allowed:
            return None
        if self.on_decline == "raise":
            raise GuardDeclined(verdict)
        text = self.decline_message or verdict.answer.strip() or DEFAULT_DECLINE_MESSAGE
        reply = AIMessage(
            content=text,
            name="tarsguard",
            response_metadata={
                "tarsguard_decision": verdict.decision.value,
                "tarsguard_confidence": verdict.confidence,
                "tarsguard_verdict_id": verdict.trace.verdict_id,
                "tarsguard_verdict": verdict.model_dump(mode="json"),
            },
        )
        return {"messages": [reply], "jump_to": "end"}

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Check the user's new turn; end the run with TARS's answer on a decline."""
        prompt = self._prompt(state)
        if prompt is None:
            return None
        guard = self.guard
        if isinstance(guard, Guard):
            verdict = guard.check(prompt, timeout=self.timeout, early_stop=guard.early_stop_when_screening)
        else:
            verdict = run_sync(guard.check(prompt, timeout=self.timeout, early_stop=guard.early_stop_when_screening))
        return self._update(verdict)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Check the user's new turn; end the run with TARS's answer on a decline."""
        prompt = self._prompt(state)
        if prompt is None:
            return None
        guard = self.guard
        if isinstance(guard, AsyncGuard):
            verdict = await guard.check(prompt, timeout=self.timeout, early_stop=guard.early_stop_when_screening)
        else:
            verdict = await asyncio.to_thread(
                guard.check, prompt, timeout=self.timeout, early_stop=guard.early_stop_when_screening
            )
        return self._update(verdict)
