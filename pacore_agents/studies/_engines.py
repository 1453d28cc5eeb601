"""A study's named engines (several models in one graph) and their declared cost.

The ``[engine]`` table is the engine named ``default``; ``[engines.NAME]`` tables add more, each
one engine kind's options. A role runs on the engine its ``engine`` names (a topology spec's
``[roles.NAME]``, or an arm's ``roles = { sink = { engine = "big" } }``: an arm can rebind roles,
so one study compares "8B everywhere" with "1.7B explorers + 8B sink" on the same problems).
Baselines (``single``, ``self-consistency``) and the trajectory pool run on ``default``.

Cost: any engine table may declare ``cost_per_1k_tokens`` (a price) or ``active_params`` (for
a FLOPs estimate: ~2 x active parameters per token, prompt and completion alike). They change
what the report weighs, not what runs: they stay out of the results fingerprint. The one
exception, a self-consistency arm with ``match_on = "cost"``, draws N from them once: the sizes
are saved with the costs they came from, a resumed study keeps both, and the report says when
the latest costs differ. Every engine must declare the same kind of cost (price or FLOPs), or none.

An engine that reports no usage for a node that produced text is an error in a study (the unit
is not stored), never a silent zero: effective TTC and cost are made of those counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pacore_agents._binding import DEFAULT_ENGINE
from pacore_agents._engine import Engine
from pacore_agents._errors import ConfigError, EngineError
from pacore_agents._trace import NodeRecord
from pacore_agents._wrappers import RetryPolicy
from pacore_agents.engines import EngineOptions, create_engine, results_fingerprint

COST_KEYS = ("cost_per_1k_tokens", "active_params")
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+$")


class EngineCost(BaseModel):
    """The declared cost of one engine's tokens (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cost_per_1k_tokens: float | None = Field(default=None, ge=0, description="price per 1000 tokens "
                                             "(prompt + completion)")
    active_params: float | None = Field(default=None, gt=0, description="active parameters per token "
                                        "(a FLOPs estimate: 2 x active_params per token)")

    @model_validator(mode="after")
    def _one(self) -> EngineCost:
        if (self.cost_per_1k_tokens is None) == (self.active_params is None):
            raise ValueError("declare one of cost_per_1k_tokens or active_params")
        return self

    @property
    def unit(self) -> str:
        return "price" if self.cost_per_1k_tokens is not None else "flops"

    def of(self, tokens: int) -> float:
        """The cost of ``tokens`` tokens (price units, or FLOPs)."""
        if self.cost_per_1k_tokens is not None:
            return tokens / 1000 * self.cost_per_1k_tokens
        assert self.active_params is not None
        return 2 * self.active_params * tokens


def split_costs(data: Any) -> Any:
    """A study table (before validation) with the cost keys moved out of ``engine`` and every
    ``engines.NAME`` into ``costs.NAME`` (``[engine]``'s under ``default``)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    costs: dict[str, Any] = {}
    tables: list[tuple[str, str | None]] = [("engine", None)]
    tables += [("engines", name) for name in (data.get("engines") or {}) if isinstance(data["engines"], dict)]
    for key, name in tables:
        table = data.get(key) if name is None else data[key][name]
        if not isinstance(table, dict) or not any(k in table for k in COST_KEYS):
            continue
        kept = {k: v for k, v in table.items() if k not in COST_KEYS}
        costs[name or DEFAULT_ENGINE] = {k: table[k] for k in COST_KEYS if k in table}
        if name is None:
            data[key] = kept
        else:
            data[key] = {**data[key], name: kept}
    if costs:
        if "costs" in data:
            raise ValueError("declare an engine's cost in its table (cost_per_1k_tokens = ...), not in costs")
        data["costs"] = costs
    return data


def check_engines(names: Iterable[str], costs: Mapping[str, EngineCost]) -> None:
    """Engine names are valid and not ``default`` (that is ``[engine]``); costs name known
    engines and are of one kind, declared for all or none."""
    known = {DEFAULT_ENGINE}
    for name in names:
        if name == DEFAULT_ENGINE:
            raise ValueError(f"[engines.{DEFAULT_ENGINE}]: the default engine is the [engine] table")
        if not _NAME.match(name):
            raise ValueError(f"[engines.{name}]: an engine name uses letters, digits and _ . @ + -")
        known.add(name)
    if costs:
        if set(costs) != known:
            missing = sorted(known - set(costs))
            raise ValueError(f"engine {missing[0]!r} declares no cost: declare cost_per_1k_tokens or "
                             "active_params in every engine table, or in none")
        if len({c.unit for c in costs.values()}) > 1:
            raise ValueError("engines declare costs of two kinds: use cost_per_1k_tokens everywhere, "
                             "or active_params everywhere")


def check_role_engines(arm: str, roles: Mapping[str, Any], engines: Iterable[str]) -> None:
    """Every role of an arm names an engine of the study."""
    known = {DEFAULT_ENGINE, *engines}
    for name, role in roles.items():
        if role.engine is not None and role.engine not in known:
            raise ConfigError(f"arm {arm!r}: role {name!r} runs on engine {role.engine!r}, which the study "
                              f"does not declare: add an [engines.{role.engine}] table (engines: "
                              f"{', '.join(sorted(known))})")


def engines_fingerprint(engines: Mapping[str, EngineOptions]) -> dict[str, Any]:
    """What of the named engines changes results (``results_fingerprint`` of each)."""
    return {name: results_fingerprint(options) for name, options in sorted(engines.items())}


def create_engines(engines: Mapping[str, EngineOptions], retry: RetryPolicy) -> dict[str, Engine]:
    """The named engines (not started), by name."""
    return {name: create_engine(options, retry=retry) for name, options in engines.items()}


def require_usage(records: Iterable[NodeRecord]) -> None:
    """Raise ``EngineError`` if an engine reported no usage for a node that produced text."""
    for record in records:
        if record.status != "ok" or not record.content or record.notes.get("precomputed"):
            continue
        # an OpenAI server without usage: prompt 0, completion estimated from the text
        guessed = record.usage.prompt_tokens == 0 and record.notes.get("completion_tokens") == "estimated"
        if record.usage.completion_tokens <= 0 or guessed:
            raise EngineError(f"engine {record.engine or DEFAULT_ENGINE!r} reported no usage for node "
                              f"{record.id}: a study counts tokens (effective TTC, cost); use an engine "
                              "or server that returns usage", retryable=False)


def engine_token_rows(traces: Iterable[tuple[str, Mapping[str, Any]]],
                      costs: Mapping[str, EngineCost]) -> list[dict[str, Any]]:
    """``engine_tokens.csv``'s rows from ``(arm, trace JSON)`` pairs (every stored sample):
    tokens per arm, engine and role, as means per sample (columns in ``_columns``)."""
    sums: dict[tuple[str, str, str], list[int]] = {}
    samples: dict[str, int] = {}
    for arm, trace in traces:
        samples[arm] = samples.get(arm, 0) + 1
        for node in trace.get("nodes", []):
            usage = node.get("usage") or {}
            key = (arm, node.get("engine") or DEFAULT_ENGINE, str(node.get("role", "")))
            acc = sums.setdefault(key, [0, 0, 0])
            acc[0] += 1
            acc[1] += int(usage.get("completion_tokens", 0))
            acc[2] += int(usage.get("prompt_tokens", 0))
    rows = []
    for (arm, engine, role), (nodes, completion, prompt) in sorted(sums.items()):
        n = samples[arm]
        cost = costs.get(engine)
        rows.append({"arm": arm, "engine": engine, "role": role, "samples": n, "nodes": nodes,
                     "completion_tokens": round(completion / n, 2), "prompt_tokens": round(prompt / n, 2),
                     "cost": None if cost is None else cost.of(completion + prompt) / n})
    return rows
