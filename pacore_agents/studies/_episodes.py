"""A study folder read back as training material: synthesis episodes and reference pools.

Contract:
- ``load_study_material(folder)`` reads the store (read-only), the saved spec fingerprint (for
  the dataset and arms; it holds no endpoint or key) and the dataset itself (for the gold
  answers); the problem messages in every stored trace must equal the dataset's, or the
  dataset changed since the study ran (``ConfigError``).
- An **episode** is one synthesis node (a node with inputs) of a stored topology sample: its
  prompt exactly as the trace stored it (what the engine was sent), its response, its grade,
  and its references (``arm/s<sample>/<node>`` ids in prompt order) with their grades.
- A problem's **pool** is every round-1 trajectory without inputs (topology arms and
  baselines) that did not fail; trajectories shared through the study's trajectory pool count
  once. Order: by (arm, sample, node) of their first appearance.
- Everything is in store order: arms, problems, samples (``ResultStore.outcomes``), nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pacore_agents._errors import ConfigError
from pacore_agents._messages import ChatMessage, Problem
from pacore_agents._trace import NodeRecord

from ._datasets import DatasetSpec, load_problems
from ._rewards import reward_grading
from ._spec import GradingSpec
from ._store import NodeOutcome, NodeStatus, ResultStore

#: licences of the vendored and generated sources (see data/ATTRIBUTION.md)
_LICENSES = {"gsm8k": "mit", "math500": "mit", "humaneval": "mit", "arithmetic": "apache-2.0",
             "code-tasks": "apache-2.0"}


@dataclass(frozen=True)
class PoolResponse:
    """One independent trajectory of a problem: raw content, compacted message, grade."""

    id: str
    content: str
    message: str
    status: NodeStatus


@dataclass(frozen=True)
class Episode:
    """One synthesis step (see the module contract). A prompt drawn anew from the pool
    (``draw`` set) has no arm, sample, node, response or grade."""

    arm: str | None
    problem_id: str
    sample: int | None
    node: str | None
    round: int
    prompt: tuple[ChatMessage, ...]
    response: str | None
    status: NodeStatus | None
    references: tuple[str, ...]
    reference_grades: tuple[str, ...]
    missing_references: tuple[str, ...] = ()
    draw: int | None = None


@dataclass
class ProblemMaterial:
    """One problem of a study: its messages and gold, its pool, its episodes."""

    problem: Problem
    pool: list[PoolResponse] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    failed_pool: int = 0


@dataclass
class StudyMaterial:
    """What one study folder holds for training (see ``load_study_material``)."""

    name: str
    folder: str
    dataset: str
    domain: str
    license: str | None
    problems: dict[str, ProblemMaterial]
    arms: list[str]
    #: the study's grading settings as rewards read them (``reward_grading``)
    grading: str = ""
    baseline_samples: int = 0
    #: local paths the study names (its dataset file, topology files): kept out of exports
    local_paths: list[str] = field(default_factory=list)


def unit_id(arm: str, sample: int, node: str) -> str:
    return f"{arm}/s{sample}/{node}"


def _fingerprint(store: ResultStore, folder: Path) -> dict[str, Any]:
    raw = store.get_meta("fingerprint")
    if raw is None:
        raise ConfigError(f"{folder} holds no study spec (no fingerprint in its store): not a study folder")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ConfigError(f"{folder}: the stored spec fingerprint is not a table")
    return data


def dataset_label(spec: DatasetSpec) -> str:
    """A name for the source data that holds no path: the vendored name, the generator's
    ('arithmetic', 'code-tasks'), a hub dataset's name without its owner, or the file's name
    without suffixes."""
    if spec.kind in ("arithmetic", "code-tasks"):
        return spec.kind
    if spec.name is not None:
        return spec.name
    if spec.hub is not None:
        return spec.hub.rsplit("/", 1)[-1]
    assert spec.path is not None
    return spec.path.name.split(".")[0] or "dataset"


def _open(folder: Path) -> ResultStore:
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a study folder written by `pacore study run`")
    if not (folder / ResultStore.DB_NAME).is_file():
        raise ConfigError(f"{folder} is not a study folder (no {ResultStore.DB_NAME}): give the --out "
                          "folder of `pacore study run`")
    return ResultStore.open(folder)


def load_study_material(folder: str | Path) -> StudyMaterial:
    """Read one study folder (see the module contract)."""
    path = Path(folder)
    store = _open(path)
    try:
        fp = _fingerprint(store, path)
        try:
            dataset = DatasetSpec.model_validate(fp.get("dataset") or {})
        except ValidationError as exc:
            raise ConfigError(f"{path}: the stored dataset spec is not valid: {exc.errors()[0]['msg']}") from exc
        problems = {str(p.id): ProblemMaterial(p) for p in load_problems(dataset)}
        try:
            grading = GradingSpec.model_validate(fp.get("grading") or {})
        except ValidationError as exc:
            raise ConfigError(f"{path}: the stored grading spec is not valid: {exc.errors()[0]['msg']}") from exc
        material = StudyMaterial(name=str(fp.get("name") or "study"), folder=path.resolve().name,
                                 dataset=dataset_label(dataset), domain=grading.grader,
                                 grading=reward_grading(grading),
                                 license=_LICENSES.get(dataset_label(dataset)) if dataset.path is None
                                 and dataset.hub is None else None,
                                 problems=problems, arms=[str(a.get("name")) for a in fp.get("arms") or []])
        if dataset.path is not None:
            material.local_paths += [str(dataset.path), str(dataset.path.parent)]
        material.local_paths += [str(a["topology"]) for a in fp.get("arms") or []
                                 if str(a.get("topology") or "").startswith("/")]
        seen: set[tuple[str, str, int, str, str]] = set()
        for outcome in store.outcomes():
            entry = problems.get(outcome.problem_id)
            if entry is None:
                raise ConfigError(f"{path}: stored problem {outcome.problem_id!r} is not in the study's "
                                  "dataset any more (the dataset changed since the study ran)")
            trace = store.trace_json(outcome.arm, outcome.problem_id, outcome.sample) or {}
            _check_problem(path, entry.problem, trace)
            records = [NodeRecord.model_validate(n) for n in trace.get("nodes") or []]
            grades = {nd.id: nd for nd in outcome.nodes}
            if outcome.kind != "topology":
                material.baseline_samples += 1
            for rec in records:
                graded = grades.get(rec.id)
                if rec.status in ("skipped", "cancelled"):  # a policy's: never a message, never a failure
                    continue
                if not rec.inputs and rec.round == 1:
                    _add_pool(entry, outcome.arm, outcome.sample, rec, graded, seen)
                elif rec.inputs and outcome.kind == "topology":
                    entry.episodes.append(_episode(outcome.arm, outcome.problem_id, outcome.sample, rec,
                                                   graded, grades))
        return material
    finally:
        store.close()


def _check_problem(path: Path, problem: Problem, trace: dict[str, Any]) -> None:
    stored = [ChatMessage.model_validate(m) for m in trace.get("problem") or []]
    if stored and tuple(stored) != problem.messages:
        raise ConfigError(f"{path}: problem {problem.id!r} reads differently in the dataset now than in "
                          "the stored traces (the dataset changed since the study ran)")


def _status(graded: NodeOutcome | None) -> NodeStatus:
    return graded.status if graded is not None else "failed"


def _add_pool(entry: ProblemMaterial, arm: str, sample: int, rec: NodeRecord, graded: NodeOutcome | None,
              seen: set[tuple[str, str, int, str, str]]) -> None:
    status = _status(graded)
    if status == "failed" or rec.content is None:
        entry.failed_pool += 1
        return
    key = (str(entry.problem.id), arm if not rec.notes.get("precomputed") else "", sample, rec.id, rec.content)
    if key in seen:  # a pooled trajectory, already counted for an earlier arm
        return
    seen.add(key)
    entry.pool.append(PoolResponse(unit_id(arm, sample, rec.id), rec.content, rec.message or "", status))


def _episode(arm: str, problem_id: str, sample: int, rec: NodeRecord, graded: NodeOutcome | None,
             grades: dict[str, NodeOutcome]) -> Episode:
    return Episode(arm=arm, problem_id=problem_id, sample=sample, node=rec.id, round=rec.round,
                   prompt=tuple(rec.prompt), response=rec.content, status=_status(graded),
                   references=tuple(unit_id(arm, sample, i) for i in rec.inputs),
                   reference_grades=tuple(_status(grades.get(i)) for i in rec.inputs),
                   missing_references=tuple(unit_id(arm, sample, i) for i in rec.missing_inputs))
