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

from ._config import RunConfig
from ._engine import Completion, Engine
from ._errors import ConfigError, RunFailedError
from ._ids import NodeId
from ._logging import get_logger
from ._messages import ChatMessage, Problem
from ._roles import Role, RoleBook
from ._scheduler import RoundScheduler, RunObserver
from ._specs import load_topology
from ._topology import Topology
from ._trace import RoundSummary, RunTrace
from ._wrappers import ConcurrencyLimitedEngine, RetryingEngine

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


def _wrap(engine: Engine, config: RunConfig) -> Engine:
    wrapped = engine
    if config.max_in_flight is not None:
        wrapped = ConcurrencyLimitedEngine(wrapped, config.max_in_flight)
    if config.retry is not None:
        wrapped = RetryingEngine(wrapped, config.retry, seed=config.seed)
    return wrapped


def _trace(sched: RoundScheduler, rounds: list[RoundSummary], started: float, error: str | None,
           topology: Topology, engine: Engine, config: RunConfig) -> RunTrace:
    sink = sched.records.get(topology.sink)
    records = [sched.records[n] for n in sorted(sched.records)]
    return RunTrace(
        answer=sink.message if sink is not None and error is None else None,
        sink=str(topology.sink),
        effective_ttc=sum(r.usage.completion_tokens for r in records),
        degraded=any(r.error for r in records),
        error=error,
        problem=list(sched.problem.messages),
        problem_id=sched.problem.id,
        config=config.model_dump(mode="json"),
        engine=engine.info,
        topology=topology.node_link(),
        topology_name=topology.name,
        nodes=records,
        rounds=rounds,
        started_at=started,
        ended_at=time.time(),
    )


async def run(
    problem: ProblemLike,
    topology: TopologyLike = "pacore-low",
    engine: Engine | None = None,
    *,
    config: RunConfig | None = None,
    roles: Mapping[str, Role] | Sequence[Role] | None = None,
    precomputed: Mapping[NodeId, Completion] | None = None,
    observer: RunObserver | None = None,
) -> RunResult:
    """Run ``problem`` over ``topology`` on ``engine``; return the sink's answer and the trace.

    ``roles`` adds or replaces roles by name (over the built-ins and the topology's own);
    ``precomputed`` supplies completions for nodes that must not be sent to the engine.
    Raises ``RunFailedError`` (with ``.trace``) when a node fails under ``on_failure="fail"``
    or the sink fails; ``ConfigError`` for bad input, before any request is sent.
    """
    if engine is None:
        raise ConfigError("run() needs an engine: e.g. FunctionEngine(handler) or create_engine(EngineOptions())")
    config = config or RunConfig()
    prob = Problem.coerce(problem)
    topo = resolve_topology(topology)
    book = RoleBook({**topo.roles, **_as_mapping(roles)})
    wrapped = _wrap(engine, config)
    sched = RoundScheduler(prob, topo, wrapped, config, book, precomputed=precomputed, observer=observer)
    for node in topo.nodes():  # unknown roles fail before any request is sent
        sched.role_of(node)
    started = time.time()
    summaries: list[RoundSummary] = []
    error: str | None = None
    log.info("run started", problem=prob.id, topology=topo.name, widths=topo.widths)
    try:
        with anyio.fail_after(config.timeout):
            await wrapped.start()
            for round_ in range(1, topo.num_rounds + 1):
                plans = sched.plan(round_)
                if observer is not None:
                    observer.round_started(round_, len(topo.nodes(round_)), len(plans))
                result = await sched.execute(plans)
                summary = sched.apply(round_, plans, result)
                summaries.append(summary)
                if observer is not None:
                    observer.round_finished(summary)
                if result.first_failure is not None:
                    error = f"node {result.first_failure} failed: {sched.records[result.first_failure].error}"
                    break
    except TimeoutError:
        error = f"the run timed out after {config.timeout}s (round {len(summaries) + 1} was in flight)"
    sink = sched.records.get(topo.sink)
    if error is None and (sink is None or sink.error):
        error = f"the sink {topo.sink} failed: {sink.error if sink else 'not run'}"
    trace = _trace(sched, summaries, started, error, topo, engine, config)
    log.info("run finished", problem=prob.id, effective_ttc=trace.effective_ttc, error=error)
    if error is not None:
        raise RunFailedError(error, trace)
    return RunResult(trace)


def run_sync(problem: ProblemLike, topology: TopologyLike = "pacore-low", engine: Engine | None = None,
             **kwargs: Any) -> RunResult:
    """The synchronous twin of ``run`` (starts its own event loop)."""

    async def main() -> RunResult:
        return await run(problem, topology, engine, **kwargs)

    return anyio.run(main)


def _as_mapping(roles: Mapping[str, Role] | Sequence[Role] | None) -> dict[str, Role]:
    if roles is None:
        return {}
    if isinstance(roles, Mapping):
        return dict(roles)
    return {role.name: role for role in roles}
