"""From a chat request to PaCoRe runs, and from their traces to the OpenAI response.

Contract:
- ``model`` names a topology of the ``TopologyCatalog`` (the built-ins and every ``--topology``);
  ``pacore.widths`` / ``pacore.params`` override its parameters (400 naming the field if bad).
- The run's problem id is a hash of the messages and every knob that shapes the answer
  (never the completion id), so the same request gives the same answer, streamed or not.
- Run i of ``n`` gets seed ``seed`` (i = 0) or one derived from (seed, i); no seed sends none.
- ``usage`` sums every node of every run; ``usage.pacore.rounds`` sums per round.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacore_agents._config import PACORE_SAMPLING, RunConfig
from pacore_agents._engine import SamplingParams
from pacore_agents._errors import ConfigError
from pacore_agents._messages import ChatMessage, Problem
from pacore_agents._references import derive_seed
from pacore_agents._roles import THINK_END
from pacore_agents._specs import builtin_topologies, load_topology, parse_spec
from pacore_agents._topology import Topology
from pacore_agents._trace import RunTrace
from pacore_agents._wrappers import RetryPolicy

from ._errors import APIError
from ._models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
    ModelCard,
    PacoreUsage,
    RoundUsage,
)


@dataclass(frozen=True)
class CatalogEntry:
    source: str  # a built-in name or a spec path
    description: str
    widths: list[int]


class TopologyCatalog:
    """The topologies served as models: model id -> spec (built-ins, then ``--topology``s, whose
    id is the spec's ``name``; a later one with the same id replaces an earlier one)."""

    def __init__(self, extra: list[str] | None = None) -> None:
        self.created = int(time.time())
        self.entries: dict[str, CatalogEntry] = {}
        for name, spec in builtin_topologies().items():
            self.entries[name] = CatalogEntry(name, spec.description, load_topology(name).widths)
        for item in extra or []:
            self.add(item)
        self._cache: dict[str, Topology] = {}

    def add(self, name_or_path: str) -> str:
        """Register a built-in name or a spec file (raises ``ConfigError`` if bad); its id."""
        path = Path(name_or_path)
        if name_or_path.endswith(".toml") or path.exists():
            if not path.is_file():
                raise ConfigError(f"topology spec file {name_or_path!r} does not exist")
            spec = parse_spec(path.read_text(encoding="utf-8"), source=name_or_path)
            topo = load_topology(path)
            self.entries[spec.name] = CatalogEntry(str(path), spec.description, topo.widths)
            return spec.name
        topo = load_topology(name_or_path)
        return topo.name

    def cards(self, needs: Callable[[Topology], list[str]] | None = None) -> list[ModelCard]:
        """The model cards; ``needs(topology)``: the engines a topology's roles run on."""
        return [ModelCard(id=name, created=self.created, description=e.description, widths=e.widths,
                          engines=needs(self._base(name)) if needs is not None else [])
                for name, e in self.entries.items()]

    def resolve(self, model: str, request: ChatCompletionRequest) -> Topology:
        """The topology ``model`` names with the request's overrides (cached per overrides)."""
        entry = self.entries.get(model)
        if entry is None:
            raise APIError(404, f"the model {model!r} does not exist: GET /v1/models lists the topologies served",
                           param="model", code="model_not_found")
        knobs = request.pacore
        overrides: dict[str, Any] = dict(knobs.params or {})
        if knobs.widths is not None:
            if "widths" not in self._base(model).params:
                raise APIError(400, f"pacore.widths applies to all-to-all topologies, not {model!r}: "
                               "use pacore.params", param="pacore.widths", code="invalid_value")
            overrides["widths"] = knobs.widths
        key = json.dumps([model, overrides], sort_keys=True, default=str)
        topo = self._cache.get(key)
        if topo is None:
            try:
                topo = load_topology(entry.source, overrides or None)
            except ConfigError as exc:
                field = "pacore.widths" if knobs.widths is not None and "width" in str(exc) else "pacore.params"
                raise APIError(400, f"{field}: {exc}", param=field, code="invalid_value") from exc
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = topo
        return topo

    def _base(self, model: str) -> Topology:
        key = json.dumps([model, {}])
        if key not in self._cache:
            self._cache[key] = load_topology(self.entries[model].source)
        return self._cache[key]


@dataclass(frozen=True)
class RunPlan:
    """What one request runs: its topology, problem and the config of each of its n runs."""

    model: str
    topology: Topology
    problem: Problem
    configs: list[RunConfig]


def plan_request(request: ChatCompletionRequest, catalog: TopologyCatalog,
                 default_max_tokens: int | None = None, retry: RetryPolicy | None = None) -> RunPlan:
    """Validate the request against the catalog and build its runs (raises ``APIError``)."""
    topology = catalog.resolve(request.model, request)
    messages = tuple(ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text)
                     for m in request.messages)
    sampling = SamplingParams(
        temperature=PACORE_SAMPLING.temperature if request.temperature is None else request.temperature,
        top_p=PACORE_SAMPLING.top_p if request.top_p is None else request.top_p,
        max_tokens=request.per_trajectory_tokens or default_max_tokens,
        stop=request.stop_tuple,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )
    knobs = request.pacore
    identity = json.dumps({"messages": [m.model_dump() for m in messages], "model": request.model,
                           "pacore": knobs.model_dump(), "sampling": sampling.model_dump()},
                          sort_keys=True, default=str)
    problem_id = "serve-" + hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
    try:
        problem = Problem.coerce(messages, id=problem_id)
    except ConfigError as exc:
        raise APIError(400, f"messages: {exc}", param="messages", code="invalid_value") from exc
    base: dict[str, Any] = {"sampling": sampling, "retry": retry}
    if knobs.order is not None:
        base["order"] = knobs.order
    if knobs.on_failure is not None:
        base["on_failure"] = knobs.on_failure
    if knobs.max_message_tokens is not None:
        base["max_message_tokens"] = knobs.max_message_tokens
    configs = [RunConfig(seed=run_seed(request.seed, i), **base) for i in range(request.n)]
    return RunPlan(request.model, topology, problem, configs)


def run_seed(seed: int | None, index: int) -> int | None:
    """Run ``index``'s seed: ``seed`` itself for the first run, a derived one for the others."""
    if seed is None:
        return None
    return seed if index == 0 else derive_seed(seed, "n", index)


def reasoning_of(trace: RunTrace) -> str | None:
    """The answering node's reasoning (the sink's, or a consensus stop's plurality message's):
    the engine's split, else the text before the last ``</think>``."""
    sink = trace.node(trace.answered_by or trace.sink)
    if sink.reasoning is not None:
        return sink.reasoning
    head, sep, _ = (sink.content or "").rpartition(THINK_END)
    return head.removeprefix("<think>").strip() if sep else None


def finish_reason_of(trace: RunTrace) -> str:
    reason = trace.node(trace.answered_by or trace.sink).finish_reason
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def usage_of(traces: list[RunTrace], completion_id: str) -> CompletionUsage:
    """Usage summed over every node of every run, and per round."""
    rounds: dict[int, RoundUsage] = {}
    prompt = completion = 0
    for trace in traces:
        for summary in trace.rounds:
            ru = rounds.setdefault(summary.round, RoundUsage(round=summary.round))
            ru.requests += summary.requests
        for node in trace.nodes:
            ru = rounds.setdefault(node.round, RoundUsage(round=node.round))
            ru.nodes += 1
            ru.failed += 1 if node.error else 0
            ru.prompt_tokens += node.usage.prompt_tokens
            ru.completion_tokens += node.usage.completion_tokens
            prompt += node.usage.prompt_tokens
            completion += node.usage.completion_tokens
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        pacore=PacoreUsage(runs=len(traces), effective_ttc=sum(t.effective_ttc for t in traces),
                           rounds=[rounds[r] for r in sorted(rounds)], trace=completion_id))


def completion_of(completion_id: str, created: int, model: str, traces: list[RunTrace]) -> ChatCompletion:
    """The OpenAI response for the runs' traces (in choice order)."""
    choices = [Choice(index=i, message=AssistantMessage(content=t.answer, reasoning_content=reasoning_of(t)),
                      finish_reason=finish_reason_of(t)) for i, t in enumerate(traces)]
    return ChatCompletion(id=completion_id, created=created, model=model, choices=choices,
                          usage=usage_of(traces, completion_id))
