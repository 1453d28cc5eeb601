"""The pinned PaCoRe protocol: golden vectors, byte for byte."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from pacore_agents import (
    Completion,
    FunctionEngine,
    GenerationRequest,
    NodeId,
    Reference,
    RunConfig,
    all_to_all,
    order_references,
    pacore_compact,
    run,
)
from pacore_agents._roles import pacore_synthesis_template

from .conftest import reference_dir


def test_shipped_template_is_the_reference_template() -> None:
    pinned = (reference_dir() / "synthesis_template.jinja").read_text(encoding="utf-8")
    assert pacore_synthesis_template() == pinned


def test_shuffle_permutations(golden: dict[str, Any]) -> None:
    for k, perm in golden["shuffle_permutation_seed42_by_k"].items():
        refs = [Reference(NodeId.of(1, i), "x" * 10, f"m{i}") for i in range(int(k))]
        ordered = order_references(refs, "pacore", seed=None, node=NodeId.of(2, 0))
        assert [r.source.agent for r in ordered] == perm, f"K={k}"
        items = list(range(int(k)))
        random.Random(42).shuffle(items)
        assert items == perm


def _run_case(case: dict[str, Any]) -> tuple[list[str], str]:
    contents = case["round_contents_in_completion_order"]
    precomputed = {NodeId.of(1, i): Completion(content=c) for i, c in enumerate(contents)}
    seen: list[GenerationRequest] = []

    def sink(request: GenerationRequest) -> list[str]:
        seen.append(request)
        return ["done"] * request.n

    async def main() -> Any:
        return await run(case["problem"], all_to_all([len(contents)]), FunctionEngine(sink),
                         config=RunConfig(), precomputed=precomputed)

    result = anyio.run(main)
    assert len(seen) == 1 and seen[0].n == 1
    sink_node = result.trace.node("r2.a0")
    refs = [result.trace.node(i).message for i in sink_node.inputs]
    assert seen[0].messages[-1].content == sink_node.prompt[-1].content
    return [r or "" for r in refs], seen[0].messages[-1].content


@pytest.mark.parametrize("index", range(15))
def test_golden_case(golden: dict[str, Any], index: int) -> None:
    case = golden["cases"][index]
    refs, rendered = _run_case(case)
    assert refs == case["ordered_compacted_references"]
    assert rendered == case["rendered_user_message"]


def test_golden_case_count(golden: dict[str, Any]) -> None:
    assert len(golden["cases"]) == 15


def test_compaction() -> None:
    assert pacore_compact("<think>a</think>b</think>c") == "c"
    assert pacore_compact("no think") == "no think"
    assert pacore_compact("<think>only reasoning</think>") == ""


def test_boxed_compaction() -> None:
    from pacore_agents._roles import boxed_compact, last_boxed

    assert boxed_compact("<think>\\boxed{1}</think>so \\boxed{\\frac{1}{2}} done") == "\\boxed{\\frac{1}{2}}"
    assert boxed_compact("no box here") == "no box here"
    assert boxed_compact("\\boxed{3} then \\boxed{4") == "\\boxed{3}"  # unbalanced tail skipped
    assert last_boxed("\\fbox {7}") == "7"
    assert last_boxed("nothing") is None
