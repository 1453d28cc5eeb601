"""The ASGI response of one chat completion: runs its PaCoRe runs and answers, whole or streamed.

Contract:
- The runs execute inside the response, next to a task that waits for the client's
  ``http.disconnect``: a disconnect cancels the runs at once (not at the next write), for
  streamed and whole responses alike, which cancels their engine requests.
- The runs execute inside ``ServerState.run_scope()`` (a drain can abort them: 503) and
  ``request_timeout`` (504). A failed run is a 500 in the OpenAI shape naming the trace; a
  bad knob found during the run is a 400. No exception escapes as an ExceptionGroup or a
  traceback. The traces (failed runs' too) are stored under the completion id.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pacore_agents._errors import ConfigError, PacoreError, RunFailedError
from pacore_agents._logging import get_logger
from pacore_agents._run import run
from pacore_agents._scheduler import RunObserver
from pacore_agents._trace import RunTrace

from ._errors import APIError
from ._runs import RunPlan, completion_of, finish_reason_of, usage_of
from ._state import ServerState
from ._stream import ChunkWriter, Delta, StreamObserver

log = get_logger("pacore_agents.serve")

#: what the vLLM engine's errors say once its engine core is gone (``engines/_vllm.py``)
ENGINE_DIED = "the vLLM engine died"


class RunResponse(Response):
    """An ASGI response answering one validated chat completion request (it runs the runs)."""

    def __init__(self, state: ServerState, plan: RunPlan, completion_id: str, *, stream: bool,
                 timeout: float | None) -> None:
        self.state = state
        self.plan = plan
        self.completion_id = completion_id
        self.created = int(time.time())
        self.stream = stream
        self.timeout = timeout
        self.status = 200
        self._answered = False
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_disconnect, receive, tg.cancel_scope)
            try:
                await (self._streamed(send) if self.stream else self._whole(send))
            finally:
                self._answered = True
                tg.cancel_scope.cancel()
        self.state.metrics.latency.observe(time.perf_counter() - started)

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self._answered:
                    log.info("client disconnected: cancelling its runs", id=self.completion_id)
                    self.state.metrics.disconnects.inc()
                    self.state.metrics.runs.labels("disconnected").inc(len(self.plan.configs))
                    self.status = 499
                    scope.cancel()
                return

    # ---- the runs -------------------------------------------------------------------------
    async def _execute(self, observer: Callable[[int], RunObserver | None]) -> list[RunTrace]:
        """Run the n runs concurrently; their traces in choice order, or raise ``APIError``."""
        plan, n = self.plan, len(self.plan.configs)
        traces: list[RunTrace | None] = [None] * n
        failure: list[APIError] = []

        async def one(i: int, tg: anyio.abc.TaskGroup) -> None:
            try:
                result = await run(plan.problem, plan.topology, self.state.engine, engines=self.state.engines,
                                   roles=self.state.bindings or None, config=plan.configs[i],
                                   observer=observer(i))
                traces[i] = result.trace
            except RunFailedError as exc:
                traces[i] = exc.trace if isinstance(exc.trace, RunTrace) else None
                if ENGINE_DIED in str(exc):
                    self.state.engine_died(str(exc))
                failure.append(APIError(500, f"the PaCoRe run failed: {exc} (trace: GET /v1/pacore/traces/"
                                             f"{self.completion_id})", code="run_failed"))
                tg.cancel_scope.cancel()
            except ConfigError as exc:
                failure.append(APIError(400, str(exc), code="invalid_value"))
                tg.cancel_scope.cancel()
            except PacoreError as exc:
                failure.append(APIError(500, f"the PaCoRe run failed: {exc}", code="run_failed"))
                tg.cancel_scope.cancel()

        with self.state.run_scope() as aborted, anyio.move_on_after(self.timeout or math.inf) as timer:
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i, tg)
        done = [t for t in traces if t is not None]
        if done:
            await self.state.traces.put(self.completion_id, done)
        if aborted.cancelled_caught:
            self.state.metrics.runs.labels("aborted").inc(n)
            raise APIError(503, "the server is shutting down: the run was aborted", code="aborted")
        if timer.cancelled_caught:
            self.state.metrics.runs.labels("timeout").inc(n)
            raise APIError(504, f"the run took longer than the server's request timeout ({self.timeout}s)",
                           code="timeout")
        if failure:
            self.state.metrics.runs.labels("failed").inc(n)
            if self.state.status == "dead":
                raise APIError(503, f"the engine died: {failure[0].message}", code="engine_dead")
            raise failure[0]
        self.state.metrics.runs.labels("ok").inc(n)
        return [t for t in traces if t is not None]

    # ---- whole --------------------------------------------------------------------------
    async def _whole(self, send: Send) -> None:
        try:
            traces = await self._execute(lambda _: None)
        except APIError as exc:
            self.status = exc.status
            self._answered = True  # from here on, a disconnect is the end of a complete answer
            await _send_json(send, exc.status, exc.body(), exc.headers)
            return
        body = completion_of(self.completion_id, self.created, self.plan.model, traces)
        self._answered = True
        await _send_json(send, 200, body.model_dump(mode="json"))

    # ---- streamed -------------------------------------------------------------------------
    async def _streamed(self, send: Send) -> None:
        n = len(self.plan.configs)
        writer = ChunkWriter(self.completion_id, self.created, self.plan.model)
        tx, rx = anyio.create_memory_object_stream[Delta](math.inf)
        observers = [StreamObserver(i, tx) for i in range(n)]
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        for i in range(n):
            await write(writer.role(i))
        outcome: list[list[RunTrace] | APIError] = []

        async def produce() -> None:
            with tx:
                try:
                    outcome.append(await self._execute(observers.__getitem__))
                except APIError as exc:
                    outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            with rx:
                async for delta in rx:
                    await write(writer.delta(delta))
        result = outcome[0]
        if isinstance(result, APIError):
            self.status = result.status
            await write(writer.sse(result.body()))
        else:
            for i, trace in enumerate(result):
                for delta in observers[i].closing_deltas(trace.answer):
                    await write(writer.delta(delta))
                await write(writer.finish(i, finish_reason_of(trace)))
            await write(writer.usage(usage_of(result, self.completion_id).model_dump(mode="json")))
        self._answered = True
        await send({"type": "http.response.body", "body": writer.sse("[DONE]"), "more_body": False})


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})
