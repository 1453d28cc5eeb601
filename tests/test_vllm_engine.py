"""VLLMEngine: the in-process vLLM engine on the embedded SmolLM2-135M (CPU).

The real-engine tests share ONE engine (module-scoped, one event loop for the module); the
first test starts it lazily through concurrent requests, the last one closes it and checks that
no engine process is left. Fast unit tests (no engine) come first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from pacore_agents import (
    ChatMessage,
    ConfigError,
    EngineError,
    GenerationRequest,
    RunConfig,
    SamplingParams,
    ring,
    run,
)
from pacore_agents._engine import RequestMetadata
from pacore_agents.engines import VLLMOptions, create_engine
from pacore_agents.engines._vllm import (
    DEFAULT_CPU_BLOCK_SIZE,
    TYPICAL_SEQUENCE_TOKENS,
    VLLMEngine,
    split_reasoning,
)
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


def ask(text: str, *, n: int = 1, **sampling: object) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content=text),), n=n,
                             sampling=SamplingParams.model_validate(sampling))


# -- without an engine ----------------------------------------------------------------------


def test_split_reasoning() -> None:
    assert split_reasoning("no tags here") is None
    assert split_reasoning("<think>\nstep 1\n</think>\n\nThe answer is 4.") == "step 1"
    assert split_reasoning("a</think>b</think> final") == "a</think>b"
    assert split_reasoning("prompt-opened thinking</think>42") == "prompt-opened thinking"


def test_from_options_and_info_before_start() -> None:
    engine = create_engine(VLLMOptions(kind="vllm", max_model_len=1024, kv_cache_space_gb=0.5))
    assert isinstance(engine, VLLMEngine) and not engine.started
    assert engine.info.name == "vllm" and engine.info.model == "SmolLM2-135M-Instruct"
    assert engine.info.max_context == 1024
    assert engine.count_tokens("abcdef") == 2  # the base estimate until the tokenizer is loaded


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="kv_cache_space_gb"):
        VLLMEngine(kv_cache_space_gb=0)
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        VLLMEngine(tensor_parallel_size=0)


async def test_missing_model_dir_fails_before_starting_anything() -> None:
    engine = VLLMEngine("/no/such/model")
    with pytest.raises(ConfigError, match="--model /path/to/model"):
        await engine.generate(ask("hi", max_tokens=4))
    with pytest.raises(ConfigError):  # the start error is remembered, not retried
        await engine.start()
    assert not engine.started and engine_children() == []
    await engine.aclose()


# -- one real engine for the rest of the module ---------------------------------------------


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[VLLMEngine]:
    eng = VLLMEngine(str(embedded_model_path()), max_model_len=TEST_MAX_MODEL_LEN,
                     kv_cache_space_gb=TEST_KV_CACHE_GB)
    try:
        yield eng
    finally:
        await eng.aclose()


def _engine_cores() -> list[str]:
    return [p.name() for p in engine_children() if "EngineCore" in p.name()]


@pytest.mark.vllm
@pytest.mark.timeout(300)
async def test_concurrent_first_calls_start_one_engine(engine: VLLMEngine) -> None:
    results: list[list[object]] = []

    async def one(i: int) -> None:
        results.append(list(await engine.generate(ask(f"Say the number {i}.", max_tokens=4, seed=i))))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(one, i)
    assert len(results) == 3 and engine.started
    assert len(_engine_cores()) == 1, describe(engine_children())
    assert engine.info.max_context == TEST_MAX_MODEL_LEN


@pytest.mark.vllm
async def test_the_embedded_model_computes_in_float32_on_any_cpu(engine: VLLMEngine) -> None:
    await engine.start()
    assert engine.info.details["dtype"] == "torch.float32"


@pytest.mark.vllm
async def test_greedy_answer_is_coherent(engine: VLLMEngine) -> None:
    (done,) = await engine.generate(ask("What is the capital of France?", temperature=0, max_tokens=24))
    assert "Paris" in done.content, done.content
    assert done.finish_reason in {"stop", "length"}
    assert done.reasoning is None
    assert done.usage.prompt_tokens > 10 and 0 < done.usage.completion_tokens <= 24


@pytest.mark.vllm
async def test_n_samples_with_usage(engine: VLLMEngine) -> None:
    out = await engine.generate(ask("Write one sentence about cats.", n=4, temperature=1.0,
                                    max_tokens=16, seed=3))
    assert len(out) == 4
    assert len({c.usage.prompt_tokens for c in out}) == 1
    for c in out:
        assert c.content and 0 < c.usage.completion_tokens <= 16
        assert c.finish_reason in {"stop", "length"}
    assert len({c.content for c in out}) > 1  # independent samples


@pytest.mark.vllm
async def test_the_seed_reaches_vllm_and_its_children_get_seed_plus_i(engine: VLLMEngine) -> None:
    """Invariants, not two runs' texts (vLLM's CPU kernels are not batch-invariant: a sample can
    differ with how requests share engine steps). The request's seed is vLLM's; vLLM's own
    ``ParentRequest`` seeds child i of an n=K request with seed + i, which is what the
    executor's split into K n=1 requests (``sample_request``) sends."""
    from types import SimpleNamespace

    from vllm.v1.engine.parallel_sampling import ParentRequest

    from pacore_agents._samples import sample_request

    request = ask("Write a short poem about the sea.", n=4, temperature=1.0, max_tokens=24, seed=1234)
    params = engine._sampling_params(request, 24)
    assert (params.seed, params.n, params.temperature) == (1234, 4, 1.0)
    parent = SimpleNamespace(sampling_params=params, cached_child_sampling_params=None)
    children = [ParentRequest._get_child_sampling_params(parent, i).seed for i in range(4)]  # type: ignore[arg-type]
    assert children == [1234 + i for i in range(4)] == [sample_request(request, i).sampling.seed for i in range(4)]
    out = await engine.generate(request)  # and the seeded request runs: 4 samples, each its own
    assert len(out) == 4 and all(c.content and 0 < c.usage.completion_tokens <= 24 for c in out)


def _filler(engine: VLLMEngine, tokens: int) -> str:
    """Text of about ``tokens`` tokens (the engine's tokenizer counts it)."""
    text = " ".join(f"item{i % 10}" for i in range(tokens))
    while engine.count_tokens(text) > tokens:
        text = text[: int(len(text) * 0.95)]
    return text


@pytest.mark.vllm
async def test_concurrent_seeded_long_prompts(engine: VLLMEngine) -> None:
    """Long seeded prompts arriving together exceed one step's token budget; with chunked
    prefill vLLM 0.32 CPU killed its worker on them ("CPU Generator does not use offset")."""
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        prompt = f"{i}: " + _filler(engine, 1500)
        (done,) = await engine.generate(ask(prompt, temperature=1.0, max_tokens=4, seed=i))
        results[i] = done.content

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert sorted(results) == [0, 1, 2, 3]


@pytest.mark.vllm
async def test_max_tokens_is_clamped_to_the_context_left(engine: VLLMEngine) -> None:
    (done,) = await engine.generate(ask("What is the capital of France?", temperature=0,
                                        max_tokens=5000))
    room = TEST_MAX_MODEL_LEN - done.usage.prompt_tokens
    assert done.notes["max_tokens_clamped"] == {"requested": 5000, "used": room}
    (unclamped,) = await engine.generate(ask("What is the capital of France?", temperature=0,
                                             max_tokens=8))
    assert "max_tokens_clamped" not in unclamped.notes


@pytest.mark.vllm
async def test_prompt_longer_than_the_context_is_an_engine_error(engine: VLLMEngine) -> None:
    text = _filler(engine, TEST_MAX_MODEL_LEN + 200) + " " + _filler(engine, 200)
    with pytest.raises(EngineError) as err:
        await engine.generate(ask(text, max_tokens=8))
    assert not err.value.retryable
    assert "max_model_len" in str(err.value) and str(TEST_MAX_MODEL_LEN) in str(err.value)


@pytest.mark.vllm
async def test_invalid_sampling_is_a_final_engine_error(engine: VLLMEngine) -> None:
    with pytest.raises(EngineError) as err:
        await engine.generate(ask("hi", top_k=-7, max_tokens=4))
    assert not err.value.retryable


@pytest.mark.vllm
async def test_repeated_long_prompt_hits_the_prefix_cache(engine: VLLMEngine) -> None:
    text = "Summarize: " + " ".join(f"Fact {i}: {i} squared is {i * i}." for i in range(30))
    (first,) = await engine.generate(ask(text, temperature=0, max_tokens=4))
    (second,) = await engine.generate(ask(text, temperature=0, max_tokens=4))
    assert first.usage.prompt_tokens > 250
    assert second.usage.cached_tokens > 0
    assert second.usage.cached_tokens >= first.usage.prompt_tokens // 2


@pytest.mark.vllm
async def test_cancellation_aborts_the_request(engine: VLLMEngine) -> None:
    llm = engine._llm
    assert llm is not None
    # high temperature babble rarely emits EOS: the request runs until it is cancelled
    long_request = ask("Write a very long story.", n=2, temperature=1.8, max_tokens=1500)
    with anyio.move_on_after(30) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, long_request)
            for _ in range(400):  # the request is added within ~20 s
                if llm.get_num_unfinished_requests():
                    break
                await anyio.sleep(0.05)
            await anyio.sleep(2)  # decoding now
            assert llm.get_num_unfinished_requests() == 2
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    await anyio.sleep(0.2)
    assert llm.get_num_unfinished_requests() == 0
    with anyio.fail_after(30):
        (done,) = await engine.generate(ask("What is 2 + 2?", temperature=0, max_tokens=8))
    assert done.content


@pytest.mark.vllm
async def test_count_and_truncate_use_the_real_tokenizer(engine: VLLMEngine) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    assert engine.count_tokens(text) == len(engine._tokenizer.encode(text, add_special_tokens=False))
    assert engine.count_tokens(text) != (len(text) + 2) // 3
    tail = engine.truncate_tokens(text, 3)
    assert text.endswith(tail.strip()) and engine.count_tokens(tail) <= 3
    assert engine.truncate_tokens(text, 100) == text


@pytest.mark.vllm
async def test_capacity_block_size_and_priority_policy(engine: VLLMEngine) -> None:
    await engine.start()
    details = engine.info.details
    assert details["block_size"] == DEFAULT_CPU_BLOCK_SIZE and details["scheduling_policy"] == "priority"
    typical = min(TEST_MAX_MODEL_LEN, TYPICAL_SEQUENCE_TOKENS)
    want = max(1, min(details["max_num_seqs"], details["kv_cache_tokens"] // typical))
    assert engine.info.max_sequences == want == details["capacity_sequences"]
    assert details["kv_cache_tokens"] > 10_000  # 1 GiB holds tens of thousands of tokens
    (done,) = await engine.generate(GenerationRequest(
        messages=(ChatMessage(role="user", content="Say hi."),), sampling=SamplingParams(max_tokens=4),
        metadata=RequestMetadata(priority=7)))
    assert done.content


@pytest.mark.vllm
async def test_stats_count_computed_and_cached_prefill(engine: VLLMEngine) -> None:
    text = "Recall: " + " ".join(f"Stat {i} of the ledger is {i * 7 % 13}." for i in range(40))
    before = await engine.stats()
    assert before is not None and before.source == "vllm-inprocess"
    (first,) = await engine.generate(ask(text, temperature=0, max_tokens=2))
    middle = await engine.stats()
    (second,) = await engine.generate(ask(text, temperature=0, max_tokens=2))
    after = await engine.stats()
    assert middle is not None and after is not None
    assert before.prefill_computed_tokens is not None and middle.prefill_computed_tokens is not None
    assert before.prefill_cached_tokens is not None and middle.prefill_cached_tokens is not None
    assert after.prefill_computed_tokens is not None and after.prefill_cached_tokens is not None
    prompt = first.usage.prompt_tokens
    assert prompt > 300
    assert (middle.prefill_computed_tokens - before.prefill_computed_tokens
            + middle.prefill_cached_tokens - before.prefill_cached_tokens) == prompt
    cached = after.prefill_cached_tokens - middle.prefill_cached_tokens
    block = engine.info.details["block_size"]
    assert cached == second.usage.cached_tokens >= (prompt - 1) // block * block
    assert after.prefill_computed_tokens - middle.prefill_computed_tokens == prompt - cached
    assert (after.running, after.waiting) == (0, 0)  # idle


RUN_SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=32)
GSM8K = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
         "in May. How many clips did Natalia sell altogether in April and May?")


@pytest.mark.vllm
async def test_pacore_low_run_on_the_engine(engine: VLLMEngine) -> None:
    result = await run(GSM8K, "pacore-low", engine, config=RunConfig(sampling=RUN_SAMPLING))
    trace = result.trace
    assert isinstance(result.answer, str) and result.answer
    assert len(trace.nodes) == 5 and all(node.ok for node in trace.nodes)
    assert trace.effective_ttc == sum(node.usage.completion_tokens for node in trace.nodes)
    assert all(0 < node.usage.completion_tokens <= 32 for node in trace.nodes)
    (sink,) = [node for node in trace.nodes if node.round == 2]
    first_round = [node for node in trace.nodes if node.round == 1]
    prompt = sink.prompt[-1].content
    assert GSM8K in prompt
    assert all((node.message or "").strip()[:40] in prompt for node in first_round)
    assert sink.usage.prompt_tokens > max(node.usage.prompt_tokens for node in first_round)


@pytest.mark.vllm
async def test_ring_run_on_the_engine(engine: VLLMEngine) -> None:
    result = await run(GSM8K, ring(3, 2), engine, config=RunConfig(sampling=RUN_SAMPLING, seed=7))
    trace = result.trace
    assert result.answer and len(trace.nodes) == 3 * 2 + 1
    assert all(node.ok for node in trace.nodes)
    assert trace.effective_ttc == sum(node.usage.completion_tokens for node in trace.nodes)


@pytest.mark.vllm
@pytest.mark.timeout(300)
async def test_priority_orders_the_waiting_queue() -> None:
    """One sequence at a time (``max_sequences=1`` sets vLLM's ``max_num_seqs``): of two
    requests waiting behind a running one, the one with the lower priority value runs first,
    although it arrived last."""
    eng = VLLMEngine(str(embedded_model_path()), max_model_len=TEST_MAX_MODEL_LEN,
                     kv_cache_space_gb=0.25, max_sequences=1)
    order: list[str] = []

    async def one(name: str, priority: int, max_tokens: int) -> None:
        await eng.generate(GenerationRequest(
            messages=(ChatMessage(role="user", content=f"Write a long story about {name}."),),
            sampling=SamplingParams(temperature=1.8, max_tokens=max_tokens, seed=1),
            metadata=RequestMetadata(priority=priority)))
        order.append(name)

    async def queued(n: int) -> None:
        for _ in range(3000):  # the engine adds a request within milliseconds
            if eng._llm.get_num_unfinished_requests() >= n:
                return
            await anyio.sleep(0.01)
        raise AssertionError(f"{n} requests never reached the engine")

    try:
        await eng.start()
        assert eng.info.max_sequences == 1 and eng.info.details["max_num_seqs"] == 1
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "first", 0, 64)
                await queued(1)
                tg.start_soon(one, "late", 5, 4)
                await queued(2)
                tg.start_soon(one, "urgent", -5, 4)
    finally:
        await eng.aclose()
    assert order == ["first", "urgent", "late"]


@pytest.mark.vllm
@pytest.mark.timeout(120)
async def test_zz_aclose_leaves_no_child_processes(engine: VLLMEngine) -> None:
    await engine.generate(ask("Hi", max_tokens=2))  # started (also when run alone)
    assert _engine_cores()
    await engine.aclose()
    await engine.aclose()  # idempotent
    assert engine_children() == [], describe(engine_children())
    with pytest.raises(EngineError):
        await engine.generate(ask("Hi", max_tokens=2))
