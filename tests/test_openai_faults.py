"""OpenAIEngine + RetryingEngine against misbehaving local servers, and failures through run()."""

from __future__ import annotations

import time

import anyio
import pytest

from pacore_agents import (
    ChatMessage,
    EngineError,
    GenerationRequest,
    RetryingEngine,
    RetryPolicy,
    RunConfig,
    RunFailedError,
    SamplingParams,
    run,
)
from pacore_agents.engines._openai import OpenAIEngine
from tests._fake_servers import FakeServer

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


def req(n: int = 1) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content="what is 2+3?"),), n=n,
                             sampling=SamplingParams(max_tokens=8))


def retrying(url: str, *, timeout: float = 5.0, policy: RetryPolicy = FAST_RETRY) -> RetryingEngine:
    return RetryingEngine(OpenAIEngine(url, model="m", timeout=timeout), policy, seed=0)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_status_is_retried_then_fails_naming_endpoint_and_status(status: int) -> None:
    with FakeServer("status", status=status) as server:
        async with retrying(server.url) as engine:
            with anyio.fail_after(10), pytest.raises(EngineError) as excinfo:
                await engine.generate(req())
    err = excinfo.value
    assert len(server.chat_requests) == 3
    assert err.retryable and err.status == status and err.attempts == 3
    assert err.endpoint == server.url
    assert server.url in str(err) and f"HTTP {status}" in str(err)
    assert f"status={status}" in err.describe() and "attempts=3" in err.describe()


async def test_500_twice_then_ok_succeeds_on_the_third_attempt() -> None:
    with FakeServer("status", status=500, fail_times=2) as server:
        async with retrying(server.url) as engine:
            out = await engine.generate(req(n=2))
    assert len(server.chat_requests) == 3
    assert [c.attempts for c in out] == [3, 3]
    assert out[0].content == "sample 0: what is 2+3?"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_error_is_not_retried(status: int) -> None:
    with FakeServer("status", status=status) as server:
        async with retrying(server.url) as engine:
            with pytest.raises(EngineError) as excinfo:
                await engine.generate(req())
    err = excinfo.value
    assert len(server.chat_requests) == 1 and err.attempts == 1
    assert not err.retryable and err.status == status
    assert server.url in str(err) and f"HTTP {status}" in str(err)


async def test_dropped_connections_are_retried_then_fail() -> None:
    with FakeServer("drop") as server:
        async with retrying(server.url) as engine:
            with anyio.fail_after(10), pytest.raises(EngineError) as excinfo:
                await engine.generate(req())
    err = excinfo.value
    assert len(server.chat_requests) == 3 and err.attempts == 3
    assert err.retryable and err.status is None and err.endpoint == server.url
    assert "connection error" in str(err) and server.url in str(err)


async def test_dropped_connection_once_then_ok() -> None:
    with FakeServer("drop", fail_times=1) as server:
        async with retrying(server.url) as engine:
            (c,) = await engine.generate(req())
    assert c.attempts == 2 and len(server.chat_requests) == 2


async def test_hang_is_bounded_by_the_engine_timeout() -> None:
    with FakeServer("hang") as server:
        async with retrying(server.url, timeout=0.5,
                            policy=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)) as engine:
            start = time.monotonic()
            with anyio.fail_after(4), pytest.raises(EngineError) as excinfo:
                await engine.generate(req())
            elapsed = time.monotonic() - start
    err = excinfo.value
    assert err.retryable and err.attempts == 2 and err.endpoint == server.url
    assert "timed out" in str(err)
    assert len(server.chat_requests) == 2
    assert 1.0 <= elapsed < 3.0


async def test_hang_is_bounded_by_the_retry_policy_timeout() -> None:
    with FakeServer("hang") as server:
        async with retrying(server.url, timeout=60,
                            policy=RetryPolicy(max_attempts=2, initial_backoff=0.01,
                                               max_backoff=0.01, timeout=0.4)) as engine:
            with anyio.fail_after(3), pytest.raises(EngineError) as excinfo:
                await engine.generate(req())
    assert excinfo.value.attempts == 2 and "timed out" in str(excinfo.value)
    assert len(server.chat_requests) == 2


async def test_use_n_false_first_failure_cancels_the_rest() -> None:
    with FakeServer("status", status=400, fail_times=1) as server:
        engine = OpenAIEngine(server.url, model="m", use_n=False)
        async with engine:
            with anyio.fail_after(5), pytest.raises(EngineError) as excinfo:
                await engine.generate(req(n=4))
    assert excinfo.value.status == 400 and not excinfo.value.retryable


async def test_fewer_choices_than_n_is_an_error() -> None:
    class IgnoresN(FakeServer):
        def completion(self, body: dict[str, object]) -> dict[str, object]:
            return super().completion({**body, "n": 1})

    with IgnoresN() as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            with pytest.raises(EngineError, match="use_n=False"):
                await engine.generate(req(n=3))


# -- through run() --------------------------------------------------------------------------

RUN_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)


async def test_run_fails_with_run_failed_error_when_the_server_always_errs() -> None:
    with FakeServer("status", status=500) as server:
        async with OpenAIEngine(server.url, model="m", timeout=5) as engine:
            with anyio.fail_after(20), pytest.raises(RunFailedError) as excinfo:
                await run("what is 2+3?", "pacore-low", engine,
                          config=RunConfig(on_failure="fail", retry=RUN_RETRY,
                                           sampling=SamplingParams(max_tokens=8)))
    trace = excinfo.value.trace
    failed = [n for n in trace.nodes if n.status == "failed"]
    assert failed and all(n.error and "status=500" in n.error and server.url in n.error for n in failed)
    assert all(n.status in ("failed", "cancelled") for n in trace.nodes)
    assert trace.answer is None and trace.error


async def test_run_continue_records_the_failed_node_and_degrades() -> None:
    # round 1 sends 4 separate requests (merge off); the first to arrive gets a 400 (no retry)
    with FakeServer("status", status=400, fail_times=1) as server:
        async with OpenAIEngine(server.url, model="m", timeout=5) as engine:
            with anyio.fail_after(20):
                result = await run("what is 2+3?", "pacore-low", engine,
                                   config=RunConfig(on_failure="continue", retry=RUN_RETRY,
                                                    merge_identical=False,
                                                    sampling=SamplingParams(max_tokens=8)))
    trace = result.trace
    failed = [n for n in trace.nodes if n.error]
    assert len(failed) == 1 and failed[0].round == 1
    assert "HTTP 400" in failed[0].error and server.url in failed[0].error
    assert trace.degraded and result.answer is not None
    assert len(server.chat_requests) == 4 + 1


async def test_run_with_fail_policy_stops_at_one_failed_node() -> None:
    with FakeServer("status", status=400, fail_times=1) as server:
        async with OpenAIEngine(server.url, model="m", timeout=5) as engine:
            with anyio.fail_after(20), pytest.raises(RunFailedError) as excinfo:
                await run("what is 2+3?", "pacore-low", engine,
                          config=RunConfig(on_failure="fail", retry=RUN_RETRY, merge_identical=False,
                                           sampling=SamplingParams(max_tokens=8)))
    trace = excinfo.value.trace
    assert "status=400" in (trace.error or "")
    (failed,) = [n for n in trace.nodes if n.status == "failed"]
    assert failed.round == 1
    assert all(n.status == "cancelled" and not n.content for n in trace.nodes if n.round == 2)
