"""Running a study: every arm on every problem, ``samples`` times, resumably.

Contract:
- One engine for all arms (``create_engine(spec.engine)`` unless one is passed) and its one
  ``Executor``: every node of every unit in flight sits in one queue, admitted by sequences up
  to the engine's capacity, deeper rounds and earlier-started units first. ``[engines.NAME]``
  add engines, each with its own executor, bound to roles (``_engines``); a unit whose engine
  reported no usage fails (it is not stored).
- Units (arm, problem, sample) start in problem order while the executor has room (fewer than
  a window of sequences waiting), so the engine stays full and memory stays bounded; grading
  and storing happen outside the window.
- Everything is built and checked (dataset, engine start) before the store is first written,
  so a bad engine leaves the out dir as it was.
- A unit is skipped if its key is in the store; otherwise it runs, its nodes are graded, and
  its row is written in one transaction. Units that fail (``RunFailedError``/``EngineError``
  after retries) are NOT stored: they are reported and retried by the next run.
- A topology unit starts grading each node the moment its record is final
  (``GradeAsFinished``), so grading overlaps the rest of the run instead of piling up after
  the sinks; the verdicts are the same (the grader's cache serves the unit's final pass).
- Phase 1 runs topology arms and ``single``; phase 2 (self-consistency) starts only when phase 1
  is complete, because its vote sizes are computed from phase 1 (see ``_baselines``).
- An arm's policies compare answers with the study's grader (``task_equivalence``); a sample
  answered by a consensus stop's plurality message is graded on it (``answered_by``); a
  policy's ``skipped`` and ``cancelled`` nodes keep that status (no message; tokens counted).
- Log lines of a unit carry ``problem``, ``arm`` and ``sample`` (structlog contextvars).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pacore_agents._engine import (
    Completion,
    Engine,
    EngineStats,
    prefill_between,
)
from pacore_agents._errors import ConfigError, EngineError, RunFailedError, unwrap_exception_group
from pacore_agents._executor import Executor, executor_for
from pacore_agents._ids import NodeId
from pacore_agents._logging import bind_context, get_logger
from pacore_agents._messages import Problem
from pacore_agents._references import derive_seed
from pacore_agents._run import run
from pacore_agents._trace import NodeRecord
from pacore_agents.engines import create_engine

from ._baselines import (
    Admitted,
    TrajectoryPool,
    budget_matched_sizes,
    generate_trajectories,
    majority_vote,
    pool_compatible,
    trajectory_records,
    ttc_budgets,
)
from ._budgets import match_record, mean_sample_costs, stored_pairs, trajectory_cost
from ._code_grading import CodeGrader
from ._datasets import load_problems
from ._engines import create_engines, require_usage
from ._equivalence import task_equivalence
from ._graders import AnswerGrader, GradeAsFinished, make_grader
from ._policy_report import policy_counts
from ._spec import ArmSpec, StudySpec
from ._store import NodeOutcome, NodeStatus, ResultStore, SampleOutcome

log = get_logger("pacore_agents.studies")

#: A trajectory "cross-checks" if its content or reasoning mentions a reference by number
#: ("Reference 3", "ref 2", "ref. #1", "references 1") or says 参考.
CROSS_REF_RE = re.compile(r"\b(?:references?|refs?)\b\.?\s*(?:#|no\.?)?\s*\d+|参考", re.IGNORECASE)


def mentions_references(rec: NodeRecord) -> bool:
    return bool(CROSS_REF_RE.search(rec.content or "") or CROSS_REF_RE.search(rec.reasoning or ""))


@dataclass
class StudyRunSummary:
    """What one ``run_study`` call did."""

    total: int
    already_done: int
    ran: int = 0
    failed: list[str] = field(default_factory=list)
    sc_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_phase2: bool = False
    elapsed: float = 0.0
    engine: dict[str, Any] = field(default_factory=dict)
    #: code grading: tests and samples executed, time, tests/s, sandbox and mode
    grading: dict[str, Any] = field(default_factory=dict)


class StudyRunner:
    def __init__(self, spec: StudySpec, store: ResultStore, engine: Engine, grader: AnswerGrader,
                 problems: Sequence[Problem], progress: Progress | None = None,
                 engines: Mapping[str, Engine] | None = None) -> None:
        self.spec, self.store, self.engine, self.grader = spec, store, engine, grader
        self.engines = dict(engines or {})  # the named engines besides the default
        self.executor = executor_for(engine)
        self.requests = Admitted(self.executor, spec.retry)
        self.problems = list(problems)
        self.progress = progress
        seed = spec.seed if spec.seeded else None
        self.pool = TrajectoryPool(store, self.requests, spec.sampling, seed) if spec.trajectory_pool else None
        self.topologies = {a.name: a.build_topology() for a in spec.arms if a.baseline is None}
        self.sc_sizes: dict[str, dict[str, int]] = {}
        self._task: object | None = None

    # --- grading ---
    async def _grade_nodes(self, problem: Problem, records: Sequence[NodeRecord]) -> list[NodeOutcome]:
        out: list[NodeOutcome | None] = [None] * len(records)

        async def one(i: int, rec: NodeRecord) -> None:
            status: NodeStatus = "failed"
            if rec.status in ("skipped", "cancelled"):  # a policy's: no message, tokens counted
                status = rec.status
            answer, tests, pass_rate = None, None, None
            if rec.error is None and rec.content is not None:
                grade = await self.grader.grade(problem.answer, rec.message)
                status, answer, tests, pass_rate = grade.status, grade.answer, grade.tests, grade.pass_rate
            out[i] = NodeOutcome(id=rec.id, round=rec.round, agent=rec.agent, inputs=list(rec.inputs),
                                 tokens=rec.usage.completion_tokens, status=status, answer=answer,
                                 cross_refs=bool(rec.inputs) and mentions_references(rec),
                                 tests=tests, pass_rate=pass_rate)

        async with anyio.create_task_group() as tg:
            for i, rec in enumerate(records):
                tg.start_soon(one, i, rec)
        return [o for o in out if o is not None]

    # --- units ---
    async def _trajectories(self, arm: ArmSpec, problem: Problem, sample: int, n: int) -> tuple[list[Completion], bool]:
        if self.pool is not None and arm.sampling is None:
            return await self.pool.get(problem, sample, n), True
        sampling = self.spec.sampling.merged(arm.sampling)
        comps = await generate_trajectories(
            self.requests, problem, sampling, n=n, first=0,
            seed=derive_seed(self.spec.seed, arm.name, problem.id, sample) if self.spec.seeded else None,
            tag=f"{problem.id}|{arm.name}|s{sample}")
        return comps, False

    async def _baseline(self, arm: ArmSpec, problem: Problem, sample: int) -> tuple[SampleOutcome, str]:
        n = 1 if arm.baseline == "single" else max(self.sc_sizes[arm.name].values())
        comps, pooled = await self._trajectories(arm, problem, sample, n)
        records = trajectory_records(problem, comps, arm.compaction or "pacore", pooled=pooled)
        require_usage(records)
        nodes = await self._grade_nodes(problem, records)
        if arm.baseline == "single":
            status, answer = nodes[0].status, nodes[0].answer
        else:
            answer, rep, _ = majority_vote([nd.answer for nd in nodes])
            status = nodes[rep].status if rep is not None else "wrong"
        assert arm.baseline is not None
        outcome = SampleOutcome(arm=arm.name, problem_id=problem.id, sample=sample, kind=arm.baseline,
                                status=status, answer=answer, effective_ttc=sum(nd.tokens for nd in nodes),
                                nodes=nodes)
        trace = {"kind": arm.baseline, "problem_id": problem.id, "problem": [m.model_dump() for m in problem.messages],
                 "sizes": self.sc_sizes.get(arm.name), "nodes": [r.model_dump(mode="json") for r in records]}
        return outcome, json.dumps(trace, ensure_ascii=False)

    async def _topology(self, arm: ArmSpec, problem: Problem, sample: int) -> tuple[SampleOutcome, str]:
        topology = self.topologies[arm.name]
        precomputed: dict[NodeId, Completion] | None = None
        if self.pool is not None and pool_compatible(arm, topology):
            first = topology.nodes(1)
            comps = await self.pool.get(problem, sample, len(first))
            precomputed = dict(zip(first, comps, strict=True))
        failure: RunFailedError | EngineError | None = None
        async with anyio.create_task_group() as tg:  # grades started as nodes finish
            try:
                result = await run(problem, topology, self.engine, engines=self.engines,
                                   config=self.spec.run_config(arm, sample),
                                   roles=arm.build_roles(topology), precomputed=precomputed,
                                   policies=arm.build_policies(topology),
                                   equivalence=task_equivalence(self.grader, problem.answer),
                                   observer=GradeAsFinished(tg, self.grader, problem.answer),
                                   unit=f"{problem.id}|{arm.name}|s{sample}")
            except (RunFailedError, EngineError) as exc:
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        trace = result.trace
        require_usage(trace.nodes)
        nodes = await self._grade_nodes(problem, trace.nodes)
        final = trace.answered_by or trace.sink  # a consensus stop may answer from a message
        sink = next(nd for nd in nodes if nd.id == final)
        outcome = SampleOutcome(arm=arm.name, problem_id=problem.id, sample=sample, kind="topology",
                                status=sink.status, answer=sink.answer, effective_ttc=trace.effective_ttc,
                                sink=trace.sink, nodes=nodes, degraded=trace.degraded,
                                elapsed=trace.ended_at - trace.started_at,
                                answered_by=None if final == trace.sink else final,
                                policy=policy_counts(trace))
        return outcome, trace.model_dump_json()

    async def _unit(self, arm: ArmSpec, problem: Problem, sample: int, summary: StudyRunSummary) -> None:
        key = f"{arm.name}/{problem.id}/s{sample}"
        with bind_context(problem=problem.id, arm=arm.name, sample=sample):
            try:
                if arm.baseline is None:
                    outcome, trace_json = await self._topology(arm, problem, sample)
                else:
                    outcome, trace_json = await self._baseline(arm, problem, sample)
            except (RunFailedError, EngineError) as exc:
                log.warning("sample failed", unit=key, error=str(exc))
                summary.failed.append(f"{key}: {exc}")
            else:
                await self.store.call(self.store.put, outcome, trace_json)
                summary.ran += 1
        if self.progress is not None and self._task is not None:
            self.progress.advance(self._task)  # type: ignore[arg-type]

    # --- phases ---
    async def _phase(self, arms: Sequence[ArmSpec], done: set[tuple[str, str, int]], summary: StudyRunSummary) -> None:
        async with anyio.create_task_group() as tg:
            with self.executor.feeder():  # deeper rounds first until the last unit has started
                for problem in self.problems:
                    for sample in range(self.spec.samples):
                        for arm in arms:
                            if (arm.name, problem.id, sample) not in done:
                                await self.executor.room()
                                tg.start_soon(self._unit, arm, problem, sample, summary)

    def _compute_sc_sizes(self, arm: ArmSpec) -> tuple[dict[str, int], dict[str, Any] | None]:
        """(vote sizes, what they were matched on: ``match_record``, None for fixed sizes)."""
        if arm.n is not None:
            return {f"n={k}": k for k in sorted(set(arm.n))}, None
        targets = arm.match or list(self.topologies)
        if arm.match_on == "cost":
            pairs = stored_pairs(self.store)
            budgets, unit = mean_sample_costs(pairs, self.spec.costs, targets), trajectory_cost(pairs, self.spec.costs)
        else:
            budgets, unit = ttc_budgets(self.store.outcomes(), targets)
        return budget_matched_sizes(budgets, unit), match_record(arm.match_on, unit, budgets, self.spec.costs)

    async def run(self, summary: StudyRunSummary) -> None:
        done = await self.store.call(self.store.done_keys)
        if self.progress is not None:
            self._task = self.progress.add_task("samples", total=summary.total, completed=summary.already_done)
        phase1 = [a for a in self.spec.arms if a.baseline != "self-consistency"]
        phase2 = [a for a in self.spec.arms if a.baseline == "self-consistency"]
        if self.pool is not None:
            self.pool.batch = self.pool.batch_for(phase1, self.topologies)
        await self._phase(phase1, done, summary)
        if not phase2:
            return
        if summary.failed:
            summary.skipped_phase2 = True
            return
        for arm in phase2:
            sizes, record = await anyio.to_thread.run_sync(self._compute_sc_sizes, arm)
            saved = await self.store.call(self.store.set_meta_once, f"sc_sizes:{arm.name}", json.dumps(sizes))
            self.sc_sizes[arm.name] = json.loads(saved)
            if record is not None and json.loads(saved) == sizes:  # a resumed study keeps the first record
                await self.store.call(self.store.set_meta_once, f"sc_match:{arm.name}", json.dumps(record))
        summary.sc_sizes = dict(self.sc_sizes)
        if self.pool is not None:
            self.pool.batch = max((max(s.values()) for a, s in self.sc_sizes.items()
                                   if next(x for x in phase2 if x.name == a).sampling is None), default=1)
        await self._phase(phase2, done, summary)


async def run_study(spec: StudySpec, out_dir: str | Path, *, spec_text: str | None = None,
                    engine: Engine | None = None, progress: bool = False,
                    console: Console | None = None,
                    grader_factory: Callable[[], AnswerGrader] | None = None,
                    engines: Mapping[str, Engine] | None = None) -> StudyRunSummary:
    """Run (or resume) ``spec`` into ``out_dir``. ``engine``: use this engine (not closed here)
    instead of creating one from ``spec.engine``; ``engines``: the same for the named engines of
    ``[engines.NAME]`` (those not given are created from the spec). Raises ``ConfigError`` for
    bad input (nothing written), never an ``ExceptionGroup``."""
    try:
        return await _run_study(spec, out_dir, spec_text, engine, progress, console, grader_factory,
                                dict(engines or {}))
    except BaseExceptionGroup as group:
        raise unwrap_exception_group(group) from None


async def _run_study(spec: StudySpec, out_dir: str | Path, spec_text: str | None, engine: Engine | None,
                     progress: bool, console: Console | None,
                     grader_factory: Callable[[], AnswerGrader] | None,
                     given: dict[str, Engine]) -> StudyRunSummary:
    started = time.monotonic()
    grader = grader_factory() if grader_factory else make_grader(spec.grading)
    grader_ready = anyio.Event()

    async def start_grader() -> None:
        await grader.start()  # the code grader's canaries: a failure ends the study here
        grader_ready.set()

    own: Engine | None = None
    owned: dict[str, Engine] = {}
    try:
        async with grader, anyio.create_task_group() as tg:
            # The worker (~0.5 s of CPU: an interpreter, math-verify, sympy) starts now, beside
            # this process's own start-up. Left to the first check it would start where rounds
            # hand over, with the engine waiting for this process; started later it takes CPU
            # from a busy engine on a small machine. Measured in BENCHMARKS.md.
            tg.start_soon(start_grader)
            problems = load_problems(spec.dataset)
            own = create_engine(spec.engine, retry=spec.retry) if engine is None else None
            base = engine or own
            assert base is not None
            unknown = sorted(set(given) - set(spec.engines))
            if unknown:
                raise ConfigError(f"engine {unknown[0]!r} is not one of the study's [engines.NAME] tables")
            owned = create_engines({n: o for n, o in spec.engines.items() if n not in given}, spec.retry)
            named = {**given, **owned}
            await base.start()  # a bad engine fails here, before the out dir is touched
            for name, other in named.items():
                try:
                    await other.start()
                except EngineError as exc:
                    raise EngineError(f"engine {name!r} did not start: {exc}", endpoint=exc.endpoint,
                                      status=exc.status) from exc
            if isinstance(grader, CodeGrader):
                await grader_ready.wait()  # and a code grader that does not execute right
            store = ResultStore.open(out_dir, spec, spec_text)
            try:
                done = store.done_keys()
                keys = {(a.name, p.id, s) for a in spec.arms for p in problems for s in range(spec.samples)}
                summary = StudyRunSummary(total=len(keys), already_done=len(keys & done))
                columns = (SpinnerColumn(), TextColumn("{task.description}", style="progress.description",
                                                       markup=False), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
                executor = executor_for(base)
                executor.refresh()
                before, t0 = await base.stats(), time.time()
                if spec.costs:  # volatile (not in the fingerprint): the report uses the latest
                    costs = json.dumps({k: v.model_dump(exclude_none=True) for k, v in spec.costs.items()})
                    await store.call(store.set_meta_once, f"costs:{t0:.3f}", costs)
                with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
                    runner = StudyRunner(spec, store, base, grader, problems, bar if progress else None, named)
                    await runner.run(summary)
                summary.engine = await _engine_figures(store, base, executor, before, t0, summary.ran)
                if isinstance(grader, CodeGrader):
                    summary.grading = grader.figures()
                    await store.call(store.set_meta_once, f"grading_figures:{t0:.3f}", json.dumps(summary.grading))
                tg.cancel_scope.cancel()  # a grader start still waiting: not needed now
            finally:
                store.close()
    finally:
        with anyio.CancelScope(shield=True):
            for closing in ([own] if own is not None else []) + list(owned.values()):
                await closing.aclose()
    summary.elapsed = time.monotonic() - started
    return summary


async def _engine_figures(store: ResultStore, engine: Engine, executor: Executor, before: EngineStats | None,
                          t0: float, ran: int) -> dict[str, Any]:
    """The engine-side figures of this invocation, saved in the store's meta (one key per run of
    ``pacore study run``): sequences in flight (mean, peak, timeline), orchestration time, and
    computed vs cached prefill where the engine reports them."""
    stats = executor.stats()
    after = await engine.stats()
    figures: dict[str, Any] = {
        "started_at": t0, "ended_at": time.time(), "samples_run": ran, "model": engine.info.model,
        "dtype": engine.info.details.get("dtype"), "window": stats.window,
        "mean_sequences_in_flight": round(stats.mean_in_flight, 2), "peak_sequences_in_flight": stats.peak_in_flight,
        "engine_busy_seconds": round(stats.busy_seconds, 2), "requests": stats.requests,
        "sequences": stats.sequences, "retries": stats.retries,
        "orchestration_seconds": round(stats.orchestration_seconds, 3), "timeline": stats.timeline,
    }
    figures.update(prefill_between(before, after))
    await store.call(store.set_meta_once, f"engine_figures:{t0:.3f}", json.dumps(figures))
    return figures
