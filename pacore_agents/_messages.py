"""Chat messages and problems: what an agent is asked."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._errors import ConfigError
from ._ids import ProblemId
from ._trusted import Trusted

ChatRole = Literal["system", "user", "assistant", "tool"]


class ChatMessage(BaseModel):
    """One chat message, as sent to an engine."""

    model_config = ConfigDict(frozen=True)

    role: ChatRole
    content: str


_TRUSTED_MESSAGE = Trusted(ChatMessage)


class Problem(BaseModel):
    """A problem: its chat messages (the last user message is the problem statement).

    PaCoRe replaces the content of the LAST user message with the synthesis prompt in rounds
    after the first; earlier messages are sent unchanged.
    """

    model_config = ConfigDict(frozen=True)

    id: ProblemId = ProblemId("problem")
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    answer: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, value: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        if not any(m.role == "user" for m in value):
            raise ValueError("a problem needs at least one user message")
        last_user = next(m for m in reversed(value) if m.role == "user")
        if not last_user.content.strip():
            raise ValueError("the problem's last user message is empty")
        return value

    @cached_property
    def last_user_index(self) -> int:
        return max(i for i, m in enumerate(self.messages) if m.role == "user")

    @cached_property
    def statement(self) -> str:
        """The content of the last user message: PaCoRe's ``original_prompt``."""
        return self.messages[self.last_user_index].content

    def with_statement(self, content: str) -> tuple[ChatMessage, ...]:
        """The messages with the last user message's content replaced by ``content``."""
        idx = self.last_user_index
        msgs = list(self.messages)
        msgs[idx] = _TRUSTED_MESSAGE.build({"role": "user", "content": content})
        return tuple(msgs)

    @classmethod
    def coerce(
        cls, problem: str | Problem | Sequence[ChatMessage | dict[str, Any]], **kw: Any
    ) -> Problem:
        """Make a ``Problem`` from a string, a list of chat messages, or a ``Problem``."""
        if isinstance(problem, Problem):
            return problem
        if isinstance(problem, str):
            if not problem.strip():
                raise ConfigError("the problem is empty: give the problem text to solve")
            return cls(messages=(ChatMessage(role="user", content=problem),), **kw)
        try:
            msgs = tuple(
                m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in problem
            )
            return cls(messages=msgs, **kw)
        except ValueError as exc:
            raise ConfigError(f"bad problem messages: {exc}") from exc
