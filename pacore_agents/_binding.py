"""Several models in one graph: a run's named engines, bound to nodes by their roles.

Contract:
- ``run(..., engine=e)`` is one engine named ``default``; ``run(..., engines={"small": e1,
  "big": e2})`` names several (an ``engine`` given beside them is ``default``).
- A node's engine is its role's ``engine`` if set, else ``default``, else the only engine. A
  role naming an unknown engine, or a role left unbound among several engines none of which is
  ``default``, is a ``ConfigError`` before any request is sent.
- Each engine keeps its own executor (``executor_for``: window, priorities, retries) and its
  own context length and tokenizer for the planner's budgets. Merge groups are per role, so a
  merged request never spans engines. All of a run's requests, on every engine, run in the
  run's task group: cancelling the run cancels them everywhere.
- An engine that fails to start (``EngineError``) fails only the nodes bound to it, with the
  engine named (``start_error``); the run's ``on_failure`` decides the rest, as for any node.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._engine import Engine, EngineInfo
from ._errors import ConfigError, EngineError
from ._executor import Executor, executor_for
from ._roles import Role

DEFAULT_ENGINE = "default"
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+$")


@dataclass(slots=True)
class Lane:
    """One named engine of a run: its executor, the run's sequence number on that executor, and
    why it could not start (None: it started)."""

    name: str
    engine: Engine
    executor: Executor
    seq: int = -1
    start_error: EngineError | None = None
    _model: tuple[str | None] | None = None

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    @property
    def model(self) -> str | None:
        """The engine's model (read once, after the engine started: every node records it)."""
        if self._model is None:
            self._model = (self.engine.info.model,)
        return self._model[0]


class EngineBinding:
    """The lanes of one run by engine name, and the role -> lane rule (module docstring)."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        if not engines:
            raise ConfigError("run() needs an engine: e.g. FunctionEngine(handler) or create_engine(VLLMOptions())")
        for name, engine in engines.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(f"engine name {name!r}: use letters, digits and _ . @ + -")
            if not isinstance(engine, Engine):
                raise ConfigError(f"engine {name!r} is a {type(engine).__name__}, not a pacore_agents.Engine")
        self.lanes = {name: Lane(name, engine, executor_for(engine)) for name, engine in engines.items()}
        self._cache: dict[str, Lane] = {}

    @classmethod
    def of(cls, engine: Engine | None, engines: Mapping[str, Engine] | None) -> EngineBinding:
        """``run``'s ``engine`` and ``engines`` arguments as one binding."""
        named = dict(engines or {})
        if engine is not None:
            if DEFAULT_ENGINE in named and named[DEFAULT_ENGINE] is not engine:
                raise ConfigError(f"engine= is the {DEFAULT_ENGINE!r} engine, and engines names another "
                                  f"{DEFAULT_ENGINE!r}: give it once")
            named = {DEFAULT_ENGINE: engine, **named}
        return cls(named)

    @classmethod
    def single(cls, executor: Executor, seq: int) -> EngineBinding:
        """One engine, ``default``, on ``executor`` (a ``RunDriver`` built without a binding)."""
        binding = cls({DEFAULT_ENGINE: executor.engine})
        lane = binding.lanes[DEFAULT_ENGINE]
        lane.executor, lane.seq = executor, seq
        return binding

    def __iter__(self) -> Iterator[Lane]:
        return iter(self.lanes.values())

    @property
    def default(self) -> Lane:
        """The ``default`` lane, else the first."""
        return self.lanes.get(DEFAULT_ENGINE) or next(iter(self.lanes.values()))

    @property
    def several(self) -> bool:
        return len(self.lanes) > 1

    def lane_for(self, role: Role) -> Lane:
        """The lane of ``role`` (see the module docstring); ``ConfigError`` if it has none."""
        lane = self._cache.get(role.name)
        if lane is not None:
            return lane
        if role.engine is not None:
            lane = self.lanes.get(role.engine)
            if lane is None:
                raise ConfigError(f"role {role.name!r} runs on engine {role.engine!r}, which this run does not "
                                  f"have: engines are {', '.join(self.lanes)}")
        elif DEFAULT_ENGINE in self.lanes or not self.several:
            lane = self.default
        else:
            raise ConfigError(f"role {role.name!r} names no engine and there is no {DEFAULT_ENGINE!r} engine "
                              f"among {', '.join(self.lanes)}: set engine = \"NAME\" on the role, or name one "
                              f"engine {DEFAULT_ENGINE!r}")
        self._cache[role.name] = lane
        return lane

    def begin(self) -> None:
        """Register the run on every executor (``Executor.begin_run``)."""
        seqs: dict[int, int] = {}
        for lane in self:
            key = id(lane.executor)
            if key not in seqs:
                seqs[key] = lane.executor.begin_run()
            lane.seq = seqs[key]

    def queued(self) -> None:
        """The run has queued its first work on every executor (``Executor.run_queued``)."""
        for lane in self._distinct():
            lane.executor.run_queued(lane.seq)

    def end(self) -> None:
        for lane in self._distinct():
            lane.executor.end_run(lane.seq)

    def _distinct(self) -> list[Lane]:
        out: dict[int, Lane] = {}
        for lane in self:
            out.setdefault(id(lane.executor), lane)
        return list(out.values())

    async def start(self) -> None:
        """Start every engine; one that fails with an ``EngineError`` is marked (its nodes fail,
        naming it), the others go on. Each executor re-reads its engine's capacity."""
        for lane in self:
            if not self.several:
                await lane.engine.start()  # one engine: its error is the run's, unchanged
            else:
                try:
                    await lane.engine.start()
                except EngineError as exc:
                    error = EngineError(f"engine {lane.name!r} did not start: {exc}", retryable=False,
                                        endpoint=exc.endpoint, status=exc.status)
                    error.__cause__ = exc
                    lane.start_error = error
            lane.executor.refresh()
            lane._model = None  # read again: a started engine knows its model

    def infos(self) -> dict[str, EngineInfo]:
        return {lane.name: lane.info for lane in self}


def named_error(lane: Lane, error: EngineError) -> EngineError:
    """``error`` with the engine's name in front (a run with several engines), attempts kept."""
    if str(error).startswith(f"engine {lane.name!r}"):
        return error
    named = EngineError(f"engine {lane.name!r}: {error}", retryable=error.retryable, endpoint=error.endpoint,
                        status=error.status, attempts=error.attempts)
    named.__cause__ = error
    return named
