"""Requests of several samples, released sample by sample: the executor's two ways.

A request with ``n > 1`` holds n sequences of the window. Sent whole, it would hold them until
its slowest sample ends; these helpers free each sample's slot when that sample ends:

- ``generate_split`` (engines with ``split_samples``): n requests of one sample, sample i seeded
  ``seed + i`` (as vLLM seeds the children of an n request), each admitted, retried and released
  on its own.
- ``generate_streamed`` (engines with ``streams_samples``): one request of n samples, which the
  engine reports as they end (``Engine.generate_samples``): one prompt to send, tokenize and
  schedule instead of n. If it fails with a retryable error, the samples it did not finish are
  sent again, one request each (seed + i), with the attempts left; a sample keeps the attempt
  that produced it.

Both call ``on_sample(i, completion)`` as sample i ends (before its slot is released, so the
work its result makes ready queues first in the streamed case) and return the samples in order;
the first failure cancels the rest and is raised (samples already reported stand).
These are the executor's own helpers: they use its admission and accounting directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._engine import (
    TRUSTED_METADATA,
    TRUSTED_REQUEST,
    TRUSTED_SAMPLING,
    Completion,
    GenerationRequest,
    SampleCallback,
)
from ._errors import EngineError
from ._priority import Priority
from ._wrappers import ONE_ATTEMPT, RetryPolicy, with_attempts, with_retries

if TYPE_CHECKING:
    from ._executor import Executor


def sample_request(request: GenerationRequest, i: int) -> GenerationRequest:
    """Sample ``i`` of ``request`` as a request of its own (n=1, seeded ``seed + i``)."""
    seed = request.sampling.seed
    return TRUSTED_REQUEST.copy(
        request, n=1,
        sampling=TRUSTED_SAMPLING.copy(request.sampling, seed=None if seed is None else seed + i),
        metadata=TRUSTED_METADATA.copy(request.metadata, nodes=request.metadata.nodes[i:i + 1]))


async def each_sample(indices: list[int], send: SampleCallback | None,
                one: Callable[[int], Awaitable[Completion]]) -> None:
    """``one(i)`` for every index at once; ``send(i, result)`` as each ends; the first
    ``EngineError`` cancels the others and is raised. (Also the OpenAI engine's ``use_n=False``.)"""
    errors: list[EngineError] = []

    async def run(i: int) -> None:
        try:
            completion = await one(i)
        except EngineError as exc:
            errors.append(exc)
            tg.cancel_scope.cancel()
            return
        if send is not None:
            send(i, completion)

    async with anyio.create_task_group() as tg:
        for i in indices:
            tg.start_soon(run, i)
    if errors:
        raise errors[0]


async def generate_split(executor: Executor, request: GenerationRequest, *, priority: Priority,
                         retry: RetryPolicy | None, on_sample: SampleCallback | None) -> list[Completion]:
    """n requests of one sample, each admitted and released on its own (module docstring)."""
    results: list[Completion | None] = [None] * request.n

    async def one(i: int) -> Completion:
        return (await executor.generate(sample_request(request, i), priority=priority.sub(i), retry=retry))[0]

    def ended(i: int, completion: Completion) -> None:
        results[i] = completion
        if on_sample is not None:
            on_sample(i, completion)

    await each_sample(list(range(request.n)), ended, one)
    return [c for c in results if c is not None]


async def generate_streamed(executor: Executor, request: GenerationRequest, *, priority: Priority,
                            retry: RetryPolicy | None, held: int,
                            on_sample: SampleCallback | None) -> list[Completion]:
    """One request of n samples, each released as it ends (module docstring). ``held``: the
    sequences already admitted for it (0: wait for admission here)."""
    policy = retry or ONE_ATTEMPT
    results: list[Completion | None] = [None] * request.n
    slots = [held]

    def ended(i: int, completion: Completion, attempt: int) -> None:
        if results[i] is not None:  # an engine reporting a sample twice: keep the first
            return
        results[i] = stamped = with_attempts([completion], attempt)[0]
        if on_sample is not None:
            on_sample(i, stamped)
        if slots[0]:
            slots[0] -= 1
            executor.release(1)

    async def attempt(k: int) -> list[Completion]:
        rest = [i for i, c in enumerate(results) if c is None]
        if not slots[0]:  # admission is waited for outside the deadline
            slots[0] = await executor.acquire(priority, len(rest))
        try:
            if k == 1:
                out = await executor._send(request, policy.timeout, None, lambda i, c: ended(i, c, 1))
                for i, completion in enumerate(out):  # any the engine did not report
                    ended(i, completion, 1)
            else:
                async def one(i: int) -> Completion:
                    return (await executor._send(sample_request(request, i), policy.timeout, None))[0]

                await each_sample(rest, lambda i, c: ended(i, c, k), one)
        finally:  # what is still held goes back: a back-off holds no slot
            executor.release(slots[0])
            slots[0] = 0
        return [c for c in results if c is not None]

    try:
        return await with_retries(policy, executor._rng, attempt, on_retry=executor.count_retry,
                                  nodes=[str(n) for n in request.metadata.nodes])
    finally:
        executor.release(slots[0])
