"""The run view's data: one trace, its nodes' grades and its per-round summary.

Contract of ``run_view``: the trace as its JSON (nodes in the trace's order, each with its
``status`` resolved for version-1 traces), plus per node ``grade`` (the study's verdict on its
message, None outside a study) and ``answer`` (the answer extracted from its message, as the
study's metrics extract it), and ``rounds``: the study's per-round metrics of this one sample
(``_metrics.RoundMetrics``: tokens, failed nodes, message accuracy, consensus) with each round's
wall time from the trace. Nothing here is computed in the browser.
"""

from __future__ import annotations

from typing import Any

from pacore_agents._trace import NodeRecord, RunTrace
from pacore_agents.studies._grading import extract_answer
from pacore_agents.studies._metrics import sink_flags, topology_metrics
from pacore_agents.studies._store import NodeOutcome, SampleOutcome


def _ungraded(nodes: list[NodeRecord], sink: str | None, problem_id: str) -> SampleOutcome:
    """Nodes outside a study as an outcome with no verdicts: a node that sent a message is
    ``error`` (the grader's "no verdict": counted as sent, never as graded), else ``failed``."""
    outcomes = [NodeOutcome(id=n.id, round=n.round, agent=n.agent, inputs=n.inputs,
                            tokens=n.usage.completion_tokens,
                            status="error" if n.outcome == "ok" and n.message is not None else "failed",
                            answer=extract_answer(n.message)) for n in nodes]
    return SampleOutcome(arm="trace", problem_id=problem_id, sample=0, kind="topology", status="error",
                         effective_ttc=sum(n.tokens for n in outcomes), sink=sink, nodes=outcomes)


def parse_run(data: Any) -> dict[str, Any]:
    """A stored run as the JSON of a ``RunTrace``, or of a study baseline's sample (``kind``
    single or self-consistency: its trajectories, no sink). Raises ``ValueError`` (pydantic's
    ``ValidationError``) if it is neither."""
    if isinstance(data, dict) and data.get("kind") in ("single", "self-consistency") and "sink" not in data:
        nodes = [NodeRecord.model_validate(n).model_dump(mode="json") for n in data.get("nodes", [])]
        return {**data, "nodes": nodes, "sink": None, "answer": None, "rounds": []}
    return RunTrace.model_validate(data).model_dump(mode="json")


def run_view(data: dict[str, Any], outcome: SampleOutcome | None = None, *, title: str = "") -> dict[str, Any]:
    """The JSON the run view draws (see the module), from ``parse_run``'s output.
    ``outcome``: the study's graded sample (None outside a study)."""
    records = [NodeRecord.model_validate(n) for n in data["nodes"]]
    graded = outcome is not None
    sample = outcome if outcome is not None else _ungraded(records, data.get("sink"), str(data.get("problem_id")))
    by_id = {nd.id: nd for nd in sample.nodes}
    for rec, node in zip(records, data["nodes"], strict=True):
        mine = by_id.get(rec.id)
        node["status"] = rec.outcome
        node["grade"] = mine.status if graded and mine is not None else None
        node["answer"] = mine.answer if mine is not None else extract_answer(rec.message)
    walls = {r["round"]: r["ended_at"] - r["started_at"] for r in data.get("rounds") or []}
    rounds = [r.model_dump(mode="json") | {"seconds": walls.get(r.round)}
              for r in topology_metrics("run", [sample]).rounds]
    return {"title": title, "trace": data, "rounds": rounds, "graded": graded,
            "outcome": None if outcome is None else {
                "arm": outcome.arm, "sample": outcome.sample, "kind": outcome.kind, "status": outcome.status,
                "answer": outcome.answer, "flags": sink_flags(outcome).model_dump()}}
