"""A custom role and a custom topology in Python, run on the embedded engine (or a fake).

    python examples/custom_role_and_topology.py            # embedded SmolLM2 on vLLM CPU
    python examples/custom_role_and_topology.py --fake     # FunctionEngine, instant

The topology: two teams of three solve independently; each team's members then hear only
their own team, except a "bridge" agent that hears everyone; a sink synthesises.
The role: a "skeptic" that must find a flaw in each reference before answering.
"""

from __future__ import annotations

import sys

import networkx as nx

from pacore_agents import (
    FunctionEngine,
    GenerationRequest,
    PromptContext,
    Role,
    RunConfig,
    SamplingParams,
    from_graph,
    run_sync,
)
from pacore_agents.engines import VLLMOptions, create_engine


class Skeptic(Role):
    """A Python role: its own prompt, and a compaction that keeps only the last paragraph."""

    def build_prompt(self, ctx: PromptContext) -> tuple:  # type: ignore[type-arg]
        refs = "\n\n".join(f"[{i}] {r}" for i, r in enumerate(ctx.references, 1))
        text = (f"{ctx.problem.statement}\n\nProposed answers:\n{refs}\n\n"
                "Find one flaw in each proposed answer, then give the correct final answer in \\boxed{}.")
        return ctx.problem.with_statement(text)

    def compact(self, completion):  # type: ignore[no-untyped-def]
        return completion.content.strip().split("\n\n")[-1]


def build_topology():  # type: ignore[no-untyped-def]
    comm = nx.DiGraph()
    teams = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    for members in teams.values():
        comm.add_edges_from((u, v) for u in members for v in members)  # each hears its team
    comm.add_edges_from((u, "bridge") for u in teams["a"] + teams["b"] + ["bridge"])
    return from_graph(comm, rounds=2, name="two-teams-and-a-bridge", roles={"bridge": "skeptic"})


def fake(request: GenerationRequest) -> list[str]:
    return [f"<think>...</think>I get \\boxed{{{12 + i % 2}}}" for i in range(request.n)]


def main() -> None:
    topology = build_topology()
    engine = FunctionEngine(fake) if "--fake" in sys.argv else create_engine(VLLMOptions())
    config = RunConfig(sampling=SamplingParams(temperature=0.8, max_tokens=160))
    result = run_sync("A farmer has 7 cows and buys 5 more. How many cows?", topology, engine,
                      config=config, roles=[Skeptic("skeptic")])
    for node in result.trace.nodes:
        print(f"{node.id:7} {node.role:11} hears {', '.join(node.inputs) or '-'}")
    print("answer:", result.answer)


if __name__ == "__main__":
    main()
