"""What a study will run, computed from the spec and the dataset alone (no engine): the
``pacore study run --dry-run`` output.

Per arm: its kind, widths (rounds of the unrolled graph, the sink's last), nodes per unit,
units (problems x samples), the largest ``max_tokens`` of any of its nodes, and an upper bound
on a unit's effective TTC (the sum over its nodes of each node's ``max_tokens``: study
sampling, then the arm's, then the node's role's; a policy may spend less, never more; the note
names it). Self-consistency matched to topology arms
has no bound before they ran (N is matched to their measured TTC, which is at most the bound
shown for them); with fixed ``n`` its bound is ``max(n)`` trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from rich.table import Table

from pacore_agents._richtext import add_text_row, text_table
from pacore_agents._roles import default_role

from ._datasets import load_problems
from ._spec import StudySpec, role_summary


class ArmPlan(BaseModel):
    name: str
    kind: str
    widths: list[int]
    nodes: int
    units: int
    max_tokens: int | None
    ttc_bound: int | None
    note: str = ""
    roles: dict[str, dict[str, str]] = {}


def plan_study(spec: StudySpec) -> tuple[int, list[ArmPlan]]:
    """(problems, one ``ArmPlan`` per arm); loads the dataset, never an engine."""
    problems = len(load_problems(spec.dataset))
    units = problems * spec.samples
    plans: list[ArmPlan] = []
    for arm in spec.arms:
        sampling = spec.sampling.merged(arm.sampling)
        if arm.baseline is not None:
            size = 1 if arm.baseline == "single" else (max(arm.n) if arm.n else None)
            note = "" if arm.baseline == "single" or arm.n else \
                "N matched on " + ("declared cost" if arm.match_on == "cost" else "effective TTC") + " to " \
                + ", ".join(arm.match or [a.name for a in spec.arms if a.baseline is None])
            bound = None if size is None or sampling.max_tokens is None else size * sampling.max_tokens
            plans.append(ArmPlan(name=arm.name, kind=arm.baseline, widths=[size] if size else [], nodes=size or 0,
                                 units=units, max_tokens=sampling.max_tokens, ttc_bound=bound, note=note))
            continue
        topology = arm.build_topology()
        roles = arm.build_roles(topology)
        limits: list[int | None] = []
        for node in topology.nodes():
            role = roles.get(topology.role_of(node) or default_role(node, topology.sink))
            limits.append(sampling.merged(role.sampling if role else None).max_tokens)
        known = [x for x in limits if x is not None]
        policies = arm.build_policies(topology)
        note = "" if policies is None or policies.empty else f"policies: {policies.label()}" + (
            f"; twin {arm.twin}" if arm.twin else "")
        plans.append(ArmPlan(
            name=arm.name, kind="topology", widths=topology.widths, nodes=len(limits), units=units, note=note,
            max_tokens=max(known) if known else None,
            ttc_bound=sum(known) if len(known) == len(limits) else None,
            roles={n: role_summary(r) for n, r in arm.used_roles(topology).items()}))
    return problems, plans


def plan_table(spec: StudySpec, problems: int, plans: Sequence[ArmPlan]) -> Table:
    table = text_table(title=f"study {spec.name}: {problems} problems x {spec.samples} samples (dry run: "
                  "no engine started)", caption="TTC bound: the most completion tokens one unit can "
                  "use (every node at its max_tokens); —: unbounded (no max_tokens) or not known yet")
    for col in ("arm", "kind", "widths", "nodes/unit", "units", "max tokens", "TTC bound/unit", "note"):
        table.add_column(col, justify="left" if col in ("arm", "kind", "note") else "right")
    for p in plans:
        add_text_row(table, p.name, p.kind, ",".join(map(str, p.widths)) or "—", str(p.nodes or "—"), str(p.units),
                      "—" if p.max_tokens is None else str(p.max_tokens),
                      "—" if p.ttc_bound is None else f"{p.ttc_bound:,}", p.note)
    return table
