"""Every engine wrapper exposes everything the executor reads from the engine it wraps (issue 23,
item 7): each public member of ``Engine`` is checked, generically, for every ``EngineWrapper``
subclass in the package (serve's ``CountingEngine`` included), against the unwrapped engine."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from pacore_agents import (
    Completion,
    ConcurrencyLimitedEngine,
    Engine,
    EngineError,
    EngineInfo,
    EngineStats,
    EngineWrapper,
    FunctionEngine,
    GenerationRequest,
    RetryingEngine,
    RetryPolicy,
)
from pacore_agents._messages import ChatMessage
from pacore_agents.serve._metrics import CountingEngine, ServerMetrics


class Probe(FunctionEngine):
    """An engine that records which of its members were used, with every flag settable."""

    def __init__(self, *, streams: bool, split: bool) -> None:
        super().__init__(lambda req: [f"s{i}" for i in range(req.n)], name="probe", max_context=321,
                         max_sequences=7, split_samples=split)
        self.streams_samples = streams
        self.calls: list[str] = []

    async def generate_stream(self, request: GenerationRequest, on_text: Callable[[str], None]) -> list[Completion]:
        self.calls.append("generate_stream")
        on_text("s")
        on_text("0")
        return await FunctionEngine.generate(self, request)

    async def generate_samples(self, request: GenerationRequest,
                               on_sample: Callable[[int, Completion], None]) -> list[Completion]:
        self.calls.append("generate_samples")
        out = await FunctionEngine.generate(self, request)
        for i in reversed(range(len(out))):  # in the order they end: the last first
            on_sample(i, out[i])
        return out

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.calls.append("generate")
        return await super().generate(request)

    async def stats(self) -> EngineStats | None:
        self.calls.append("stats")
        return EngineStats(source="probe", running=3)

    def count_tokens(self, text: str) -> int:
        return 1000 + len(text)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return f"cut{max_tokens}:{text}"

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        return 40 + request.n

    async def start(self) -> None:
        self.calls.append("start")

    async def aclose(self) -> None:
        self.calls.append("aclose")


WRAPPERS: dict[type[EngineWrapper], Callable[[Engine], EngineWrapper]] = {
    EngineWrapper: EngineWrapper,
    RetryingEngine: lambda e: RetryingEngine(e, RetryPolicy(max_attempts=2, initial_backoff=0)),
    ConcurrencyLimitedEngine: lambda e: ConcurrencyLimitedEngine(e, 2),
    CountingEngine: lambda e: CountingEngine(e, ServerMetrics()),
}


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_wrapper_of_the_package_is_checked() -> None:
    for module in ("pacore_agents._wrappers", "pacore_agents.serve._metrics"):
        importlib.import_module(module)
    package = {c for c in _subclasses(EngineWrapper) if c.__module__.startswith("pacore_agents")}
    assert package | {EngineWrapper} == set(WRAPPERS)


def _request(n: int) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content="q"),), n=n)


Check = Callable[[Engine, Probe], Awaitable[None]]


async def _flags(wrapper: Engine, inner: Probe) -> None:
    for streams, split in ((True, False), (False, True), (False, False)):
        inner.streams_samples, inner.split_samples = streams, split
        assert (wrapper.streams_samples, wrapper.split_samples) == (streams, split)


async def _info(wrapper: Engine, inner: Probe) -> None:
    assert wrapper.info == inner.info == EngineInfo(name="probe", model="<lambda>", max_context=321, max_sequences=7)


async def _generate(wrapper: Engine, inner: Probe) -> None:
    out = await wrapper.generate(_request(2))
    assert [c.content for c in out] == ["s0", "s1"] and inner.calls[-1] == "generate"


async def _generate_stream(wrapper: Engine, inner: Probe) -> None:
    texts: list[str] = []
    out = await wrapper.generate_stream(_request(1), texts.append)
    assert texts == ["s", "0"] and [c.content for c in out] == ["s0"]
    assert "generate_stream" in inner.calls  # streamed by the inner engine, not sent whole


async def _generate_samples(wrapper: Engine, inner: Probe) -> None:
    ended: list[int] = []
    out = await wrapper.generate_samples(_request(3), lambda i, c: ended.append(i))
    assert ended == [2, 1, 0] and [c.content for c in out] == ["s0", "s1", "s2"]
    assert "generate_samples" in inner.calls  # reported as they end, by the inner engine


async def _stats(wrapper: Engine, inner: Probe) -> None:
    assert await wrapper.stats() == EngineStats(source="probe", running=3)


async def _count_tokens(wrapper: Engine, inner: Probe) -> None:
    assert wrapper.count_tokens("abc") == inner.count_tokens("abc") == 1003


async def _truncate_tokens(wrapper: Engine, inner: Probe) -> None:
    assert wrapper.truncate_tokens("abc", 2) == "cut2:abc"


async def _tokens_so_far(wrapper: Engine, inner: Probe) -> None:
    assert wrapper.tokens_so_far(_request(1)) == inner.tokens_so_far(_request(1)) == 41


async def _start(wrapper: Engine, inner: Probe) -> None:
    await wrapper.start()
    assert inner.calls[-1] == "start"


async def _aclose(wrapper: Engine, inner: Probe) -> None:
    await wrapper.aclose()
    assert inner.calls[-1] == "aclose"


CHECKS: dict[str, Check] = {
    "split_samples": _flags, "streams_samples": _flags, "info": _info, "generate": _generate,
    "generate_stream": _generate_stream, "generate_samples": _generate_samples, "stats": _stats,
    "count_tokens": _count_tokens, "truncate_tokens": _truncate_tokens, "start": _start, "aclose": _aclose,
    "tokens_so_far": _tokens_so_far,
}


def test_every_member_of_the_engine_interface_is_checked() -> None:
    members = {name for name in dir(Engine) if not name.startswith("_")}
    assert members == set(CHECKS), "a new Engine member needs a check here (and in EngineWrapper)"


@pytest.mark.parametrize("member", sorted(CHECKS))
@pytest.mark.parametrize("wrapper", list(WRAPPERS), ids=lambda c: c.__name__)
def test_the_wrapper_exposes_the_member(wrapper: type[EngineWrapper], member: str) -> None:
    for streams, split in ((True, False), (False, True)):
        inner = Probe(streams=streams, split=split)
        wrapped = WRAPPERS[wrapper](inner)
        anyio.run(CHECKS[member], wrapped, inner)
        # wrappers compose: the same through two of them
        inner = Probe(streams=streams, split=split)
        anyio.run(CHECKS[member], WRAPPERS[wrapper](ConcurrencyLimitedEngine(inner, 3)), inner)


def test_a_retried_streamed_request_reports_each_sample_once() -> None:
    """RetryingEngine retries ``generate_samples``; a sample reported before the failure
    stands (reported once, and the one returned)."""
    attempts: list[int] = []

    class Cut(Probe):
        async def generate_samples(self, request: GenerationRequest,
                                   on_sample: Callable[[int, Completion], None]) -> list[Completion]:
            attempts.append(1)
            on_sample(0, Completion(content=f"first-{len(attempts)}"))
            if len(attempts) == 1:
                raise EngineError("stream cut", retryable=True)
            return [Completion(content=f"first-{len(attempts)}"), Completion(content="second")]

    ended: list[tuple[int, str]] = []
    engine = RetryingEngine(Cut(streams=True, split=False), RetryPolicy(max_attempts=2, initial_backoff=0))
    out: list[Any] = anyio.run(engine.generate_samples, _request(2), lambda i, c: ended.append((i, c.content)))
    assert ended == [(0, "first-1")] and [c.content for c in out] == ["first-1", "second"]
    assert len(attempts) == 2


def test_the_concurrency_limit_covers_every_way_of_sending() -> None:
    """A streamed request holds a slot of ``ConcurrencyLimitedEngine`` as a whole one does."""
    inner = Probe(streams=True, split=False)
    engine = ConcurrencyLimitedEngine(inner, 1)
    seen: list[int] = []

    async def main() -> None:
        release = anyio.Event()

        async def hold() -> None:
            async with engine.limiter:  # the only slot is taken
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await anyio.sleep(0.01)
            with anyio.move_on_after(0.2):
                await engine.generate_samples(_request(2), lambda i, c: seen.append(i))
            with anyio.move_on_after(0.2):
                await engine.generate_stream(_request(1), lambda t: None)
            release.set()

    anyio.run(main)
    assert seen == [] and inner.calls == []
