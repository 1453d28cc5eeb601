"""OpenAIEngine against local fake servers: n, reasoning, usage, affinity, model discovery, key."""

from __future__ import annotations

import logging
import socket
import threading

import anyio
import httpx2 as httpx
import openai
import pytest
from pydantic import SecretStr

from pacore_agents import (
    ChatMessage,
    ConfigError,
    EngineError,
    GenerationRequest,
    ProblemId,
    RequestMetadata,
    RetryingEngine,
    RetryPolicy,
    RunConfig,
    SamplingParams,
    run,
)
from pacore_agents.engines import OpenAIOptions, create_engine
from pacore_agents.engines._openai import OpenAIEngine
from tests._fake_servers import FakeServer

pytestmark = pytest.mark.anyio

SECRET = "sk-test-very-secret-key-1234567890"


def req(text: str = "what is 2+3?", n: int = 1, problem: str = "p", **sampling: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),),
        n=n,
        sampling=SamplingParams.model_validate(sampling),
        metadata=RequestMetadata(problem_id=ProblemId(problem)),
    )


async def test_n_in_one_request_returns_choices_in_order() -> None:
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m", seed_requests=True) as engine:
            out = await engine.generate(req(n=3, seed=10, max_tokens=32))
    assert [c.content for c in out] == [f"sample {s}: what is 2+3?" for s in (10, 11, 12)]
    assert len(server.chat_requests) == 1
    body = server.chat_requests[0].body
    assert body is not None
    assert body["n"] == 3 and body["seed"] == 10 and body["max_tokens"] == 32
    assert body["return_token_ids"] is True


async def test_use_n_false_sends_n_requests_with_seed_plus_i() -> None:
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m", use_n=False, seed_requests=True) as engine:
            out = await engine.generate(req(n=3, seed=10))
    assert [c.content for c in out] == [f"sample {s}: what is 2+3?" for s in (10, 11, 12)]
    bodies = [r.body for r in server.chat_requests]
    assert len(bodies) == 3
    assert all(b is not None and b["n"] == 1 and "return_token_ids" not in b for b in bodies)
    assert sorted(b["seed"] for b in bodies if b is not None) == [10, 11, 12]


async def test_sampling_params_are_sent() -> None:
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            await engine.generate(req(temperature=0.7, top_p=0.9, top_k=20, stop=("END",),
                                      presence_penalty=0.5, frequency_penalty=0.25, max_tokens=8))
    body = server.chat_requests[0].body
    assert body is not None
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["top_k"] == 20
    assert body["stop"] == ["END"] and body["presence_penalty"] == 0.5
    assert body["frequency_penalty"] == 0.25 and body["model"] == "m"
    assert body["messages"] == [{"role": "user", "content": "what is 2+3?"}]
    assert "seed" not in body


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_read_from_either_field(field: str) -> None:
    with FakeServer(reasoning_field=field) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            out = await engine.generate(req(n=2))
    assert [c.reasoning for c in out] == ["thinking about sample 0", "thinking about sample 1"]
    assert out[0].content == "sample 0: what is 2+3?"


async def test_no_reasoning_field_gives_none() -> None:
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            (c,) = await engine.generate(req())
    assert c.reasoning is None and c.finish_reason == "stop"


async def test_usage_per_choice_from_token_ids_and_cached_tokens() -> None:
    with FakeServer(cached_tokens=2) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            out = await engine.generate(req("a b c", n=2))
    # "sample 0: a b c" is 5 words -> 5 token ids per choice; the prompt is 3 words
    assert [c.usage.completion_tokens for c in out] == [5, 5]
    assert all(c.usage.prompt_tokens == 3 and c.usage.cached_tokens == 2 for c in out)
    assert all(c.notes["completion_tokens"] == "exact" for c in out)


async def test_usage_split_is_exact_in_sum_and_marked_estimated_without_token_ids() -> None:
    with FakeServer(token_ids=False) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            out = await engine.generate(req("x", n=3))
            (single,) = await engine.generate(req("x"))
    # the server reports 3 * 3 words in total; without per-choice ids it is split, sum exact
    assert sum(c.usage.completion_tokens for c in out) == 9
    assert all(c.notes["completion_tokens"] == "estimated" for c in out)
    assert all(c.usage.cached_tokens == 0 for c in out)
    assert single.usage.completion_tokens == 3 and single.notes["completion_tokens"] == "exact"


async def test_missing_usage_is_estimated_and_marked() -> None:
    with FakeServer(usage=False, token_ids=False) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            out = await engine.generate(req("x", n=2))
    # "sample 0: x" is 11 characters -> (11 + 2) // 3 = 4 tokens by the base estimate
    assert [c.usage.completion_tokens for c in out] == [4, 4]
    assert all(c.usage.prompt_tokens == 0 and c.notes["completion_tokens"] == "estimated" for c in out)


async def test_model_is_discovered_once_from_the_first_endpoint() -> None:
    with FakeServer(models=("served-a", "other")) as first, FakeServer(models=("served-b",)) as second:
        async with OpenAIEngine([first.url, second.url]) as engine:
            assert engine.info.model is None
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(engine.generate, req(problem=f"p{i}"))
            info = engine.info
    assert info.model == "served-a" and info.max_context == 4096
    for server in (first, second):  # every endpoint is probed, once
        assert [r.path for r in server.requests if r.method == "GET"] == ["/v1/models"]
    bodies = [r.body for r in first.chat_requests + second.chat_requests]
    assert len(bodies) == 4 and all(b is not None and b["model"] == "served-a" for b in bodies)


async def test_given_model_reads_its_context_size_and_tolerates_no_models_route() -> None:
    with FakeServer(models=("a", "m"), max_model_len=1234) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            assert await engine.model() == "m"
            assert engine.info.max_context == 1234
    with FakeServer(models=("m",)) as server:
        async with OpenAIEngine(server.url + "/other", model="m") as engine:  # /models is a 404
            (c,) = await engine.generate(req())
            assert engine.info.max_context is None
    assert c.content == "sample 0: what is 2+3?"


async def test_empty_model_list_is_an_engine_error() -> None:
    with FakeServer(models=()) as server:
        async with OpenAIEngine(server.url) as engine:
            with pytest.raises(EngineError, match="lists no models"):
                await engine.generate(req())


async def test_endpoint_affinity_and_least_outstanding_assignment() -> None:
    gate = threading.Event()
    with FakeServer(gate=gate) as s0, FakeServer() as s1, FakeServer() as s2:
        async with OpenAIEngine([s0.url, s1.url, s2.url], model="m") as engine:
            held: list[str] = []

            async def hold(problem: str) -> None:
                (c,) = await engine.generate(req(problem=problem))
                held.append(c.notes["endpoint"])

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hold, "A")  # all idle: lowest index (0); held in flight
                    await anyio.wait_all_tasks_blocked()
                    (b,) = await engine.generate(req(problem="B"))  # 0 busy: 1 (tie 1/2 -> 1)
                    tg.start_soon(hold, "A")  # affinity beats load: 0 again, though 2 is idle
                    await anyio.wait_all_tasks_blocked()
                    gate.set()
            (c,) = await engine.generate(req(problem="C"))  # all idle again: lowest index
            (b2,) = await engine.generate(req(problem="B"))
            affinity = engine.affinity
    assert held == [s0.url, s0.url]
    assert b.notes["endpoint"] == s1.url and b2.notes["endpoint"] == s1.url
    assert c.notes["endpoint"] == s0.url
    assert affinity == {"A": s0.url, "B": s1.url, "C": s0.url}
    assert len(s0.chat_requests) == 3 and len(s1.chat_requests) == 2 and not s2.chat_requests


async def test_problems_spread_over_endpoints_by_outstanding_requests() -> None:
    gate = threading.Event()
    with FakeServer(gate=gate) as s0, FakeServer(gate=gate) as s1:
        async with OpenAIEngine([s0.url, s1.url], model="m", use_n=False) as engine:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(engine.generate, req(problem="P1", n=3))  # 3 in flight on 0
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate, req(problem="P2"))  # 1 in flight on 1
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate, req(problem="P3"))  # 3 vs 1 -> 1
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate, req(problem="P4"))  # 3 vs 2 -> 1
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate, req(problem="P5", n=2))  # 3 vs 3 -> 0
                    await anyio.wait_all_tasks_blocked()
                    gate.set()
            affinity = engine.affinity
    assert affinity == {"P1": s0.url, "P2": s1.url, "P3": s1.url, "P4": s1.url, "P5": s0.url}
    assert len(s0.chat_requests) == 5 and len(s1.chat_requests) == 3


async def test_api_key_is_sent_but_never_logged_nor_in_info_or_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    caplog.set_level(logging.DEBUG, logger="pacore_agents")  # ours (the session set it to WARNING)
    errors: list[EngineError] = []
    with FakeServer() as ok, FakeServer("status", status=500) as bad, FakeServer("drop") as drop:
        engine = create_engine(OpenAIOptions(kind="openai", base_urls=[ok.url],
                                             api_key=SecretStr(SECRET), request_timeout=5))
        async with engine:
            await engine.generate(req(problem="first", n=2))
            result = await run("what is 2+3?", "pacore-low", engine,
                               config=RunConfig(sampling=SamplingParams(max_tokens=8)))
        info = engine.info
        for url in (bad.url, drop.url):
            failing = RetryingEngine(OpenAIEngine(url, api_key=SECRET),
                                     RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01))
            async with failing:
                with pytest.raises(EngineError) as excinfo:
                    await failing.generate(req())
            errors.append(excinfo.value)
    assert ok.chat_requests[0].headers.get("authorization") == f"Bearer {SECRET}"
    assert "chat request" in caplog.text and "retrying" in caplog.text  # the logs were captured
    assert SECRET not in caplog.text
    assert SECRET not in info.model_dump_json()
    assert SECRET not in result.trace.model_dump_json() and result.answer is not None
    assert [e.status for e in errors] == [500, None] and all(e.attempts == 2 for e in errors)
    assert all(SECRET not in e.describe() and SECRET not in repr(e.__cause__) for e in errors)


async def test_api_key_defaults_to_env_then_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "from-env")
        async with OpenAIEngine(server.url, model="m") as engine:
            await engine.generate(req())
        monkeypatch.delenv("OPENAI_API_KEY")
        async with OpenAIEngine(server.url, model="m") as engine:
            await engine.generate(req())
    auth = [r.headers.get("authorization") for r in server.chat_requests]
    assert auth == ["Bearer from-env", "Bearer EMPTY"]


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one base URL"):
        create_engine(OpenAIOptions(kind="openai"))
    with pytest.raises(ConfigError, match="bad OpenAI base URL"):
        OpenAIEngine("localhost:8000")
    with pytest.raises(ConfigError, match="duplicate"):
        OpenAIEngine(["http://127.0.0.1:1", "http://127.0.0.1:1/v1"])


async def test_urls_are_normalized_and_credentials_hidden() -> None:
    engine = OpenAIEngine(["http://127.0.0.1:9/", "http://user:pw@127.0.0.1:10/api/v1"], model="m")
    assert engine.endpoints == ("http://127.0.0.1:9/v1", "http://127.0.0.1:10/api/v1")
    assert "pw" not in engine.info.model_dump_json()
    await engine.aclose()
    await engine.aclose()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        await engine.generate(req())


async def test_seeds_are_not_sent_by_default_and_the_drop_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pacore_agents")
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m", use_n=False) as engine:
            await engine.generate(req(n=2, seed=10))
            await engine.generate(req(n=1, seed=11))
            info = engine.info
    bodies = [r.body for r in server.chat_requests]
    assert len(bodies) == 3 and all(b is not None and "seed" not in b for b in bodies)
    assert info.details["seeded"] is False
    assert caplog.text.count("requests are sent without seeds") == 1


async def test_seed_requests_option_sends_seeds() -> None:
    with FakeServer() as server:
        engine = create_engine({"kind": "openai", "base_urls": [server.url], "model": "m", "seed_requests": True})
        async with engine:
            await engine.generate(req(n=2, seed=7))
            info = engine.info
    body = server.chat_requests[0].body
    assert body is not None and body["seed"] == 7 and info.details["seeded"] is True


def test_admission_window_is_sequences_per_endpoint_times_endpoints() -> None:
    urls = ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
    assert OpenAIEngine(urls, model="m").info.max_sequences == 2 * 256
    engine = create_engine(OpenAIOptions(kind="openai", base_urls=urls, max_sequences_per_endpoint=8))
    assert engine.info.max_sequences == 16


def dead_url(credentials: str = "") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{credentials}127.0.0.1:{port}/v1"


async def test_a_dead_second_endpoint_is_found_at_start_and_named_without_credentials() -> None:
    dead = dead_url("user:hunter2@")
    with FakeServer() as ok:
        engine = OpenAIEngine([ok.url, dead], model="m",
                              retry=RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0))
        async with engine:
            with pytest.raises(EngineError) as excinfo:
                await engine.start()
    message = str(excinfo.value)
    assert dead.replace("user:hunter2@", "") in message and "hunter2" not in message
    assert excinfo.value.retryable and excinfo.value.attempts == 2
    assert [r.path for r in ok.requests if r.method == "GET"] == ["/v1/models"]


MODELS_PAGE = {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "x", "max_model_len": 77}]}


async def test_the_probe_is_retried_and_every_error_is_mapped() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=MODELS_PAGE)

    def garbage(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            return httpx.Response(200, content=b"<html>not json</html>", headers={"content-type": "application/json"})
        return httpx.Response(200, json={"data": 5})

    policy = RetryPolicy(max_attempts=3, initial_backoff=0, max_backoff=0)
    engine = OpenAIEngine("http://127.0.0.1:1/v1", retry=policy)
    engine._clients[0] = openai.AsyncOpenAI(base_url="http://127.0.0.1:1/v1", api_key="k", max_retries=0,
                                            http_client=httpx.AsyncClient(transport=httpx.MockTransport(flaky)))
    async with engine:
        await engine.start()
    assert calls == ["/v1/models", "/v1/models"] and engine.info.max_context == 77

    for host in ("a", "b"):  # not JSON; JSON without a model list
        engine = OpenAIEngine(f"http://{host}:1/v1", retry=policy)
        engine._clients[0] = openai.AsyncOpenAI(
            base_url=f"http://{host}:1/v1", api_key="k", max_retries=0,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(garbage)))
        async with engine:
            with pytest.raises(EngineError, match=rf"http://{host}:1/v1: listing models failed"):
                await engine.start()


# ---- samples streamed one request per n (the executor's default on this engine) ---------------

async def test_samples_are_streamed_in_one_request_and_reported_as_they_end() -> None:
    reported: list[tuple[int, int]] = []
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m", seed_requests=True) as engine:
            assert engine.streams_samples and not engine.split_samples
            out = await engine.generate_samples(req(n=3, seed=10), lambda i, c: reported.append(
                (i, c.usage.completion_tokens)))
    # the fake pads choice i with n - 1 - i words, so the last choice ends first
    assert [i for i, _ in reported] == [2, 1, 0]
    assert [c.content for c in out] == [f"sample {10 + i}: what is 2+3?" + " more" * (2 - i) for i in range(3)]
    assert [c.usage.completion_tokens for c in out] == [7, 6, 5] == [t for _, t in sorted(reported)]
    assert all(c.notes["completion_tokens"] == "exact" and c.finish_reason == "stop" for c in out)
    (body,) = [r.body for r in server.chat_requests]
    assert body is not None and body["stream"] is True and body["n"] == 3
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


async def test_without_per_chunk_usage_token_ids_count_each_choice() -> None:
    with FakeServer(continuous_usage=False) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            chunks_seen: list[int] = []
            out = await engine.generate_samples(req(n=2), lambda i, c: chunks_seen.append(i))
    assert [c.usage.completion_tokens for c in out] == [6, 5] and chunks_seen == [1, 0]


async def test_a_stream_cut_mid_way_keeps_the_samples_it_reported_and_raises_retryable() -> None:
    reported: list[int] = []
    with FakeServer(drop_after_choices=1) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            with pytest.raises(EngineError, match="stream ended before choice 0") as info:
                await engine.generate_samples(req(n=3), lambda i, c: reported.append(i))
    assert reported == [2] and info.value.retryable


async def test_with_nothing_waiting_the_executor_sends_n_samples_whole() -> None:
    """No work waits for admission: a slot freed early would have no taker, so the request goes
    whole (not streamed: a streamed answer costs a CPU server a chunk per token)."""
    from pacore_agents import executor_for
    from pacore_agents._priority import Priority

    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            out = await executor_for(engine, window=8).generate(req(n=3), priority=Priority(1, 0, 0), retry=None)
    assert len(out) == 3
    (body,) = [r.body for r in server.chat_requests]
    assert body is not None and "stream" not in body and body["n"] == 3


async def test_while_work_waits_samples_stream_each_slot_freed_and_only_the_rest_retried() -> None:
    """Work waits for admission (window 3, all held): the n=3 request is streamed. The stream is
    cut after one choice ended: that sample stands (attempt 1) and its slot goes to the waiting
    work at once; the two others are sent again, one request each (attempt 2)."""
    from pacore_agents import executor_for
    from pacore_agents._priority import Priority, Slots

    events: list[str] = []
    with FakeServer(drop_after_choices=1) as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            executor = executor_for(engine, window=3)
            held = await executor.acquire(Priority(1, 0, 0), 3)

            async def waiter() -> None:
                got = await executor.acquire(Priority(1, 0, 1), 1)
                events.append("waiter admitted")
                executor.release(got)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0.05)
                assert executor.queued == 1
                out = await executor.generate(
                    req(n=3), priority=Priority(1, 0, 0), retry=RetryPolicy(max_attempts=2, initial_backoff=0),
                    slots=Slots(held), on_sample=lambda i, c: events.append(f"sample {i}"))
            assert executor.in_flight == 0 and executor.queued == 0
    assert events[:2] == ["sample 2", "waiter admitted"]
    assert sorted(events[2:]) == ["sample 0", "sample 1"]
    assert [c.attempts for c in out] == [2, 2, 1]
    bodies = [r.body for r in server.chat_requests]
    assert [(b or {}).get("stream", False) for b in bodies] == [True, False, False]
    assert [(b or {})["n"] for b in bodies] == [3, 1, 1]
