"""Run configuration: sampling, seeds, failure policy, reference order, budgets, caps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ._engine import SamplingParams
from ._references import OrderPolicy
from ._wrappers import RetryPolicy

FailurePolicy = Literal["fail", "continue"]

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
    - ``max_in_flight`` / ``retry``: ``run`` wraps the engine in a cap and a retry policy; for a
      cap shared by concurrent runs, wrap the engine yourself and set ``max_in_flight=None``.
    - ``max_message_tokens``: cut each reference to this many tokens (keeping its end);
      ``context_reserve_tokens``: tokens kept free for generation when fitting a prompt into the
      engine's context (default: ``sampling.max_tokens``, at most half the context).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampling: SamplingParams = PACORE_SAMPLING
    seed: int | None = 0
    on_failure: FailurePolicy = "fail"
    order: OrderPolicy = "pacore"
    merge_identical: bool = True
    max_in_flight: int | None = Field(default=64, ge=1)
    retry: RetryPolicy | None = RetryPolicy()
    max_message_tokens: int | None = Field(default=None, gt=0)
    context_reserve_tokens: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0, description="whole run, seconds")
