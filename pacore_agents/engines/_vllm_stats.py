"""Engine-side figures of the in-process vLLM engine, from ``AsyncLLM``'s own stat loggers.

``VLLMCounters`` accumulates what vLLM reports after every engine step (``IterationStats``:
prompt tokens computed vs served from the local prefix cache; ``SchedulerStats``: requests
running / waiting). ``stat_logger_factory(counters)`` is the factory to pass in
``AsyncLLM.from_engine_args(stat_loggers=[...])``: it makes vLLM collect stats without its
periodic console logger (``disable_log_stats=True`` keeps the default loggers off). vLLM calls
``record`` on the event loop's output handler, where ``VLLMEngine.stats`` reads the counters:
no locking is needed. Nothing here imports vLLM until the factory is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pacore_agents._engine import EngineStats

__all__ = ["VLLMCounters", "stat_logger_factory"]


class VLLMCounters:
    """Cumulative prefill counters and the latest scheduler figures of one ``AsyncLLM``."""

    def __init__(self) -> None:
        self.prefill_computed_tokens = 0
        self.prefill_cached_tokens = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.steps = 0

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """Add one engine step's figures (either may be None)."""
        if iteration_stats is not None:
            prompt = iteration_stats.prompt_token_stats
            self.prefill_computed_tokens += int(prompt.computed)
            self.prefill_cached_tokens += int(prompt.local_cache_hit)
            self.prompt_tokens += int(prompt.total)
            self.generation_tokens += int(iteration_stats.num_generation_tokens)
            self.preemptions += int(iteration_stats.num_preempted_reqs)
        if scheduler_stats is not None:
            self.steps += 1
            self.running = int(scheduler_stats.num_running_reqs)
            self.waiting = int(scheduler_stats.num_waiting_reqs)
            self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)

    def snapshot(self, unfinished: int | None = None) -> EngineStats:
        """The counters as ``EngineStats``. ``unfinished``: requests the front end still
        tracks; 0 means the engine is idle (vLLM sends no stats once idle, so the last
        step's running/waiting figures would be stale)."""
        idle = unfinished == 0
        return EngineStats(
            source="vllm-inprocess",
            prefill_computed_tokens=self.prefill_computed_tokens,
            prefill_cached_tokens=self.prefill_cached_tokens,
            running=0 if idle else self.running,
            waiting=0 if idle else self.waiting,
            details={"prompt_tokens": self.prompt_tokens, "generation_tokens": self.generation_tokens,
                     "preemptions": self.preemptions, "steps": self.steps,
                     "kv_cache_usage": 0.0 if idle else self.kv_cache_usage},
        )


def stat_logger_factory(counters: VLLMCounters) -> Callable[[Any, int], Any]:
    """A per-engine stat-logger factory for ``AsyncLLM`` that feeds ``counters``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _CountersLogger(StatLoggerBase):  # type: ignore[misc,unused-ignore]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any,
                   mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            counters.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            return None

    def factory(vllm_config: Any, engine_index: int) -> Any:
        return _CountersLogger(vllm_config, engine_index)

    return factory
