"""The simulated continuous-batching engine (benchmarks/sim_engine.py): capacity, the step-time
model, prefill and prefix sharing, deterministic lengths, queue policy, cancellation. Virtual
time (trio MockClock), so every test is instant and exact."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("trio")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from published_sim import replay_published
from sim_engine import LengthModel, SimEngine, SimProfile, simulate

from pacore_agents import (
    ChatMessage,
    GenerationRequest,
    NodeId,
    Problem,
    ProblemId,
    RequestMetadata,
    RunConfig,
    SamplingParams,
    all_to_all,
    run,
)


def profile(**kw: object) -> SimProfile:
    base: dict[str, object] = dict(name="t", capacity=2, step_base_s=1.0, step_per_seq_s=0.0,
                                   prefill_tok_per_s=1e12, block_size=4)
    base.update(kw)
    return SimProfile.model_validate(base)


def fixed(tokens: int) -> LengthModel:
    return LengthModel(median=tokens, sigma=0.0, think=False)


def request(text: str = "a b c d e f g", n: int = 1, *, nodes: tuple[NodeId, ...] = (),
            problem: str = "p", priority: int = 0, max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content=text),), n=n,
                             sampling=SamplingParams(max_tokens=max_tokens),
                             metadata=RequestMetadata(problem_id=ProblemId(problem), nodes=nodes,
                                                      priority=priority))


def test_capacity_is_respected_and_extra_sequences_queue() -> None:
    async def main() -> tuple[float, SimEngine]:
        async with SimEngine(profile(capacity=2), fixed(3)) as engine:
            await engine.generate(request(n=5))
            return anyio.current_time(), engine

    elapsed, engine = simulate(main)
    assert max(s.running for s in engine.spans) == 2
    assert elapsed == pytest.approx(9.0)  # batches of 2, 2, 1 sequences, 3 steps of 1 s each
    summary = engine.summary()
    assert summary["sequences"] == 5
    assert summary["occupancy_deciles"] == [2.0] * 6 + [1.7, 1.0, 1.0, 1.0]
    assert summary["mean_problem_s"] == pytest.approx(9.0)


def test_step_time_is_linear_in_the_batch_and_prefill_adds_to_the_first_step() -> None:
    async def main(prefill_rate: float) -> float:
        prof = profile(capacity=8, step_base_s=1.0, step_per_seq_s=0.5, prefill_tok_per_s=prefill_rate,
                       block_size=1000)
        async with SimEngine(prof, fixed(2)) as engine:
            await engine.generate(request("a b c d e f g h i", n=4))  # 10 tokens with the role marker
            return anyio.current_time()

    assert simulate(lambda: main(1e12)) == pytest.approx(2 * 3.0)  # step(4) = 1 + 0.5 * 4
    # no block is full, so all 4 siblings prefill 10 tokens: 40 tokens at 10 tok/s in step 1
    assert simulate(lambda: main(10.0)) == pytest.approx(2 * 3.0 + 4.0)


def test_siblings_share_full_prompt_blocks_but_recompute_the_last_partial_block() -> None:
    async def main() -> SimEngine:
        async with SimEngine(profile(capacity=8, block_size=4), fixed(1)) as engine:
            await engine.generate(request("a b c d e f g h i", n=3))   # 10 tokens: 2 full blocks
            await engine.generate(request("a b c d e f g", n=2))       # 8 tokens, all cached
            await engine.generate(request("a b c X Y", n=1))           # shares the first block
            return engine

    engine = simulate(main)
    computed = [r.prefill_computed for r in engine.records]
    cached = [r.prefill_cached for r in engine.records]
    assert computed == [10, 2, 2, 4, 4, 2]  # a fully cached prompt still computes its last block
    assert cached == [0, 8, 8, 4, 4, 4]
    assert engine.unique_prompt_tokens == 10 + 8 + 6


def test_lengths_depend_only_on_problem_and_node() -> None:
    model = LengthModel(median=100, sigma=1.0, think=False)
    nodes = tuple(NodeId.of(1, a) for a in range(4))

    async def merged() -> list[int]:
        async with SimEngine(profile(capacity=8), model) as engine:
            out = await engine.generate(request(n=4, nodes=nodes, max_tokens=500))
            return [c.usage.completion_tokens for c in out]

    async def separate() -> list[int]:
        async with SimEngine(profile(capacity=1), model) as engine:
            lengths = []
            for node in reversed(nodes):
                out = await engine.generate(request(n=1, nodes=(node,), max_tokens=500))
                lengths.append(out[0].usage.completion_tokens)
            return lengths[::-1]

    first = simulate(merged)
    assert first == simulate(separate) == simulate(merged)
    assert len(set(first)) == 4  # heavy-tailed draws differ per node
    assert all(1 <= n <= 500 for n in first)
    uncapped, _ = model.length("p", "r1.a0", 10**9)
    assert model.length("p", "r1.a0", 5) == (min(5, uncapped), uncapped >= 5)
    other_problem = [model.length("q", str(n), 500)[0] for n in nodes]
    assert other_problem != first


def test_content_has_the_drawn_length_and_a_short_message_after_think() -> None:
    model = LengthModel(median=50, sigma=0.0, think=True, message_tokens=8)
    text = model.content("p", "r1.a0", 50)
    assert len(text.split()) == 50
    assert len(text.rsplit("</think>", 1)[1].split()) == 8


@pytest.mark.parametrize(("policy", "expected"), [("fifo", ["a", "b", "c"]), ("priority", ["c", "a", "b"])])
def test_queue_policy(policy: str, expected: list[str]) -> None:
    async def main() -> list[str]:
        async with SimEngine(profile(capacity=1, policy=policy), fixed(2)) as engine:
            async with anyio.create_task_group() as tg:
                tg.start_soon(engine.generate, request(problem="blocker"))
                await anyio.sleep(0.5)  # the blocker runs; the next three queue behind it
                for name, prio in (("a", 5), ("b", 7), ("c", 1)):
                    tg.start_soon(engine.generate, request(problem=name, priority=prio))
            done = sorted((r for r in engine.records if r.problem_id != "blocker"),
                          key=lambda r: r.admitted or 0.0)
            return [r.problem_id for r in done]

    assert simulate(main) == expected


def test_an_arrival_mid_span_joins_at_the_next_step_boundary() -> None:
    async def main() -> SimEngine:
        async with SimEngine(profile(capacity=4), fixed(10)) as engine, anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, request(problem="early"))
            await anyio.sleep(2.5)
            tg.start_soon(engine.generate, request(problem="late"))
        return engine

    engine = simulate(main)
    late = next(r for r in engine.records if r.problem_id == "late")
    assert late.admitted == pytest.approx(3.0)
    assert late.finished == pytest.approx(13.0)


def test_a_cancelled_request_frees_its_slots() -> None:
    async def main() -> float:
        async with SimEngine(profile(capacity=1), fixed(100)) as engine:
            with anyio.move_on_after(5):
                await engine.generate(request(problem="slow"))
            start = anyio.current_time()
            await engine.generate(request(problem="next", max_tokens=3))
            return anyio.current_time() - start

    assert simulate(main) == pytest.approx(3.0)


def test_a_sequence_cancelled_mid_span_is_credited_with_the_steps_it_ran() -> None:
    async def main() -> int | None:
        async with SimEngine(profile(capacity=1), fixed(100)) as engine:
            slow = request(problem="slow", nodes=(NodeId.of(1, 0),))
            with anyio.move_on_after(10.5):  # steps end at 1, 2, ..., 10 s: 10 tokens, then cancelled
                await engine.generate(slow)
            return engine.tokens_so_far(slow)

    assert simulate(main) == 10


def test_a_run_over_the_simulator_is_deterministic() -> None:
    async def main() -> tuple[float, int]:
        model = LengthModel(median=40, sigma=0.8, max_tokens=200, message_tokens=10)
        async with SimEngine(profile(capacity=16, step_base_s=0.02, prefill_tok_per_s=5000.0), model) as engine:
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(run, f"problem {i}: what is {i} + 1?", all_to_all([6, 2]), engine)
            return anyio.current_time(), engine.summary()["prefill_computed"]

    first = simulate(main)
    assert first == simulate(main)
    assert first[0] > 0


def test_using_the_engine_outside_its_block_is_an_error() -> None:
    from pacore_agents import EngineError

    async def main() -> None:
        await SimEngine(profile(), fixed(1)).generate(request())

    with pytest.raises(EngineError, match="async with engine"):
        simulate(main)


def test_run_drives_the_simulator() -> None:
    """run() (not only raw requests) drives the simulator; the sink's length follows the model."""

    async def main() -> int:
        async with SimEngine(profile(capacity=8), fixed(5)) as engine:
            result = await run("What is 2 + 2?", all_to_all([2]), engine,
                               config=RunConfig(sampling=SamplingParams(max_tokens=50)))
            return result.trace.effective_ttc

    assert simulate(main) == 3 * 5


def test_the_published_replay_sends_the_prompts_run_sends() -> None:
    """Same nodes, same lengths, same reference order: the replay's prompts are run()'s."""
    model = LengthModel(median=30, sigma=0.9, max_tokens=100, message_tokens=5)
    problem = Problem.coerce("What is 3 + 4?")

    async def ours() -> dict[str, tuple[ChatMessage, ...]]:
        async with SimEngine(profile(capacity=64), model) as engine:
            result = await run(problem, all_to_all([4, 2]), engine,
                               config=RunConfig(sampling=SamplingParams(max_tokens=100)))
            return {r.id: tuple(r.prompt) for r in result.trace.nodes}

    async def published() -> dict[str, tuple[ChatMessage, ...]]:
        async with SimEngine(profile(capacity=64), model) as engine:
            await replay_published([problem], [4, 2], engine, max_tokens=100)
            return {str(r.metadata.nodes[0]): r.messages for r in engine.requests}

    assert simulate(published) == simulate(ours)


def test_the_published_replay_holds_one_global_semaphore() -> None:
    async def main(concurrency: int) -> tuple[float, int]:
        async with SimEngine(profile(capacity=64), fixed(4)) as engine:
            problems = [f"problem {i}" for i in range(3)]
            result = await replay_published([Problem.coerce(p) for p in problems], [4], engine,
                                            max_tokens=None, concurrency=concurrency)
            return result.makespan, max(s.running for s in engine.spans)

    # 3 problems x (4 + 1) requests of 4 steps: with 2 slots, 15 requests in 8 waves at best
    makespan, peak = simulate(lambda: main(2))
    assert peak == 2
    assert makespan >= 8 * 4.0
    makespan, peak = simulate(lambda: main(64))
    assert makespan == pytest.approx(8.0)  # round 1 of all at once, then the sinks
    assert peak == 12


def test_a_quorum_over_the_simulator_cancels_stragglers_and_counts_their_steps() -> None:
    from pacore_agents import Policies, Quorum, RunTrace

    async def main(policies: Policies | None) -> tuple[float, list[RunTrace]]:
        model = LengthModel(median=40, sigma=0.8, max_tokens=400, message_tokens=10)
        traces: list[RunTrace] = []
        async with SimEngine(profile(capacity=64, step_base_s=0.02, prefill_tok_per_s=5000.0), model) as engine:
            async def one(i: int) -> None:
                traces.append((await run(f"problem {i}: what is {i} + 1?", all_to_all([8, 4]), engine,
                                         policies=policies)).trace)

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(one, i)
            return anyio.current_time(), traces

    fixed_span, _ = simulate(lambda: main(None))
    quorum = Policies(quorum=Quorum(q=[6, 3]))
    span, traces = simulate(lambda: main(quorum))
    again, traces2 = simulate(lambda: main(quorum))
    assert span < fixed_span and span == again  # virtual time: the quorum's choices repeat
    events = [e for t in traces for e in t.policy_events]
    assert {e.policy for e in events} == {"quorum"} and sum(len(e.cancelled) for e in events) == 3 * (2 + 1)
    cancelled = [n for t in traces for n in t.nodes if n.status == "cancelled"]
    assert all(0 < n.usage.completion_tokens < 400 for n in cancelled)  # steps run before the cancel
    assert sum(e.cancelled_tokens for e in events) == sum(n.usage.completion_tokens for n in cancelled)
    assert sorted(str(e.model_dump()) for t in traces2 for e in t.policy_events) == sorted(
        str(e.model_dump()) for e in events)
