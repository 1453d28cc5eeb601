"""The run view's data: one trace, its nodes' grades and its per-round summary.

Contract of ``run_view``: the trace as its JSON (nodes in the trace's order, each with its
``status`` resolved for version-1 traces), plus per node ``grade`` (the study's verdict on its
message, None outside a study) and ``answer`` (the answer extracted from its message, as the
study's metrics extract it), and ``rounds``: the study's per-round metrics of this one sample
(``_metrics.RoundMetrics``: tokens, failed nodes, message accuracy, consensus) with each round's
wall time from the trace. Nothing here is computed in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from pacore_agents._answers import extract_answer
from pacore_agents._trace import NodeRecord, RunTrace
from pacore_agents.studies._metrics import sink_flags, topology_metrics
from pacore_agents.studies._store import NodeOutcome, SampleOutcome


def _ungraded(nodes: list[NodeRecord], sink: str | None, problem_id: str) -> SampleOutcome:
    """Nodes outside a study as an outcome with no verdicts: a node that sent a message is
    ``error`` (the grader's "no verdict": counted as sent, never as graded), else ``failed``
    (``skipped`` and ``cancelled``, a policy's, keep their status).
    Built unvalidated (``model_construct``): every field comes from a validated record."""
    outcomes = [NodeOutcome.model_construct(
        id=n.id, round=n.round, agent=n.agent, inputs=n.inputs, tokens=n.usage.completion_tokens,
        status="error" if n.outcome == "ok" and n.message is not None else (
            n.outcome if n.outcome in ("skipped", "cancelled") else "failed"),
        answer=extract_answer(n.message), cross_refs=False) for n in nodes]
    return SampleOutcome.model_construct(
        arm="trace", problem_id=problem_id, sample=0, kind="topology", status="error", answer=None,
        effective_ttc=sum(n.tokens for n in outcomes), sink=sink, nodes=outcomes, degraded=False, elapsed=0.0)


@dataclass
class ParsedRun:
    """A stored run: its JSON as stored (sent to the browser) and its nodes, validated."""

    data: dict[str, Any]
    records: list[NodeRecord]


def parse_run(data: Any) -> ParsedRun:
    """A stored run, the JSON of a ``RunTrace`` or of a study baseline's sample (``kind``
    single or self-consistency: its trajectories, no sink). Validated once; raises pydantic's
    ``ValidationError`` (or ``TypeError``) if it is neither."""
    if not isinstance(data, dict):
        raise TypeError(f"a run is a JSON object, not {type(data).__name__}")
    if data.get("kind") in ("single", "self-consistency") and "sink" not in data:
        records = _NODES.validate_python(data.get("nodes", []))
        return ParsedRun({**data, "sink": None, "answer": None, "rounds": []}, records)
    return ParsedRun(data, RunTrace.model_validate(data).nodes)


_NODES = TypeAdapter(list[NodeRecord])


def run_view(run: ParsedRun, outcome: SampleOutcome | None = None, *, title: str = "") -> dict[str, Any]:
    """The JSON the run view draws (see the module). ``outcome``: the study's graded sample
    (None outside a study). Node dicts get ``status``, ``grade`` and ``answer`` (in place)."""
    data, records = run.data, run.records
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
