"""Engine wrappers that compose: retries with backoff, and a cap on requests in flight.

``RetryingEngine(ConcurrencyLimitedEngine(engine, 64), RetryPolicy())`` retries outside the
cap, so a request waiting out its back-off does not hold a slot (unlike the published
pipeline, whose semaphore is held through back-off sleeps).
"""

from __future__ import annotations

import random

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._engine import Completion, Engine, EngineInfo, EngineStats, GenerationRequest, TextCallback
from ._errors import EngineError
from ._logging import get_logger

log = get_logger("pacore_agents.engine")


class RetryPolicy(BaseModel):
    """Bounded retries with exponential back-off and full jitter, for retryable errors only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1)
    initial_backoff: float = Field(default=0.5, ge=0)
    max_backoff: float = Field(default=8.0, ge=0)
    timeout: float | None = Field(default=None, gt=0, description="per attempt, seconds")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to sleep after failed attempt ``attempt`` (1-based): full jitter."""
        cap = min(self.max_backoff, self.initial_backoff * (2 ** (attempt - 1)))
        return rng.uniform(0, cap)


class EngineWrapper(Engine):
    """Base of engines that wrap another: everything but ``generate`` is delegated."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def info(self) -> EngineInfo:
        return self.inner.info

    @property
    def split_samples(self) -> bool:  # type: ignore[override]
        return self.inner.split_samples

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.inner.truncate_tokens(text, max_tokens)

    async def start(self) -> None:
        await self.inner.start()

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        return await self.inner.generate_stream(request, on_text)

    async def stats(self) -> EngineStats | None:
        return await self.inner.stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


class RetryingEngine(EngineWrapper):
    """Retries retryable ``EngineError``s (and per-attempt timeouts) under a ``RetryPolicy``.

    Completions carry the number of attempts; the final error carries it too.
    """

    def __init__(self, inner: Engine, policy: RetryPolicy | None = None, *, seed: int | None = None):
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            try:
                if policy.timeout is not None:
                    with anyio.fail_after(policy.timeout):
                        out = await self.inner.generate(request)
                else:
                    out = await self.inner.generate(request)
            except TimeoutError as exc:
                error = EngineError(f"request timed out after {policy.timeout}s", retryable=True)
                error.__cause__ = exc
            except EngineError as exc:
                error = exc
            else:
                return [c.model_copy(update={"attempts": attempt}) for c in out]
            error.attempts = attempt
            if not error.retryable or attempt == policy.max_attempts:
                raise error
            delay = policy.backoff(attempt, self._rng)
            log.warning("retrying", error=str(error), attempt=attempt, delay=round(delay, 3),
                        nodes=[str(n) for n in request.metadata.nodes])
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


class ConcurrencyLimitedEngine(EngineWrapper):
    """At most ``max_in_flight`` requests in flight through this wrapper, shared by all users."""

    def __init__(self, inner: Engine, max_in_flight: int = 64) -> None:
        super().__init__(inner)
        self.limiter = anyio.CapacityLimiter(max_in_flight)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        async with self.limiter:
            return await self.inner.generate(request)
