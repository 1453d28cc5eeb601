"""VLLMEngine and a quorum's stragglers: a ``cancellable`` request runs with delta outputs, so
once cancelled ``tokens_so_far`` says how many tokens it had streamed; a quorum run on the
embedded SmolLM2-135M (CPU) counts them in its policy event and in effective TTC.

Real-engine tests (marked ``vllm``), one engine for the module, as in tests/test_vllm_engine.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from pacore_agents import (
    ChatMessage,
    GenerationRequest,
    Policies,
    Quorum,
    RequestMetadata,
    RunConfig,
    SamplingParams,
    all_to_all,
    run,
)
from pacore_agents.engines._vllm import VLLMEngine
from tests._real_engines import (
    TEST_KV_CACHE_GB,
    TEST_MAX_MODEL_LEN,
    describe,
    embedded_model_path,
    engine_children,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: the shared engine lives on one event loop


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[VLLMEngine]:
    eng = VLLMEngine(str(embedded_model_path()), max_model_len=TEST_MAX_MODEL_LEN,
                     kv_cache_space_gb=TEST_KV_CACHE_GB)
    try:
        yield eng
    finally:
        await eng.aclose()


def ask(text: str, max_tokens: int, *, cancellable: bool) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content=text),),
                             sampling=SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=3),
                             metadata=RequestMetadata(cancellable=cancellable))


async def _cancel_while_running(engine: VLLMEngine, request: GenerationRequest) -> None:
    """Send ``request`` and a short request beside it; cancel ``request`` once the short one
    has ended (by then both have run the same decode steps)."""
    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, request)
            await engine.generate(ask("Count from 1 to 50.", 16, cancellable=False))
            tg.cancel_scope.cancel()


@pytest.mark.vllm
@pytest.mark.timeout(300)
async def test_a_cancelled_cancellable_request_reports_the_tokens_it_streamed(engine: VLLMEngine) -> None:
    request = ask("Write a long story about a lighthouse keeper.", 1000, cancellable=True)
    await _cancel_while_running(engine, request)
    tokens = engine.tokens_so_far(request)
    assert tokens is not None and 1 <= tokens < 1000
    assert engine.tokens_so_far(request) is None  # read once
    assert engine._llm.get_num_unfinished_requests() == 0  # aborted, not left running


@pytest.mark.vllm
@pytest.mark.timeout(300)
async def test_other_requests_report_nothing(engine: VLLMEngine) -> None:
    plain = ask("Write a long story about a lighthouse keeper.", 1000, cancellable=False)
    await _cancel_while_running(engine, plain)
    assert engine.tokens_so_far(plain) is None  # FINAL_ONLY: nothing seen, so nothing said
    finished = ask("Say hello.", 8, cancellable=True)
    (done,) = await engine.generate(finished)  # delta outputs merge into the usual result
    assert done.content and 0 < done.usage.completion_tokens <= 8
    assert engine.tokens_so_far(finished) is None  # not cancelled


@pytest.mark.vllm
@pytest.mark.timeout(600)
async def test_a_quorum_run_counts_its_cancelled_stragglers(engine: VLLMEngine) -> None:
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=200)
    result = await run("Write a few words about the sea.", all_to_all([6]), engine,
                       config=RunConfig(sampling=sampling, seed=11), policies=Policies(quorum=Quorum(q=2)))
    trace = result.trace
    (event,) = trace.policy_events
    cancelled = [trace.node(n) for n in event.cancelled]
    assert event.tokens_unknown == 0
    assert all(n.status == "cancelled" and n.notes["tokens_reported"] for n in cancelled)
    assert event.cancelled_tokens == sum(n.usage.completion_tokens for n in cancelled)
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes)
    if cancelled:  # they decoded beside the quorum's messages: some tokens each, in the TTC
        assert all(0 < n.usage.completion_tokens < 200 for n in cancelled), [n.usage for n in cancelled]


@pytest.mark.vllm
@pytest.mark.timeout(120)
async def test_zz_aclose_leaves_no_child_processes(engine: VLLMEngine) -> None:
    await engine.aclose()
    assert engine_children() == [], describe(engine_children())
