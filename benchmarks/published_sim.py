"""The published PaCoRe request pattern, replayed against any ``Engine`` (here: the simulator).

Mirrors ../shared/perf_anchor/published_pattern.py (stepfun-ai/PaCoRe ``base_exp.py``, see
REFERENCE_PATTERN.md): every problem starts at once; ONE global semaphore of ``concurrency``
requests (64 in its code, 1024 in its shipped example script) around every engine call; round r
sends K separate ``n=1`` requests with identical messages; a barrier per round per problem;
round r+1's prompt is the PaCoRe synthesis of round r's compacted answers (text after the last
``</think>``), a final round of 1 appended.

Prompts come from pacore_agents itself (``RoleBook``: explorer / synthesizer / sink, and
``order_references`` with the ``pacore`` policy: sort by raw length, ``Random(42)`` shuffle),
so they are the prompts ``run`` sends, token for token. (The published driver collects answers
in completion order before its stable sort, so equal-length answers may sit in another order:
the prompt's length, which is all the simulator's cost depends on, is the same.)
Each request names its node (``metadata.nodes = (NodeId(round, k),)``), so the simulator draws
the same trajectory length for it as for ``run``'s node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from pacore_agents import (
    ChatMessage,
    Engine,
    GenerationRequest,
    NodeId,
    Problem,
    PromptContext,
    Reference,
    RequestMetadata,
    RoleBook,
    SamplingParams,
    order_references,
    pacore_compact,
)

#: the published default (base_exp.py:33)
PUBLISHED_CONCURRENCY = 64
#: the semaphore of the published example script (example:21): the pipeline as shipped
SHIPPED_CONCURRENCY = 1024


@dataclass(frozen=True)
class PublishedResult:
    """Virtual seconds from start to the last answer, and each problem's answer."""

    makespan: float
    answers: dict[str, str]
    requests: int


def round_prompt(book: RoleBook, problem: Problem, round_: int, num_rounds: int,
                 previous: Sequence[Reference]) -> tuple[ChatMessage, ...]:
    """The messages every request of ``round_`` sends (the PaCoRe prompt, as ``run`` builds it)."""
    node = NodeId.of(round_, 0)
    role = "explorer" if round_ == 1 else "sink" if round_ == num_rounds else "synthesizer"
    ordered = order_references(previous, "pacore", seed=None, node=node)
    ctx = PromptContext(problem, node, num_rounds, [ref.message or "" for ref in ordered])
    return book.get(role, node).build_prompt(ctx)


async def replay_published(problems: Sequence[Problem], widths: Sequence[int], engine: Engine, *,
                           max_tokens: int | None, concurrency: int = PUBLISHED_CONCURRENCY) -> PublishedResult:
    """Run the published pattern for ``problems`` at ``widths`` (+ a sink round) on ``engine``."""
    semaphore = anyio.Semaphore(concurrency)
    book = RoleBook()
    rounds = [*widths, 1]
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=max_tokens)
    answers: dict[str, str] = {}
    sent = 0

    async def call(problem: Problem, messages: tuple[ChatMessage, ...], node: NodeId,
                   out: dict[NodeId, str]) -> None:
        nonlocal sent
        request = GenerationRequest(messages=messages, n=1, sampling=sampling, metadata=RequestMetadata(
            problem_id=problem.id, round=node.round, nodes=(node,)))
        async with semaphore:  # held for the whole call, as base_exp.py:107 does
            sent += 1
            completions = await engine.generate(request)
        out[node] = completions[0].content

    async def one_problem(problem: Problem) -> None:
        previous: list[Reference] = []
        for round_, width in enumerate(rounds, start=1):
            messages = round_prompt(book, problem, round_, len(rounds), previous)
            contents: dict[NodeId, str] = {}
            async with anyio.create_task_group() as tg:  # the per-problem barrier
                for agent in range(width):
                    tg.start_soon(call, problem, messages, NodeId.of(round_, agent), contents)
            previous = [Reference(node, text, pacore_compact(text)) for node, text in sorted(contents.items())]
        answers[str(problem.id)] = previous[0].message or ""

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:  # every problem at once (asyncio.gather)
        for problem in problems:
            tg.start_soon(one_problem, problem)
    return PublishedResult(anyio.current_time() - start, answers, sent)
