"""Run configuration: sampling, seeds, failure policy, reference order, budgets, caps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._engine import SamplingParams
from ._references import OrderPolicy
from ._wrappers import RetryPolicy

FailurePolicy = Literal["fail", "continue"]
RunMode = Literal["dataflow", "rounds"]

#: The paper's sampling: temperature 1.0, top_p 1.0, generation up to the model limit.
PACORE_SAMPLING = SamplingParams(temperature=1.0, top_p=1.0)


class RunConfig(BaseModel):
    """How a run behaves. The defaults reproduce PaCoRe (published order, sampling, prompts).

    - ``seed``: per-request seeds are derived from (seed, problem id, node), so results do not
      depend on completion order; ``None`` sends no seed.
    - ``on_failure``: ``fail`` ends the run at the first node that fails after retries;
      ``continue`` records the failure, drops that message from the next round and marks the
      trace ``degraded`` (a failed sink always fails the run).
    - ``merge_identical``: nodes of one round with identical prompts and sampling are sent as one
      request with ``n`` = their count. It saves requests; on vLLM the prefill saving comes from
      prefix caching, which concurrent separate requests get too (see BENCHMARKS.md).
    - ``mode``: ``dataflow`` (default) plans a node as soon as its in-neighbours are applied;
      ``rounds`` waits for the whole previous round (a barrier per round). Both send the same
      prompts with the same seeds, so they give the same results; dataflow keeps the engine
      fuller on graphs that are not all-to-all.
    - ``retry``: bounded retries of transient engine errors, with back-off that holds no slot.
      How many sequences run at once is the engine's executor's business (``executor_for``;
      the window comes from the engine's capacity), shared by every run on that engine.
    - ``max_message_tokens``: cut each reference to this many tokens (keeping its end);
      ``context_reserve_tokens``: tokens kept free for generation when fitting a prompt into the
      engine's context (default: ``sampling.max_tokens``, at most half the context).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _removed_knobs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_in_flight" in data:
            raise ValueError("max_in_flight was removed: the engine's executor admits sequences in a "
                             "window shared by every run (set it with executor_for(engine, window=N) "
                             "or the engine option max_sequences)")
        return data

    sampling: SamplingParams = PACORE_SAMPLING
    seed: int | None = 0
    on_failure: FailurePolicy = "fail"
    order: OrderPolicy = "pacore"
    merge_identical: bool = True
    mode: RunMode = "dataflow"
    retry: RetryPolicy | None = RetryPolicy()
    max_message_tokens: int | None = Field(default=None, gt=0)
    context_reserve_tokens: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0, description="whole run, seconds")
