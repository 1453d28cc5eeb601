"""The server's lifecycle and the state requests share: engine status, runs in flight,
draining, and the bounded store of recent traces.

Contract:
- ``status`` is ``starting`` until the engine's ``start()`` returns (``dead`` if it raised),
  then ``ready``; ``drain()`` makes it ``draining``. Only ``ready`` admits new runs (else 503).
- Every run executes inside ``run_scope()``: ``drain()`` waits for them up to its timeout, then
  cancels their scopes (the runs answer 503) and waits for them to unwind.
- ``TraceStore`` keeps the last ``capacity`` completions' traces in memory (LRU) and, with a
  directory, writes each as ``{id}.json`` atomically (a temp file renamed), in a worker thread.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import anyio

from pacore_agents._engine import Engine
from pacore_agents._logging import get_logger
from pacore_agents._role_merge import RoleOverride
from pacore_agents._trace import RunTrace

from ._errors import APIError
from ._metrics import ServerMetrics

log = get_logger("pacore_agents.serve")

Status = Literal["starting", "ready", "draining", "dead"]


class TraceStore:
    """The traces of the last ``capacity`` completions, by completion id."""

    def __init__(self, capacity: int, directory: Path | None = None) -> None:
        self.capacity = capacity
        self.directory = directory
        self._items: OrderedDict[str, list[RunTrace]] = OrderedDict()

    def get(self, completion_id: str) -> list[RunTrace] | None:
        traces = self._items.get(completion_id)
        if traces is not None:
            self._items.move_to_end(completion_id)
        return traces

    async def put(self, completion_id: str, traces: list[RunTrace]) -> None:
        if self.capacity > 0:
            self._items[completion_id] = traces
            self._items.move_to_end(completion_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        if self.directory is not None:
            text = render_traces(traces)
            with anyio.CancelScope(shield=True):  # a written trace is never left half done
                await anyio.to_thread.run_sync(_write_atomic, self.directory / f"{completion_id}.json", text)


def render_traces(traces: list[RunTrace]) -> str:
    """One run: its trace; n runs: ``{"object": "list", "data": [trace, ...]}``."""
    if len(traces) == 1:
        return traces[0].model_dump_json(indent=1)
    return '{"object": "list", "data": [' + ", ".join(t.model_dump_json(indent=1) for t in traces) + "]}"


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a full disk must not fail the request that was answered
        log.error("cannot write trace", path=str(path), error=f"{type(exc).__name__}: {exc}")


class ServerState:
    """What every request of one server shares."""

    def __init__(self, engine: Engine, metrics: ServerMetrics, traces: TraceStore, *,
                 engines: Mapping[str, Engine] | None = None,
                 bindings: Mapping[str, RoleOverride] | None = None) -> None:
        """``engines``: named engines besides ``engine`` (the ``default``), bound to roles by
        ``bindings`` (several models in one graph); started and closed with it."""
        self.engine = engine
        self.engines = dict(engines or {})
        self.bindings = dict(bindings or {})
        self.metrics = metrics
        self.traces = traces
        self.status: Status = "starting"
        self.start_error: str | None = None
        self.aborting = False
        self._runs: set[anyio.CancelScope] = set()
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def runs_in_flight(self) -> int:
        return len(self._runs)

    async def start_engine(self) -> None:
        """Start the engine; a failure leaves the server up, answering 503 with the reason."""
        where = ""
        try:
            await self.engine.start()
            for name, other in self.engines.items():
                where = f"engine {name!r}: "
                await other.start()
        except Exception as exc:
            self.start_error = f"{where}{type(exc).__name__}: {exc}"
            self.status = "dead"
            log.error("the engine failed to start", error=self.start_error)
            return
        if self.status == "starting":
            self.status = "ready"
            log.info("engine ready", engine=self.engine.info.name, model=self.engine.info.model)

    def engine_died(self, reason: str) -> None:
        """The engine is gone for good: answer 503 from now on (``/health`` too)."""
        if self.status != "dead":
            log.error("the engine died", error=reason)
        self.status, self.start_error = "dead", reason

    def admit(self) -> None:
        """Raise a 503 ``APIError`` unless a new run may start now."""
        if self.status == "ready":
            return
        reason = {"starting": "the engine is starting; retry in a moment",
                  "draining": "the server is shutting down",
                  "dead": f"the engine failed: {self.start_error}"}[self.status]
        raise APIError(503, reason, code=f"engine_{self.status}", headers={"Retry-After": "5"})

    @contextmanager
    def run_scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope for one request's runs, cancelled if a drain runs out of time."""
        with anyio.CancelScope() as scope:
            self._runs.add(scope)
            self._idle = anyio.Event() if len(self._runs) == 1 else self._idle
            self.metrics.runs_in_flight.set(len(self._runs))
            try:
                if self.aborting:
                    scope.cancel()
                yield scope
            finally:
                self._runs.discard(scope)
                self.metrics.runs_in_flight.set(len(self._runs))
                if not self._runs:
                    self._idle.set()

    async def drain(self, grace: float) -> None:
        """Stop admitting; let runs in flight finish within ``grace`` s, then abort them."""
        if self.status != "dead":
            self.status = "draining"
        log.info("draining", runs_in_flight=self.runs_in_flight, grace=grace)
        with anyio.move_on_after(grace):
            await self._idle.wait()
        self.abort()
        with anyio.move_on_after(10):
            await self._idle.wait()

    def abort(self) -> None:
        """Cancel every run in flight now (they answer 503)."""
        if self._runs:
            log.warning("aborting runs in flight", runs=len(self._runs))
        self.aborting = True
        for scope in list(self._runs):
            scope.cancel()

    def health(self) -> tuple[int, dict[str, Any]]:
        code = 200 if self.status == "ready" else 503
        body: dict[str, Any] = {"status": self.status, "runs_in_flight": self.runs_in_flight,
                                "engine": self.engine.info.name, "model": self.engine.info.model}
        if self.engines:
            body["engines"] = {name: e.info.model or e.info.name for name, e in self.engines.items()}
        if self.start_error:
            body["error"] = self.start_error
        return code, body
