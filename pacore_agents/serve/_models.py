"""Request and response bodies of the OpenAI chat API, as ``pacore serve`` speaks it.

Contract: a request body is validated here (pydantic v2); every error names the field. Fields
a PaCoRe run cannot honour (tools, logprobs, a JSON response format, logit bias) are rejected,
fields that do not change the answer (``user``, ``metadata``, ...) are accepted and ignored.
PaCoRe knobs sit under ``pacore``: unknown keys there are errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pacore_agents._references import OrderPolicy

#: request fields a PaCoRe run cannot honour, and the value that is accepted as "not used"
UNSUPPORTED_FIELDS: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
}


class TextPart(BaseModel):
    """A text part of a message's content list (the only part type a PaCoRe run can read)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class InputMessage(BaseModel):
    """A chat message of the request. ``developer`` is read as ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class PacoreKnobs(BaseModel):
    """PaCoRe's own knobs (the request body's ``pacore`` object)."""

    model_config = ConfigDict(extra="forbid")

    widths: list[int] | None = Field(default=None, min_length=1, description="all-to-all widths; a sink round is appended")
    params: dict[str, Any] | None = Field(default=None, description="topology parameter overrides")
    order: OrderPolicy | None = None
    on_failure: Literal["fail", "continue"] | None = None
    max_message_tokens: int | None = Field(default=None, gt=0)

    @field_validator("widths")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(w <= 0 for w in value):
            raise ValueError("every width must be a positive integer")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``max_tokens`` (or ``max_completion_tokens``) bounds
    each trajectory; ``n`` runs n independent PaCoRe runs."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    pacore: PacoreKnobs = PacoreKnobs()

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        for name, value in (self.model_extra or {}).items():
            if name in UNSUPPORTED_FIELDS and value not in UNSUPPORTED_FIELDS[name]:
                raise ValueError(f"{name} is not supported by a PaCoRe model: remove it")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ: give one of them")
        if not any(m.role == "user" and m.text.strip() for m in self.messages):
            raise ValueError("messages need a user message with content (the problem)")
        return self

    @property
    def per_trajectory_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_tuple(self) -> tuple[str, ...] | None:
        if self.stop is None:
            return None
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return stops or None


# ---- responses --------------------------------------------------------------------------------

class RoundUsage(BaseModel):
    """Per-round figures, summed over the request's runs."""

    round: int
    nodes: int = 0
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class PacoreUsage(BaseModel):
    runs: int
    effective_ttc: int
    rounds: list[RoundUsage]
    trace: str = Field(description="GET /v1/pacore/traces/{trace} returns the runs' traces")


class CompletionUsage(BaseModel):
    """``prompt_tokens`` / ``completion_tokens``: the effective test-time compute, every node of
    every run (prompt tokens are counted per request, as the engine prefilled them)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    pacore: PacoreUsage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "pacore"
    description: str = ""
    widths: list[int] = Field(default_factory=list)
    engines: list[str] = Field(default_factory=list, description="the named engines its roles run on")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
