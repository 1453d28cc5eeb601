"""``run``: one problem through one topology. The async API and its sync twin.

Contract: the result depends only on (problem, topology, roles, config, engine outputs per
request), never on completion order. Every request runs inside the caller's cancel scope;
``config.timeout`` bounds the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ._answers import AnswerEquivalence
from ._binding import EngineBinding
from ._config import RunConfig
from ._engine import Completion, Engine, prefill_between
from ._errors import ConfigError, RunFailedError, unwrap_exception_group
from ._ids import NodeId
from ._logging import get_logger
from ._messages import ChatMessage, Problem
from ._policies import Policies
from ._role_merge import RolesArg, merge_roles
from ._roles import RoleBook, builtin_roles
from ._scheduler import RunDriver, RunObserver
from ._specs import load_topology
from ._topology import Topology
from ._trace import TRACE_VERSION, RunStats, RunTrace, tokens_by_engine_and_role

log = get_logger("pacore_agents.run")

ProblemLike = str | Problem | Sequence[ChatMessage | dict[str, Any]]
TopologyLike = Topology | str | Path


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run: the sink's message and the full trace."""

    trace: RunTrace

    @property
    def answer(self) -> str | None:
        return self.trace.answer


def resolve_topology(topology: TopologyLike) -> Topology:
    """A ``Topology`` from itself, a built-in name, or a spec file path."""
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, (str, Path)):
        return load_topology(topology)
    raise ConfigError(f"topology must be a Topology, a built-in name or a spec path, not {type(topology).__name__}")


def _trace(driver: RunDriver, started: float, error: str | None, binding: EngineBinding, config: RunConfig,
           stats: RunStats) -> RunTrace:
    topology = driver.topology
    sink = driver.records.get(topology.sink)
    records = [driver.records[n] for n in sorted(driver.records)]
    failed = any(r.status == "failed" for r in records)
    adaptive = driver.adaptive
    answered = adaptive.answer if adaptive is not None and adaptive.answer is not None else None
    answer = answered[1] if answered is not None else sink.message if sink is not None else None
    return RunTrace(
        version=TRACE_VERSION,
        answer=answer if error is None else None,
        answered_by=str(answered[0] if answered is not None else topology.sink) if error is None else None,
        policies=None if adaptive is None else adaptive.policies.model_dump(mode="json"),
        policy_events=[] if adaptive is None else adaptive.events,
        sink=str(topology.sink),
        effective_ttc=sum(r.usage.completion_tokens for r in records),
        degraded=failed and error is None,
        error=error,
        mode=config.mode,
        problem=list(driver.problem.messages),
        problem_id=driver.problem.id,
        config=config.model_dump(mode="json"),
        engine=binding.default.info,
        engines=binding.infos(),
        tokens=tokens_by_engine_and_role(records),
        topology=topology.node_link(),
        topology_name=topology.name,
        nodes=records,
        rounds=driver.summaries,
        stats=stats,
        started_at=started,
        ended_at=time.time(),
    )


async def run(
    problem: ProblemLike,
    topology: TopologyLike = "pacore-low",
    engine: Engine | None = None,
    *,
    engines: Mapping[str, Engine] | None = None,
    config: RunConfig | None = None,
    roles: RolesArg = None,
    precomputed: Mapping[NodeId, Completion] | None = None,
    observer: RunObserver | None = None,
    unit: str | None = None,
    policies: Policies | None = None,
    equivalence: AnswerEquivalence | None = None,
) -> RunResult:
    """Run ``problem`` over ``topology`` on ``engine``; return the sink's answer and the trace.

    ``engines`` names several engines (several models in one graph, ``_binding``): a role's
    ``engine`` names the one its nodes run on; roles without one use ``default`` (``engine``,
    if given, is that one). Every node's record names its engine and model; ``trace.tokens``
    sums usage per engine and role.

    Concurrent runs on the same engine object share its executor (``executor_for``): their
    nodes fill one window of sequences in flight, deeper rounds and earlier runs first.
    ``roles`` adds or changes roles by name over the built-ins and the topology's own
    (``merge_roles``: a ``RoleOverride`` changes the fields it sets, a ``Role`` replaces);
    ``precomputed`` supplies completions for nodes that must not be sent to the engine;
    ``unit`` labels the run's requests (``RequestMetadata.unit``) and log lines.
    ``policies`` (``_policies``: consensus stop, adaptive width, quorum) replace the topology
    spec's own; ``equivalence`` compares their answers (required by ``equivalence = "task"``;
    default: normalised strings). The trace records what they did (``policy_events``).
    Raises ``RunFailedError`` (with ``.trace``, every node's ``status`` set) when a node fails
    under ``on_failure="fail"``, the sink fails, or ``config.timeout`` passes; ``ConfigError``
    for bad input, before any request is sent. Never an ``ExceptionGroup``.
    """
    binding = EngineBinding.of(engine, engines)
    config = config or RunConfig()
    prob = Problem.coerce(problem)
    topo = resolve_topology(topology)
    book = RoleBook(merge_roles({**builtin_roles(), **topo.roles}, roles))
    chosen = policies if policies is not None else topo.policies
    if chosen is not None and not chosen.empty and chosen.equivalence == "task" and equivalence is None:
        raise ConfigError("policies.equivalence = 'task' compares answers by the task's own check: pass "
                          "equivalence= (e.g. pacore_agents.studies.task_equivalence) or use 'string'")
    binding.begin()
    try:
        return await _run(prob, topo, binding, config, book, precomputed, observer, unit, (chosen, equivalence))
    except BaseExceptionGroup as group:
        raise unwrap_exception_group(group) from None
    finally:
        binding.end()


async def _run(prob: Problem, topo: Topology, binding: EngineBinding, config: RunConfig,
               book: RoleBook, precomputed: Mapping[NodeId, Completion] | None,
               observer: RunObserver | None, unit: str | None,
               adaptive: tuple[Policies | None, AnswerEquivalence | None]) -> RunResult:
    lane = binding.default
    engine, executor = lane.engine, lane.executor
    started = time.time()
    error: str | None = None
    driver: RunDriver | None = None
    before = None
    # engine counters describe this run only if it runs alone (on its one engine)
    alone = executor.runs_active == 1 and not binding.several
    log.info("run started", problem=prob.id, topology=topo.name, widths=topo.widths, unit=unit)
    try:
        with anyio.fail_after(config.timeout):
            await binding.start()
            if alone:
                before = await engine.stats()
            # roles are resolved (unknown roles fail) before any request is sent
            driver = RunDriver(prob, topo, executor, config, book, precomputed=precomputed,
                               observer=observer, unit=unit, binding=binding, policies=adaptive[0],
                               equivalence=adaptive[1])
            await driver.drive()
    except TimeoutError:
        if driver is None:
            raise RunFailedError(f"the run timed out after {config.timeout}s while the engine was starting") from None
        done = sum(1 for r in driver.records.values() if r.status == "ok")
        error = f"the run timed out after {config.timeout}s ({done} of {len(topo.nodes())} nodes completed)"
        driver.finish("timed_out", f"timed out: the run's timeout of {config.timeout}s passed before it completed")
    assert driver is not None
    if driver.adaptive is not None and driver.adaptive.error is not None and error is None:
        error = str(driver.adaptive.error)
        driver.finish("cancelled", f"cancelled: {error}")
    if driver.failure is not None:
        error = f"node {driver.failure} failed: {driver.records[driver.failure].error}"
        driver.finish("cancelled", f"cancelled: the run failed at node {driver.failure}")
    sink = driver.records.get(topo.sink)
    plurality = driver.adaptive is not None and driver.adaptive.answer is not None
    if error is None and not plurality and (sink is None or sink.status != "ok"):
        error = f"the sink {topo.sink} failed: {sink.error if sink else 'not run'}"
    after = await engine.stats() if before is not None and executor.runs_active == 1 else None
    stats = RunStats(
        wall_seconds=time.time() - started, orchestration_seconds=driver.orchestration,
        requests=sum(s.requests for s in driver.summaries), unique_prompt_tokens=driver.unique_prompt_tokens,
        **prefill_between(before, after))
    trace = _trace(driver, started, error, binding, config, stats)
    log.info("run finished", problem=prob.id, unit=unit, effective_ttc=trace.effective_ttc, error=error,
             degraded=trace.degraded)
    if error is not None:
        raise RunFailedError(error, trace)
    return RunResult(trace)


def run_sync(problem: ProblemLike, topology: TopologyLike = "pacore-low", engine: Engine | None = None,
             **kwargs: Any) -> RunResult:
    """The synchronous twin of ``run`` (starts its own event loop)."""

    box: list[RunResult] = []

    async def main() -> None:
        # the main task returns None: asyncio's runner reprs a finished main task (and with it
        # its result) when it restores the SIGINT handler, which costs seconds for a big trace
        box.append(await run(problem, topology, engine, **kwargs))

    anyio.run(main)
    return box[0]

