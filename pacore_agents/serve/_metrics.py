"""Prometheus metrics of the server (``GET /metrics``), and the engine wrapper that counts
the sequences and tokens going through the engine.

One ``CollectorRegistry`` per app, so several apps in a process never share counters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pacore_agents._engine import Completion, Engine, GenerationRequest
from pacore_agents._wrappers import EngineWrapper


class ServerMetrics:
    """The server's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pacore_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.runs_in_flight = Gauge("pacore_runs_in_flight", "PaCoRe runs in flight", registry=r)
        self.runs = Counter("pacore_runs", "PaCoRe runs ended, by outcome", ["outcome"], registry=r)
        self.tokens = Counter("pacore_tokens", "tokens through the engine, by kind (prompt, completion)",
                              ["kind"], registry=r)
        self.engine_tokens = Counter("pacore_engine_tokens", "tokens by named engine ('default': the "
                                     "--engine flags') and kind (prompt, completion)", ["engine", "kind"],
                                     registry=r)
        self.engine_sequences = Gauge("pacore_engine_sequences_in_flight",
                                      "sequences (samples) the server has in the engine", registry=r)
        self.engine_running = Gauge("pacore_engine_running", "sequences in the engine's batch (engine-reported)",
                                    registry=r)
        self.engine_waiting = Gauge("pacore_engine_waiting", "sequences in the engine's queue (engine-reported)",
                                    registry=r)
        self.disconnects = Counter("pacore_client_disconnects", "runs cancelled because the client went away",
                                   registry=r)
        self.latency = Histogram("pacore_request_seconds", "chat completion latency, seconds", registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountingEngine(EngineWrapper):
    """Delegates to ``inner``; counts its sequences in flight and its tokens into ``metrics``."""

    def __init__(self, inner: Engine, metrics: ServerMetrics, name: str = "default") -> None:
        super().__init__(inner)
        self.metrics = metrics
        self.name = name
        self.sequences_in_flight = 0

    async def around(self, request: GenerationRequest,
                     send: Callable[[], Awaitable[list[Completion]]]) -> list[Completion]:
        """Every way of sending (whole, streamed text, streamed samples) is counted."""
        self._enter(request.n)
        try:
            out = await send()
        finally:
            self._exit(request.n)
        self._count(out)
        return out

    def _enter(self, n: int) -> None:
        self.sequences_in_flight += n
        self.metrics.engine_sequences.set(self.sequences_in_flight)

    def _exit(self, n: int) -> None:
        self.sequences_in_flight -= n
        self.metrics.engine_sequences.set(self.sequences_in_flight)

    def _count(self, completions: list[Completion]) -> None:
        if completions:  # n samples share one prompt: count its prefill once
            prompt = completions[0].usage.prompt_tokens
            self.metrics.tokens.labels("prompt").inc(prompt)
            self.metrics.engine_tokens.labels(self.name, "prompt").inc(prompt)
        completion = sum(c.usage.completion_tokens for c in completions)
        self.metrics.tokens.labels("completion").inc(completion)
        self.metrics.engine_tokens.labels(self.name, "completion").inc(completion)
