"""Engine wrappers that compose: retries with backoff, and a cap on requests in flight.

``RetryingEngine(ConcurrencyLimitedEngine(engine, 64), RetryPolicy())`` retries outside the
cap, so a request waiting out its back-off does not hold a slot (unlike the published
pipeline, whose semaphore is held through back-off sleeps).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._engine import (
    Completion,
    Engine,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    SampleCallback,
    TextCallback,
)
from ._errors import EngineError
from ._logging import get_logger

log = get_logger("pacore_agents.engine")

T = TypeVar("T")


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


#: no retry: the policy of a call given none
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


async def with_retries(policy: RetryPolicy, rng: random.Random, attempt: Callable[[int], Awaitable[T]], *,
                       what: str = "request", on_retry: Callable[[], None] | None = None,
                       **context: Any) -> T:
    """``await attempt(n)`` for n = 1, 2, ... (the one retry loop of the library).

    A retryable ``EngineError``, or a ``TimeoutError`` (the attempt applies its own deadline,
    ``policy.timeout``, around what it counts), is retried after the policy's jittered back-off,
    at most ``policy.max_attempts`` attempts in all; the error that ends it is raised with
    ``attempts`` set. ``context`` goes into the "retrying" log line.
    """
    for n in range(1, policy.max_attempts + 1):
        try:
            return await attempt(n)
        except TimeoutError as exc:
            error = EngineError(f"{what} timed out after {policy.timeout}s", retryable=True)
            error.__cause__ = exc
        except EngineError as exc:
            error = exc
        error.attempts = n
        if not error.retryable or n == policy.max_attempts:
            raise error
        if on_retry is not None:
            on_retry()
        delay = policy.backoff(n, rng)
        log.warning("retrying", what=what, error=str(error), attempt=n, delay=round(delay, 3), **context)
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def with_attempts(out: list[Completion], attempt: int) -> list[Completion]:
    """Completions stamped with the attempt that produced them."""
    return out if attempt == 1 else [c.model_copy(update={"attempts": attempt}) for c in out]


class EngineWrapper(Engine):
    """Base of engines that wrap another: a pass-through that exposes everything the executor
    reads from an engine (``tests/test_wrappers.py`` checks every member of ``Engine``).

    The three ways to send (``generate``, ``generate_stream``, ``generate_samples``) all go
    through ``around(request, send)``, so a subclass that counts, limits or times requests
    overrides that one method and covers them all; the flags (``split_samples``,
    ``streams_samples``), ``info``, token counting, ``stats``, ``start`` and ``aclose`` are the
    inner engine's.
    """

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    async def around(self, request: GenerationRequest,
                     send: Callable[[], Awaitable[list[Completion]]]) -> list[Completion]:
        """Send ``request`` by ``await send()`` (the inner engine's call). Default: just that."""
        return await send()

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await self.around(request, lambda: self.inner.generate(request))

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        return await self.around(request, lambda: self.inner.generate_stream(request, on_text))

    async def generate_samples(self, request: GenerationRequest, on_sample: SampleCallback) -> list[Completion]:
        return await self.around(request, lambda: self.inner.generate_samples(request, on_sample))

    @property
    def info(self) -> EngineInfo:
        return self.inner.info

    @property
    def split_samples(self) -> bool:  # type: ignore[override]
        return self.inner.split_samples

    @property
    def streams_samples(self) -> bool:  # type: ignore[override]
        return self.inner.streams_samples

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.inner.truncate_tokens(text, max_tokens)

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        return self.inner.tokens_so_far(request)

    async def start(self) -> None:
        await self.inner.start()

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

    async def around(self, request: GenerationRequest,
                     send: Callable[[], Awaitable[list[Completion]]]) -> list[Completion]:
        async def attempt(n: int) -> list[Completion]:
            with anyio.fail_after(self.policy.timeout):
                return with_attempts(await send(), n)

        return await with_retries(self.policy, self._rng, attempt,
                                  nodes=[str(n) for n in request.metadata.nodes])

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        """Not retried: text already passed to ``on_text`` cannot be taken back."""
        return await self.inner.generate_stream(request, on_text)

    async def generate_samples(self, request: GenerationRequest, on_sample: SampleCallback) -> list[Completion]:
        """Retried like ``generate``; a sample reported by a failed attempt stands (it is not
        reported again, and it is the one returned)."""
        reported: dict[int, Completion] = {}

        def once(i: int, completion: Completion) -> None:
            if i not in reported:
                reported[i] = completion
                on_sample(i, completion)

        out = await self.around(request, lambda: self.inner.generate_samples(request, once))
        return [reported.get(i, c) for i, c in enumerate(out)]


class ConcurrencyLimitedEngine(EngineWrapper):
    """At most ``max_in_flight`` requests in flight through this wrapper, shared by all users."""

    def __init__(self, inner: Engine, max_in_flight: int = 64) -> None:
        super().__init__(inner)
        self.limiter = anyio.CapacityLimiter(max_in_flight)

    async def around(self, request: GenerationRequest,
                     send: Callable[[], Awaitable[list[Completion]]]) -> list[Completion]:
        async with self.limiter:
            return await send()
