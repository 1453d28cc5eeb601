"""``pacore study search``: Optuna over arms (ask-and-tell, two objectives), resumable, shared.

Contract:
- The dataset is shuffled with ``split_seed`` and split: the first ``search_problems`` are the
  search split, the next ``heldout_problems`` the held-out split (``ConfigError`` if the
  dataset is smaller). Every trial is an arm of ONE study on the search split
  (``OUT/search``, the study store of ``_store``: same problems, same per-sample seeds, the
  shared trajectory pool if the study has one), so trials compare paired; units resume there
  like a study's.
- Objectives: accuracy (maximize) and mean effective TTC, or mean declared cost (minimize).
- The result cache: an evaluated arm's result is kept in its store (``search_result:<arm>``);
  a proposal whose arm is already evaluated is told that result without running anything.
  An arm is claimed in the store before it runs (``search_claim:<arm>``, set atomically): a
  worker proposing an arm another live worker holds waits for its result; a dead worker's
  claim is taken over (compare-and-swap), its stored units kept. ``trials`` counts distinct
  arms evaluated (in flight ones, pruned arms and their parents included); the search also
  ends when every point of a finite space (without pruning) is evaluated, or after
  ``patience`` proposals in a row that ran nothing (the sampler repeats itself).
- Failures: a point that is not a valid arm fails its trial (reported, the search goes on);
  samples that fail (engine errors after retries) fail the trial, release its claim and end
  this worker's search without the held-out run: rerun to retry them.
- The Optuna study lives in ``OUT/journal.log`` (``JournalFileBackend`` with its file lock):
  several workers (processes, even hosts sharing the file system) may run on one ``--out``.
  Each worker holds a lock file (``OUT/workers/<token>.lock``) while it lives; a trial left
  RUNNING by a dead worker (``kill -9``) is adopted by the next worker (its lock taken), its
  missing units run and the trial told: no trial runs twice.
- Pruning (``[search.prune]``): a point with ``prune = t > 0`` first evaluates its unpruned
  arm (a point of its own), measures its edges' usage from that arm's stored samples
  (``_prune``), writes the pruned graph to ``OUT/search/topologies/<arm>-p<t>.toml`` and
  evaluates the arm on it (named ``<arm>-p<t>``); when no edge goes, the unpruned result stands.
- Held-out: the Pareto set of every evaluated arm, and the best built-in trial (highest
  accuracy, then lowest cost), run on the held-out split (``OUT/heldout``, under a file lock:
  one worker runs it, others wait), for ``_search_report``'s paired intervals.
- All Optuna and file-lock calls run in worker threads: the event loop never blocks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import optuna
from optuna.trial import TrialState

from pacore_agents._engine import Engine
from pacore_agents._errors import ConfigError, EngineError, unwrap_exception_group
from pacore_agents._logging import get_logger
from pacore_agents._messages import Problem
from pacore_agents.engines import create_engine

from ._datasets import load_problems
from ._engines import create_engines, engine_token_rows
from ._graders import AnswerGrader, make_grader
from ._metrics import topology_metrics
from ._prune import edge_usage, write_pruned
from ._runner import StudyRunner, StudyRunSummary
from ._search_journal import (
    WorkerLocks,
    ask_point,
    best_builtin,
    enqueue_points,
    file_lock,
    open_journal,
    pareto_front,
    set_trial_attr,
    split_problems,
    store_fingerprint,
)
from ._search_space import PRUNE, SearchSpec
from ._spec import ArmSpec
from ._store import ResultStore, SampleOutcome, redact_spec_text

log = get_logger("pacore_agents.studies.search")
RESULT, ARM, CLAIM = "search_result:", "search_arm:", "search_claim:"
_POLL = 0.5
_INVALID = "invalid point: "


@dataclass
class SearchSummary:
    """What one ``run_search`` call did."""

    evaluated: int = 0
    ran: int = 0
    cached: int = 0
    adopted: int = 0
    failed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    stopped: str = ""
    heldout_arms: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class SearchRunner:
    """One worker of a search (see the module contract)."""

    def __init__(self, spec: SearchSpec, out: Path, engine: Engine, engines: Mapping[str, Engine],
                 grader: AnswerGrader, problems: Sequence[Problem], heldout: Sequence[Problem]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.spec, self.out, self.engine, self.engines, self.grader = spec, out, engine, engines, grader
        self.settings = spec.settings
        self.problems, self.heldout = list(problems), list(heldout)
        self.base = spec.study([spec.settings.arm_table(spec.settings.defaults())])
        fp = store_fingerprint(self.base, "search", self.problems)
        self.store = ResultStore.open(out / "search", fingerprint=fp, spec_text=redact_spec_text(spec.text))
        try:
            self.locks = WorkerLocks(out / "workers")
            self.study = open_journal(out, spec, seed_offset=self.locks.others)
        except BaseException:
            self.store.close()
            raise
        self.summary = SearchSummary()
        s = spec.settings
        self.builtins = {s.arm_table(p)["name"] for p in s.builtin_points()}
        size = s.size()
        self.every = {s.arm_table(p)["name"] for p in s.points()} if (
            s.prune is None and size is not None and size <= 100_000) else None
        self.on_trial: Callable[[str], None] | None = None

    def close(self) -> None:
        self.locks.close()
        self.store.close()

    # --- results ---
    async def results(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in await self.store.call(self.store.meta_items, RESULT)]

    async def _result(self, arm: str) -> dict[str, Any] | None:
        saved = await self.store.call(self.store.get_meta, RESULT + arm)
        return None if saved is None else dict(json.loads(saved))

    def _outcomes(self, store: ResultStore, arm: str, problems: Sequence[Problem]
                  ) -> list[tuple[SampleOutcome, dict[str, Any]]]:
        out = []
        for p in problems:
            for s in range(self.base.samples):
                row = store.sample(arm, p.id, s)
                if row is not None:
                    out.append(row)
        return out

    async def _run_arms(self, store: ResultStore, arms: Sequence[ArmSpec], problems: Sequence[Problem]) -> list[str]:
        """Run the missing units of ``arms`` (one study) into ``store``; the failures."""
        study = self.base.model_copy(update={"arms": list(arms)})
        runner = StudyRunner(study, store, self.engine, self.grader, problems, None, self.engines)
        summary = StudyRunSummary(total=len(arms) * len(problems) * study.samples, already_done=0)
        await runner.run(summary)
        return summary.failed

    async def _measure(self, arm: ArmSpec, extra: Mapping[str, Any] | None = None) -> dict[str, Any] | str:
        """Evaluate ``arm`` on the search split: its result (with ``extra`` keys), or why it failed."""
        cached = await self._result(arm.name)
        if cached is not None:
            return cached
        if not await self._claim(arm.name):
            return await self._measure(arm, extra)  # another worker evaluated it meanwhile
        failed = await self._run_arms(self.store, [arm], self.problems)
        rows = await anyio.to_thread.run_sync(self._outcomes, self.store, arm.name, self.problems)
        metrics = topology_metrics(arm.name, [o for o, _ in rows], rows[0][0].kind) if rows else None
        if failed or metrics is None or metrics.accuracy is None:
            await self.store.call(self.store.replace_meta, CLAIM + arm.name, self.locks.token, "")
            return f"{len(failed)} samples failed: {failed[0]}" if failed else "no sample was graded"
        spend = sum(int((n.get("usage") or {}).get("completion_tokens", 0)) for _, t in rows
                    for n in t.get("nodes", []) if not (n.get("notes") or {}).get("precomputed"))
        result: dict[str, Any] = {
            "arm": arm.name, "builtin": arm.name in self.builtins, "accuracy": metrics.accuracy, "ci_low": metrics.ci_low,
            "ci_high": metrics.ci_high, "graded": metrics.graded, "correct": metrics.correct,
            "mean_ttc": metrics.mean_ttc, "spend": spend, "kind": metrics.kind}
        if self.base.costs:
            cost_rows = engine_token_rows(((arm.name, t) for _, t in rows), self.base.costs)
            result["mean_cost"] = sum(r["cost"] or 0.0 for r in cost_rows)
        result["cost"] = result["mean_cost"] if self.settings.cost == "declared" else metrics.mean_ttc
        result.update(extra or {})
        table = arm.model_dump(mode="json", exclude_defaults=True)
        await self.store.call(self.store.set_meta_once, ARM + arm.name, json.dumps(table))
        saved = await self.store.call(self.store.set_meta_once, RESULT + arm.name, json.dumps(result))
        self.summary.ran += 1
        return dict(json.loads(saved))

    async def _evaluate(self, params: Mapping[str, Any]) -> dict[str, Any] | str:
        values = {d.key: (d.choice(params[d.key]) if d.choices is not None else params[d.key])
                  for d in self.settings.dimension}
        try:
            arm = await anyio.to_thread.run_sync(self.spec.arm, values)
        except ConfigError as exc:
            return f"{_INVALID}{exc}"
        threshold = float(params.get(PRUNE, 0.0))
        parent = await self._measure(arm)
        if threshold == 0 or isinstance(parent, str) or arm.baseline is not None:
            return parent
        prune = self.settings.prune
        assert prune is not None
        name = f"{arm.name}-p{threshold:g}"
        cached = await self._result(name)
        if cached is not None:
            return cached
        rows = await anyio.to_thread.run_sync(self._outcomes, self.store, arm.name, self.problems)
        usage = edge_usage(o for o, _ in rows)
        path, removed = await anyio.to_thread.run_sync(lambda: write_pruned(
            arm.build_topology(), usage, threshold, prune.min_pairs,
            self.out / "search" / "topologies" / f"{name}.toml"))
        if path is None:
            return parent  # nothing to prune: the same graph, the same result
        table = arm.model_dump(mode="json", exclude_defaults=True, exclude={"widths", "params"})
        child = ArmSpec.model_validate({**table, "name": name, "topology": str(path)})
        return await self._measure(child, {"pruned": [f"{u}->{v}" for u, v in removed], "parent": arm.name})

    # --- the Optuna loop ---
    def _stale(self) -> list[optuna.trial.FrozenTrial]:
        """RUNNING trials whose worker died (adopted now: their lock is ours), oldest first."""
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            token = t.user_attrs.get("worker")
            if token is None:
                start = t.datetime_start.timestamp() if t.datetime_start else 0.0
                if time.time() - start > 60:  # asked, then killed before it said whose it is
                    self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            if not self.locks.alive(token) and self.locks.adopt(token):
                out.append(t)
        return out

    def _claimed(self) -> int:
        """Arms claimed by live workers and not yet evaluated (in flight)."""
        done = {k.removeprefix(RESULT) for k, _ in self.store.meta_items(RESULT)}
        return sum(1 for k, token in self.store.meta_items(CLAIM)
                   if k.removeprefix(CLAIM) not in done and self.locks.alive(token))

    async def _claim(self, arm: str) -> bool:
        """Claim ``arm`` for this worker (True), or wait while a live worker holds it and return
        False once its result is in."""
        key = CLAIM + arm
        while True:
            holder = await self.store.call(self.store.set_meta_once, key, self.locks.token)
            if holder == self.locks.token:
                return True
            if await self._result(arm) is not None:
                return False
            if holder in self.locks.adopted or not await anyio.to_thread.run_sync(self.locks.alive, holder):
                if await self.store.call(self.store.replace_meta, key, holder, self.locks.token):
                    return True  # its worker died: this one finishes the arm (stored units stay)
                continue
            await anyio.sleep(_POLL)

    async def _fail(self, number: int, reason: str) -> None:
        log.warning("trial failed", trial=number, reason=reason)
        (self.summary.invalid if reason.startswith(_INVALID) else self.summary.failed).append(
            f"trial {number}: {reason}")
        await anyio.to_thread.run_sync(set_trial_attr, self.study, number, "failure", reason[:500])
        await anyio.to_thread.run_sync(lambda: self.study.tell(number, state=TrialState.FAIL,
                                                               skip_if_finished=True))

    async def _finish(self, number: int, params: Mapping[str, Any]) -> bool:
        """Evaluate and tell one trial; True if nothing ran for it here (the cache served it, or
        the point was invalid)."""
        wanted = [d.key for d in self.settings.dimension] + ([PRUNE] if self.settings.prune else [])
        if any(k not in params for k in wanted):
            await self._fail(number, _INVALID + "its worker died before it had all its parameters")
            return True
        ran = self.summary.ran
        result = await self._evaluate(params)
        if isinstance(result, str):
            await self._fail(number, result)
            return result.startswith(_INVALID)
        cached = self.summary.ran == ran
        if self.on_trial is not None:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            self.on_trial(f"trial {number}: {shown} -> {result['arm']}: accuracy {result['accuracy']:.3f}, "
                          f"cost {result['cost']:.4g}{' (cached)' if cached else ''}")
        await anyio.to_thread.run_sync(set_trial_attr, self.study, number, "result_arm", result["arm"])
        await anyio.to_thread.run_sync(set_trial_attr, self.study, number, "cached", cached)
        await anyio.to_thread.run_sync(lambda: self.study.tell(
            number, [float(result["accuracy"]), float(result["cost"])], skip_if_finished=True))
        return cached

    async def search(self) -> None:
        await anyio.to_thread.run_sync(enqueue_points, self.study, self.settings)
        repeats = 0
        while True:
            for stale in await anyio.to_thread.run_sync(self._stale):
                await self._finish(stale.number, stale.params)
                self.summary.adopted += 1
                self.locks.release(str(stale.user_attrs["worker"]))
            if self.summary.failed:
                self.summary.stopped = "samples failed (rerun to retry them)"
                break
            results = await self.results()
            busy = len(results) + await anyio.to_thread.run_sync(self._claimed)
            if self.every is not None and self.every <= {r["arm"] for r in results}:
                self.summary.stopped = f"every point of the space ({len(self.every)}) is evaluated"
                break
            if busy >= self.settings.trials:
                self.summary.stopped = f"the budget of {self.settings.trials} configurations is spent"
                break
            if repeats >= self.settings.patience:
                self.summary.stopped = (f"{repeats} proposals in a row ran nothing (the sampler repeats "
                                        "itself)")
                break
            trial, params = await anyio.to_thread.run_sync(ask_point, self.study, self.settings, self.locks.token)
            cached = await self._finish(trial.number, params)
            self.summary.cached += cached
            repeats = repeats + 1 if cached else 0
        self.summary.evaluated = len(await self.results())

    async def confirm(self) -> None:
        """Run the Pareto set and the best built-in on the held-out split, once the arms other
        live workers are evaluating are in."""
        while True:  # other processes' work: polled (no event crosses processes)
            if not await anyio.to_thread.run_sync(self._claimed):
                break
            await anyio.sleep(_POLL)
        results = await self.results()
        front = pareto_front(results)
        best = best_builtin(results)
        names = list(dict.fromkeys([r["arm"] for r in front] + ([best["arm"]] if best else [])))
        arms = []
        for n in names:
            table: str | None = await self.store.call(self.store.get_meta, ARM + n)
            arms.append(ArmSpec.model_validate({**json.loads(table or "{}"), "name": n}))
        if not arms:
            return
        fp = store_fingerprint(self.base, "heldout", self.heldout)
        handle = await anyio.to_thread.run_sync(file_lock, self.out / "heldout.lock")
        try:
            store = ResultStore.open(self.out / "heldout", fingerprint=fp, spec_text=redact_spec_text(self.spec.text))
            try:
                failed = await self._run_arms(store, arms, self.heldout)
                for arm in arms:
                    await store.call(store.set_meta_once, ARM + arm.name, json.dumps(arm.model_dump(
                        mode="json", exclude_defaults=True)))
            finally:
                store.close()
        finally:
            handle.close()
        self.summary.failed += [f"held-out: {f}" for f in failed]
        self.summary.heldout_arms = names


async def run_search(spec: SearchSpec, out_dir: str | Path, *, engine: Engine | None = None,
                     engines: Mapping[str, Engine] | None = None, heldout: bool = True,
                     grader_factory: Callable[[], AnswerGrader] | None = None,
                     on_trial: Callable[[str], None] | None = None) -> SearchSummary:
    """Run (or resume, or join) the search of ``spec`` in ``out_dir``; then the held-out run.
    ``engine``/``engines``: use these (not closed here) instead of creating them from the spec;
    ``on_trial`` gets one line per trial told.
    Raises ``ConfigError`` for bad input (before anything is written), never an ``ExceptionGroup``."""
    try:
        return await _run_search(spec, Path(out_dir), engine, dict(engines or {}), heldout, grader_factory,
                                 on_trial)
    except BaseExceptionGroup as group:
        raise unwrap_exception_group(group) from None


async def _run_search(spec: SearchSpec, out: Path, engine: Engine | None, given: dict[str, Engine],
                      heldout: bool, grader_factory: Callable[[], AnswerGrader] | None,
                      on_trial: Callable[[str], None] | None) -> SearchSummary:
    started = time.monotonic()
    base = spec.study([spec.settings.arm_table(spec.settings.defaults())])
    s = spec.settings
    search_split, heldout_split = split_problems(load_problems(base.dataset), s.search_problems,
                                                 s.heldout_problems, s.split_seed)
    if s.cost == "declared" and not base.costs:
        raise ConfigError("[search] cost = 'declared' needs engine costs: set cost_per_1k_tokens or "
                          "active_params in the [engine] table(s)")
    grader = grader_factory() if grader_factory else make_grader(base.grading)
    own = create_engine(base.engine, retry=base.retry) if engine is None else None
    owned = create_engines({n: o for n, o in base.engines.items() if n not in given}, base.retry)
    try:
        async with grader:
            main = engine or own
            assert main is not None
            await main.start()
            for name, other in {**given, **owned}.items():
                try:
                    await other.start()
                except EngineError as exc:
                    raise EngineError(f"engine {name!r} did not start: {exc}") from exc
            await grader.start()
            runner = await anyio.to_thread.run_sync(lambda: SearchRunner(
                spec, out, main, {**given, **owned}, grader, search_split, heldout_split))
            try:
                runner.on_trial = on_trial
                await runner.search()
                if heldout and not runner.summary.failed:
                    await runner.confirm()
            finally:
                runner.close()
    finally:
        with anyio.CancelScope(shield=True):
            for closing in ([own] if own is not None else []) + list(owned.values()):
                await closing.aclose()
    runner.summary.elapsed = time.monotonic() - started
    return runner.summary
