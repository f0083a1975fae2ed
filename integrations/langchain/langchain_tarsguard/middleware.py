"""GuardMiddleware: screens the user's turn before an agent's model is called (needs ``langchain>=1``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, hook_config
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.runtime import Runtime
from tarsguard import AsyncGuard, ConfigurationError, Guard, Timeout, Verdict
from tarsguard.middleware._core import DEFAULT_SCOPE, SCOPES, Part, Screener, decline_text

from ._errors import GuardDeclined
from ._messages import Scope, screened_parts

__all__ = ["GuardMiddleware"]


class GuardMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Agent middleware for ``create_agent``: checks each new user turn with TARS before the model sees it.

    ``screen`` chooses what is checked when a user turn arrives: every part of the conversation the model
    reads (``"all"``, the default: system, user and assistant turns, tool results, tool calls and names, each
    on its own, repeated ones from a cache), the conversation up to the latest user turn and what it leaves out
    (``"conversation"``), or only the latest user turn (``"last"``). When the verdict does not allow it, the
    run ends with TARS's own complete decline as the last message (else tarsguard's
    ``DEFAULT_DECLINE_MESSAGE``; or ``decline_message``; or ``GuardDeclined`` is raised with
    ``on_decline="raise"``). Checks run for a turn whose latest message is the user's, so tool rounds of an
    allowed turn run unchecked.
    The reply carries the verdict in ``response_metadata`` (``tarsguard_decision``, ``tarsguard_verdict``).
    """

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        *,
        screen: Scope = DEFAULT_SCOPE,
        on_decline: str = "answer",
        decline_message: str | None = None,
        timeout: float | Timeout | None = None,
    ) -> None:
        if not isinstance(guard, (Guard, AsyncGuard)):
            raise ConfigurationError(f"guard must be a tarsguard Guard or AsyncGuard, got {type(guard).__name__}")
        if on_decline not in ("answer", "raise"):
            raise ConfigurationError(f'on_decline must be "answer" or "raise"; got {on_decline!r}')
        if screen not in SCOPES:
            raise ConfigurationError(f"screen must be one of {', '.join(SCOPES)}; got {screen!r}")
        super().__init__()
        self.guard = guard
        self.screen: Scope = screen
        self.on_decline = on_decline
        self.decline_message = decline_message
        self.timeout = timeout
        self._screener = Screener(guard, timeout, fail_closed=False)

    @property
    def name(self) -> str:
        """``TarsGuard``: the node name in the agent's graph."""
        return "TarsGuard"

    def _prompt(self, state: AgentState[Any]) -> list[Part] | None:
        messages: Sequence[BaseMessage] = state["messages"]
        if not messages or messages[-1].type != "human":
            return None
        return screened_parts(messages, scope=self.screen)

    def _update(self, verdict: Verdict) -> dict[str, Any] | None:
        if verdict.allowed:
            return None
        if self.on_decline == "raise":
            raise GuardDeclined(verdict)
        text = decline_text(verdict, self.decline_message or None)
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
        parts = self._prompt(state)
        return None if parts is None else self._update(self._screener.screen(parts))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Check the user's new turn; end the run with TARS's answer on a decline."""
        parts = self._prompt(state)
        return None if parts is None else self._update(await self._screener.ascreen(parts))
