"""The one pluggable backend interface: an ``Engine`` turns a ``GenerationRequest`` into n
``Completion``s.

Contract:
- ``generate`` returns exactly ``request.n`` completions, in sample order, or raises
  ``EngineError`` (third-party errors are mapped with ``raise ... from``).
- It is cancellable: cancelling the calling task cancels the request in flight.
- ``seed`` (when set) makes a request reproducible on engines that support seeding.
- ``count_tokens`` is used to budget prompts; engines with a tokenizer override it.
- ``tokens_so_far`` answers for a request the caller cancelled (``metadata.cancellable``):
  the completion tokens it had generated, as far as the engine saw them, or None.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._ids import NodeId, ProblemId, Round
from ._messages import ChatMessage
from ._trusted import Trusted


class SamplingParams(BaseModel):
    """Sampling parameters of one request. ``None`` means the engine's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def merged(self, override: SamplingParams | None) -> SamplingParams:
        """These params with every field that ``override`` sets replacing ours."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class RequestMetadata(BaseModel):
    """Who a request is for. Engines use ``problem_id`` for endpoint affinity; ``unit`` is the
    caller's label for the unit of work (studies: ``problem|arm|sample``), for logs and tests."""

    model_config = ConfigDict(frozen=True)

    problem_id: ProblemId = ProblemId("problem")
    round: Round | None = None
    nodes: tuple[NodeId, ...] = ()
    unit: str | None = None
    #: scheduling priority, lower runs sooner (vLLM's convention); engines that take one
    #: (AsyncLLM ``priority``, a server started with ``--scheduling-policy priority``) pass it on
    priority: int = 0
    #: the caller may cancel this request (a quorum's straggler, n = 1) and then ask
    #: ``Engine.tokens_so_far``: engines that can count its tokens as they arrive do (vLLM: delta
    #: outputs; OpenAI servers: a streamed request with per-chunk usage); False changes nothing
    cancellable: bool = False


class GenerationRequest(BaseModel):
    """n samples of one chat prompt."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[ChatMessage, ...]
    n: int = Field(default=1, ge=1)
    sampling: SamplingParams = SamplingParams()
    metadata: RequestMetadata = RequestMetadata()


TRUSTED_SAMPLING = Trusted(SamplingParams)
TRUSTED_METADATA = Trusted(RequestMetadata)
TRUSTED_REQUEST = Trusted(GenerationRequest)


class Usage(BaseModel):
    """Token usage of one completion.

    ``prompt_tokens`` is the prompt this sample saw; in a request with n > 1 the prompt is
    prefilled once and shared, so summing it over samples over-counts prefill work.
    ``cached_tokens`` is the part of the prompt served from the prefix cache.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


FinishReason = str  # "stop", "length", "abort", or what the engine reports


class Completion(BaseModel):
    """One sample: its content, its separated reasoning (if the engine splits it), usage."""

    content: str
    reasoning: str | None = None
    finish_reason: FinishReason | None = None
    usage: Usage = Usage()
    attempts: int = 1
    notes: dict[str, Any] = Field(default_factory=dict)


class EngineInfo(BaseModel):
    """What an engine is, for traces and budgeting."""

    name: str
    model: str | None = None
    max_context: int | None = None
    #: sequences the engine can run at once (the executor's admission window); None = unknown
    max_sequences: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class EngineStats(BaseModel):
    """Engine-side counters, cumulative since the engine started (None = not reported).

    ``prefill_computed_tokens`` / ``prefill_cached_tokens``: prompt tokens the engine computed /
    served from its prefix cache (a vLLM server's ``prompt_tokens_by_source_total``; AsyncLLM's
    own stats in-process). ``running`` / ``waiting``: sequences now in the engine's batch / queue.
    """

    source: str
    prefill_computed_tokens: int | None = None
    prefill_cached_tokens: int | None = None
    running: int | None = None
    waiting: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def prefill_between(before: EngineStats | None, after: EngineStats | None) -> dict[str, int | None]:
    """Computed and cached prefill tokens from ``before`` to ``after`` (None where either
    reading lacks the counter)."""
    out: dict[str, int | None] = {}
    for name in ("prefill_computed_tokens", "prefill_cached_tokens"):
        a, b = getattr(before, name, None), getattr(after, name, None)
        out[name] = None if a is None or b is None else b - a
    return out


TextCallback = Callable[[str], None]
#: ``on_sample(i, completion)``: sample ``i`` of a request has ended
SampleCallback = Callable[[int, Completion], None]


class Engine(ABC):
    """Base class of every engine. Subclasses implement ``generate``; async context manager.

    How an ``n > 1`` request reaches the engine, so that each sample frees its slot in the
    executor's window when it ends, not when its slowest sibling does:
    ``split_samples``: as ``n`` requests of one sample (sample i seeded ``seed + i``);
    ``streams_samples``: as one request whose samples ``generate_samples`` reports as they end
    (one prompt to send, tokenize and schedule instead of n). Neither: one request, released whole.
    """

    split_samples: bool = False
    streams_samples: bool = False

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Return exactly ``request.n`` completions, or raise ``EngineError``."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=type(self).__name__)

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        """``generate`` for ``n == 1``, calling ``on_text(delta)`` (on the event loop, must not
        block) as the text is generated; the deltas concatenate to the completion's content.
        Default: ``generate``, then one call with the whole content. Engines that stream
        (vLLM, OpenAI servers) override it."""
        out = await self.generate(request)
        for completion in out[:1]:
            if completion.content:
                on_text(completion.content)
        return out

    async def generate_samples(self, request: GenerationRequest, on_sample: SampleCallback) -> list[Completion]:
        """``generate``, calling ``on_sample(i, completion)`` (on the event loop, must not block)
        once per sample as it ends, in the order they end; returns them in sample order. On an
        error, the samples already reported stand and the error is raised. Default:
        ``generate``, then every sample in order. Engines with ``streams_samples`` override it."""
        out = await self.generate(request)
        for i, completion in enumerate(out):
            on_sample(i, completion)
        return out

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        """The completion tokens generated for ``request`` (n = 1, the very object sent) before
        it was cancelled, or None if the engine cannot say (the default). A count is what the
        engine had seen (tokens still in flight from a server or an engine core are not in it);
        it is never an estimate. A quorum counts it in effective TTC."""
        return None

    async def stats(self) -> EngineStats | None:
        """Engine-side counters (see ``EngineStats``), or None if the engine reports none."""
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``. Default: a conservative estimate (1 token per 3 characters)."""
        return (len(text) + 2) // 3

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """Keep the LAST ``max_tokens`` tokens of ``text`` (a conclusion sits at the end)."""
        if max_tokens <= 0:
            return ""
        if self.count_tokens(text) <= max_tokens:
            return text
        return text[-max_tokens * 3 :]

    async def start(self) -> None:
        """Make the engine ready (load the model, discover the server). Idempotent; ``run``
        awaits it before planning, so ``info.max_context`` and ``count_tokens`` are exact from
        round 1. Engines that need no start keep this no-op."""
        return None

    async def aclose(self) -> None:
        """Release resources (engine processes, HTTP pools). Idempotent."""
        return None

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Tally:
    """The completion tokens seen so far of one watched request (None: not known yet)."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: int | None) -> None:
        self.tokens = tokens


class CancelledTokens:
    """``Engine.tokens_so_far`` for engines that count a request's tokens as they arrive.

    ``watch(request, start)`` gives a ``Tally`` (starting at ``start``) that the engine updates
    while its attempt runs. If the attempt is cancelled (only then) its count is kept (if it is
    still None, what ``unseen()`` says then: e.g. 0 once the engine knows it would have seen any) for
    ``take(request)``, which returns it once; a new attempt of the same request starts afresh.
    Kept counts are keyed by the request object and dropped with it (a weak reference), so
    nothing accumulates when no one asks."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[weakref.ref[GenerationRequest], int | None]] = {}

    @contextmanager
    def watch(self, request: GenerationRequest, start: int | None,
              unseen: Callable[[], int | None] | None = None) -> Iterator[Tally]:
        key = id(request)
        self._kept.pop(key, None)
        tally = Tally(start)
        try:
            yield tally
        except anyio.get_cancelled_exc_class():
            ref = weakref.ref(request, lambda _: self._kept.pop(key, None))
            tokens = tally.tokens if tally.tokens is not None or unseen is None else unseen()
            self._kept[key] = (ref, tokens)
            raise

    def take(self, request: GenerationRequest) -> int | None:
        """The count of ``request``'s cancelled attempt (once), or None."""
        entry = self._kept.pop(id(request), None)
        return entry[1] if entry is not None and entry[0]() is request else None
