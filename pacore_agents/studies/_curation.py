"""The paper's data curation, from stored grades: drop what cannot train, the stage-1 and stage-2
accuracy bands, and fresh |M| draws from a problem's pool.

Contract (``curate``; per study folder and problem, in store order):
1. Episodes whose own node failed are dropped (``failed_episodes``); so are episodes built on a
   failed reference (a reference the prompt lacks: ``failed_references``) unless
   ``include_degraded``, which keeps them with the missing ids in their rows.
2. Stage 1 (per domain, only for domains given a band): a problem stays if the mean accuracy of
   its pool, correct / graded (timeouts and errors are not graded), is strictly inside the
   band; a problem with no graded pool response is dropped.
3. Stage 2 (if a band is given): a problem stays if the accuracy of its remaining episodes,
   correct / graded, is strictly inside the band; none graded: dropped.
4. Draws (if ``draw_m``): ``draws`` prompts per remaining problem, each with |M| uniform in
   ``draw_m`` (capped at the pool's size; a pool smaller than the low end skips the problem),
   the references drawn without replacement by ``random.Random(derive_seed(seed, ...))``, then
   ordered and rendered exactly as a run renders a PaCoRe synthesis prompt (``order_references``
   with the published order, the built-in synthesizer role, no truncation).
Every removal is counted in ``CurationCounts`` (round-1 trajectories that failed, and so are in
no pool, as ``failed_pool_responses``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from pacore_agents._ids import NodeId
from pacore_agents._references import Reference, derive_seed, order_references
from pacore_agents._roles import PromptContext, builtin_roles

from ._episodes import Episode, PoolResponse, ProblemMaterial, StudyMaterial

Band = tuple[float, float]
#: the paper's bands: stage 1 per domain (> 0 and < 9/24 math, < 15/24 code), stage 2 (0, 1)
PAPER_REFERENCE_BANDS: dict[str, Band] = {"math": (0.0, 9 / 24), "code": (0.0, 15 / 24)}
PAPER_SYNTHESIS_BAND: Band = (0.0, 1.0)
PAPER_DRAW_M = (16, 24)


class CurationCounts(BaseModel):
    """What each step removed or made (problems and episodes)."""

    problems: int = 0
    episodes: int = 0
    failed_pool_responses: int = 0
    failed_episodes: int = 0
    failed_references: int = 0
    degraded_kept: int = 0
    stage1_problems: int = 0
    stage1_episodes: int = 0
    stage2_problems: int = 0
    stage2_episodes: int = 0
    kept_problems: int = 0
    kept_episodes: int = 0
    draws: int = 0
    draw_skipped_problems: int = 0
    draw_capped: int = 0


@dataclass
class CurationOptions:
    reference_bands: Mapping[str, Band] = field(default_factory=dict)
    synthesis_band: Band | None = None
    include_degraded: bool = False
    draw_m: tuple[int, int] | None = None
    draws: int = 1
    seed: int = 0


@dataclass
class CuratedProblem:
    study: StudyMaterial
    material: ProblemMaterial
    episodes: list[Episode]
    drawn: list[Episode] = field(default_factory=list)


def accuracy(statuses: Sequence[str | None]) -> float | None:
    """correct / graded (correct or wrong); None if nothing was graded."""
    graded = [s for s in statuses if s in ("correct", "wrong")]
    return None if not graded else sum(s == "correct" for s in graded) / len(graded)


def inside(value: float | None, band: Band) -> bool:
    return value is not None and band[0] < value < band[1]


def curate(studies: Sequence[StudyMaterial], options: CurationOptions) -> tuple[list[CuratedProblem], CurationCounts]:
    """The problems and episodes that pass (see the module contract), and the counts."""
    counts = CurationCounts()
    kept: list[CuratedProblem] = []
    for study in studies:
        for material in study.problems.values():
            if not material.episodes and not material.pool:
                continue  # not run (a partial study): nothing to count
            counts.problems += 1
            counts.episodes += len(material.episodes)
            counts.failed_pool_responses += material.failed_pool
            episodes = _usable(material.episodes, options, counts)
            band = options.reference_bands.get(study.domain)
            if band is not None and not inside(accuracy([r.status for r in material.pool]), band):
                counts.stage1_problems += 1
                counts.stage1_episodes += len(episodes)
                continue
            if options.synthesis_band is not None and not inside(
                    accuracy([e.status for e in episodes]), options.synthesis_band):
                counts.stage2_problems += 1
                counts.stage2_episodes += len(episodes)
                continue
            item = CuratedProblem(study, material, episodes)
            if options.draw_m is not None:
                item.drawn = _draws(study, material, options, counts)
            counts.kept_problems += 1
            counts.kept_episodes += len(episodes)
            kept.append(item)
    return kept, counts


def _usable(episodes: Sequence[Episode], options: CurationOptions, counts: CurationCounts) -> list[Episode]:
    out = []
    for ep in episodes:
        if ep.status == "failed" or ep.response is None:
            counts.failed_episodes += 1
        elif ep.missing_references and not options.include_degraded:
            counts.failed_references += 1
        else:
            counts.degraded_kept += bool(ep.missing_references)
            out.append(ep)
    return out


def _draws(study: StudyMaterial, material: ProblemMaterial, options: CurationOptions,
           counts: CurationCounts) -> list[Episode]:
    assert options.draw_m is not None
    low, high = options.draw_m
    pool = material.pool
    if len(pool) < low:
        counts.draw_skipped_problems += 1
        return []
    out = []
    for draw in range(options.draws):
        rng = random.Random(derive_seed(options.seed, "draw", study.folder, material.problem.id, draw))
        size = rng.randint(low, min(high, len(pool)))
        counts.draw_capped += high > len(pool)
        picked = sorted(rng.sample(range(len(pool)), size))  # pool order: a run's graph order
        out.append(render_draw(material, [pool[i] for i in picked], draw))
    counts.draws += len(out)
    return out


def render_draw(material: ProblemMaterial, references: Sequence[PoolResponse], draw: int) -> Episode:
    """The synthesis prompt a default run sends with ``references`` as its previous round (in
    graph order): the published order, the built-in synthesizer role, byte for byte."""
    node = NodeId.of(2, 0)
    refs = [Reference(NodeId.of(1, i), r.content, r.message) for i, r in enumerate(references)]
    ordered = order_references(refs, "pacore", seed=None, node=node)
    role = builtin_roles()["synthesizer"]
    prompt = role.build_prompt(PromptContext(material.problem, node, 2, [r.message or "" for r in ordered]))
    shown = [references[r.source.agent] for r in ordered]
    return Episode(arm=None, problem_id=str(material.problem.id), sample=None, node=None, round=2,
                   prompt=prompt, response=None, status=None, references=tuple(r.id for r in shown),
                   reference_grades=tuple(r.status for r in shown), draw=draw)
