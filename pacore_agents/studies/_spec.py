"""The study spec (TOML): dataset, samples, seed, engine, sampling, retries and arms.

Unknown keys are errors naming the key. An arm is either a PaCoRe-style run over a topology
(``topology`` = built-in name or spec path, or ``widths`` = all-to-all widths before the sink)
or a baseline: ``baseline = "single"`` (one trajectory) or ``"self-consistency"`` (majority vote
over N independent trajectories, N matched to each other arm's effective TTC; see
``_baselines``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pacore_agents._binding import DEFAULT_ENGINE
from pacore_agents._config import PACORE_SAMPLING, FailurePolicy, RunConfig
from pacore_agents._engine import SamplingParams
from pacore_agents._errors import ConfigError
from pacore_agents._policies import Policies
from pacore_agents._references import OrderPolicy, derive_seed
from pacore_agents._role_merge import RoleOverride as RoleOverride  # re-exported by studies
from pacore_agents._role_merge import merge_roles
from pacore_agents._roles import (
    CompactionKind,
    Role,
    builtin_roles,
    default_role,
    pacore_synthesis_template,
)
from pacore_agents._run import resolve_topology
from pacore_agents._specs import load_topology
from pacore_agents._topology import Topology, all_to_all
from pacore_agents._wrappers import RetryPolicy
from pacore_agents.engines import (
    EngineOptions,
    VLLMOptions,
    parse_engine_options,
    results_fingerprint,
)
from pacore_agents.execution import ExecutionSettings

from ._datasets import DatasetSpec
from ._engines import (
    EngineCost,
    check_engines,
    engines_fingerprint,
    split_costs,
)
from ._sweeps import SweepSpec, expand_sweep

BaselineKind = Literal["single", "self-consistency"]
MatchOn = Literal["ttc", "cost"]


class ArmSpec(BaseModel):
    """One arm of the study. Knobs left unset take the study's (or the library's) defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@+-]+$", description="unique; letters, "
                      "digits and _ . @ + -")
    baseline: BaselineKind | None = Field(default=None, description="a baseline instead of a topology")
    topology: str | None = Field(default=None, description="built-in name or path to a .toml spec")
    widths: list[int] | None = Field(default=None, description="all-to-all widths; the sink is appended")
    params: dict[str, Any] = Field(default_factory=dict, description="topology parameter overrides")
    roles: dict[str, RoleOverride] = Field(
        default_factory=dict, description="role overrides, merged onto the built-in or topology role of "
        "that name (a new name defines a role)")
    compaction: CompactionKind | None = Field(default=None, description="for every role of the arm")
    order: OrderPolicy | None = Field(default=None, description="order of references in a prompt "
                                      "(default: pacore)")
    merge_identical: bool | None = Field(default=None, description="send identical prompts as one "
                                         "request with n (default: true)")
    max_message_tokens: int | None = Field(default=None, gt=0, description="cut each message to this many tokens")
    on_failure: FailurePolicy | None = Field(default=None, description="a failed node: go on without "
                                             "its message (default here: continue) or fail the sample")
    sampling: SamplingParams | None = Field(default=None, description="overrides of the study's sampling")
    policies: Policies | None = Field(default=None, description="stopping and quorum policies, merged onto "
                                      "the topology spec's (each policy it sets replaces the spec's)")
    twin: str | None = Field(default=None, description="a policy arm's fixed-width twin: the arm the report "
                             "compares it with, paired (tokens saved, accuracy difference)")
    match: list[str] | None = Field(default=None, description="self-consistency: arms whose budget to "
                                    "match (see match_on)")
    n: list[int] | None = Field(default=None, description="self-consistency: fixed vote sizes instead")
    match_on: MatchOn = Field(default="ttc", description="self-consistency: match N to each matched arm's "
                              "mean effective TTC (ttc) or mean declared cost per sample (cost: needs "
                              "engine costs)")
    sweep: str | None = Field(default=None, description="set by [[sweep]]: the sweep this arm is a point of")
    sweep_point: dict[str, Any] = Field(default_factory=dict, description="set by [[sweep]]: the axis values")

    @model_validator(mode="after")
    def _check_kind(self) -> ArmSpec:
        graph_knobs = [k for k in ("topology", "widths") if getattr(self, k) is not None]
        if self.baseline is None:
            if len(graph_knobs) != 1:
                raise ValueError(f"arm {self.name!r}: give exactly one of topology or widths (or a baseline)")
            if self.match is not None or self.n is not None or self.match_on != "ttc":
                raise ValueError(f"arm {self.name!r}: match, match_on and n are for baseline = 'self-consistency'")
        else:
            extra = graph_knobs + [k for k in ("roles", "params", "policies", "twin") if getattr(self, k)]
            if extra:
                raise ValueError(f"arm {self.name!r}: a {self.baseline} baseline takes no {extra[0]}")
            if self.baseline == "single" and (self.match is not None or self.n is not None or self.match_on != "ttc"):
                raise ValueError(f"arm {self.name!r}: match, match_on and n are for baseline = 'self-consistency'")
            if self.n is not None and self.match_on != "ttc":
                raise ValueError(f"arm {self.name!r}: n gives fixed vote sizes; match_on is for matched ones")
            if self.n is not None and (not self.n or min(self.n) < 1):
                raise ValueError(f"arm {self.name!r}: n must list vote sizes >= 1")
        return self

    def build_topology(self) -> Topology:
        """The arm's topology (topology arms only)."""
        if self.widths is not None:
            if self.params:
                raise ConfigError(f"arm {self.name!r}: params apply to a named topology, not to widths")
            return all_to_all(self.widths, name=f"all-to-all{self.widths}")
        assert self.topology is not None
        if self.params:
            return load_topology(self.topology, self.params)
        return resolve_topology(self.topology)

    def build_roles(self, topology: Topology) -> dict[str, Role]:
        """Roles to pass to ``run``: built-ins, then the topology's, then the arm's overrides
        merged onto them (see ``RoleOverride``), then the arm's ``compaction`` on every role."""
        return merge_roles({**builtin_roles(), **topology.roles}, self.roles, compaction=self.compaction)


    def build_policies(self, topology: Topology) -> Policies | None:
        """The arm's policies: the topology spec's, with each policy the arm sets replacing it
        (``equivalence`` too, if set); checked against the topology (``ConfigError``)."""
        mine, spec = self.policies, topology.policies
        if mine is None:
            merged = spec
        elif spec is None:
            merged = mine
        else:
            merged = spec.model_copy(update={k: getattr(mine, k) for k in mine.model_fields_set})
        if merged is not None:
            merged.check(topology)
        return merged

    def used_roles(self, topology: Topology) -> dict[str, Role]:
        """The effective roles the arm's nodes use, by name (in node order)."""
        roles = self.build_roles(topology)
        used: dict[str, Role] = {}
        for node in topology.nodes():
            name = topology.role_of(node) or default_role(node, topology.sink)
            if name in roles:
                used.setdefault(name, roles[name])
        return used


def template_label(template: str | None) -> str:
    """A short name for a template: 'problem' (none), 'pacore', or 'sha:' + 8 hex digits."""
    if template is None:
        return "problem"
    if template == pacore_synthesis_template():
        return "pacore"
    return "sha:" + hashlib.sha256(template.encode("utf-8")).hexdigest()[:8]


def role_summary(role: Role) -> dict[str, str]:
    """What ran: template (name or short hash), system prompt hash, compaction, sampling set."""
    sampling = role.sampling.model_dump(exclude_none=True) if role.sampling is not None else {}
    system = "" if role.system is None else "sha:" + hashlib.sha256(role.system.encode("utf-8")).hexdigest()[:8]
    return {"template": template_label(role.template), "system": system, "compaction": role.compaction,
            "sampling": ",".join(f"{k}={v}" for k, v in sorted(sampling.items())), "engine": role.engine or ""}


def describe_role(role: Role) -> str:
    """``role_summary`` on one line (empty fields left out)."""
    return " ".join(f"{k}={v}" for k, v in role_summary(role).items() if v)


GraderKind = Literal["math", "code"]


class GradingSpec(BaseModel):
    """How answers are graded: ``grader = "math"`` (math-verify in a process pool, a timeout per
    check) or ``"code"`` (every test of a program run in a sandbox, ``[grading.code]``). Every
    node's message is graded as soon as its record is final, while the rest of its unit runs;
    the math pool's worker starts with the study (it loads math-verify, not the study's own
    modules); the code grader runs its canaries as the study starts."""

    model_config = ConfigDict(extra="forbid")

    grader: GraderKind = Field(default="math", description="math (math-verify) or code (execution)")
    timeout: float = Field(default=5.0, gt=0, description="seconds per math-verify check")
    workers: int = Field(default=1, ge=1, description="grading processes (math) or sandboxes at once (code)")
    code: ExecutionSettings = Field(default_factory=ExecutionSettings, description="the [grading.code] "
                                    "table: mode (lcb | judge), sandbox (bwrap | none), timeouts, limits")

    @model_validator(mode="after")
    def _code_table(self) -> GradingSpec:
        if self.grader != "code" and self.code != ExecutionSettings():  # a dump's defaults are fine
            raise ValueError("[grading.code] is for grader = 'code': set [grading] grader = 'code' or remove it")
        return self


# Fields that may change between runs into the same out dir: they do not change results.
# The engine enters the fingerprint as ``results_fingerprint`` (the flat form old stores hold).
_VOLATILE = {"concurrency": True, "max_in_flight": True, "retry": True, "grading": {"workers"},
             "engine": True, "engines": True, "costs": True}


class StudySpec(BaseModel):
    """A study: every arm runs every problem ``samples`` times."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="study", description="the study's name (report titles)")
    dataset: DatasetSpec = Field(description="the [dataset] table: where the problems come from")
    samples: int = Field(default=1, ge=1, description="runs of every (arm, problem)")
    seed: int = Field(default=0, description="derives every request's seed (when seeded)")
    seeded: bool = Field(default=True, description="send per-request seeds derived from seed (set "
                         "false for engines that cannot seed, e.g. vLLM 0.32 on CPU with chunked prefill)")
    engine: EngineOptions = Field(default_factory=VLLMOptions, description="the [engine] table: kind = "
                                  "vllm (default) | openai | function, and that kind's options; the "
                                  "engine named 'default'")
    engines: dict[str, EngineOptions] = Field(default_factory=dict, description="[engines.NAME] tables: "
                                              "more engines (each one kind's options), bound to roles "
                                              "by roles.NAME.engine = \"NAME\"")
    costs: dict[str, EngineCost] = Field(default_factory=dict, description="set from cost_per_1k_tokens "
                                         "or active_params in the engine tables (see studies._engines)")
    sampling: SamplingParams = Field(default=PACORE_SAMPLING, description="every request's sampling "
                                     "(arms and roles override fields of it)")
    retry: RetryPolicy = Field(default=RetryPolicy(), description="retries of transient engine errors")
    trajectory_pool: bool = Field(default=False, description="share round-1 trajectories across arms")
    grading: GradingSpec = Field(default=GradingSpec(), description="the grader (math or code) and its options")
    arms: list[ArmSpec] = Field(default_factory=list, description="[[arms]] tables")
    sweep: list[SweepSpec] = Field(default_factory=list, description="[[sweep]] tables: grids of topology "
                                   "arms, expanded into arms when the spec loads (and then emptied)")

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("concurrency", "max_in_flight"):
                if key in data:
                    raise PydanticCustomError(
                        "removed_key", "{key} was removed: every unit of a study now feeds one shared "
                        "executor that admits sequences up to the engine's capacity; delete the key (to "
                        "cap the engine, set [engine] max_sequences)", {"key": key})
        return data

    @model_validator(mode="before")
    @classmethod
    def _costs(cls, data: Any) -> Any:
        return split_costs(data)

    @field_validator("engine", mode="before")
    @classmethod
    def _parse_engine(cls, value: Any) -> Any:
        return _engine_options(value)

    @field_validator("engines", mode="before")
    @classmethod
    def _parse_engines(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: _engine_options(table) for name, table in value.items()}

    @model_validator(mode="after")
    def _expand_sweeps(self) -> StudySpec:
        """Runs before ``_check_arms``: appends each sweep's arms, points ``match`` entries that
        name a sweep at its arms, and empties ``sweep`` (the arms now say everything)."""
        members: dict[str, list[str]] = {}
        for sweep in self.sweep:
            for table in expand_sweep(sweep):
                try:
                    arm = ArmSpec.model_validate(table)
                except ValidationError as exc:
                    raise ValueError(f"sweep {sweep.id!r}, arm {table['name']!r}: "
                                     + format_error(exc, "").removeprefix("study spec : ")) from exc
                self.arms.append(arm)
                members.setdefault(sweep.id, []).append(arm.name)
        for arm in self.arms:
            if arm.match is not None:
                arm.match = [m for target in arm.match for m in members.get(target, [target])]
        self.sweep = []
        if not self.arms:
            raise ValueError("the study has no arms: add [[arms]] or [[sweep]] tables")
        return self

    @model_validator(mode="after")
    def _check_arms(self) -> StudySpec:
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique: {dup[0]!r} is used twice")
        check_engines(self.engines, self.costs)
        runs = {a.name for a in self.arms if a.baseline is None}
        for arm in self.arms:
            if arm.baseline == "self-consistency" and arm.n is None and not runs:
                raise ValueError(f"arm {arm.name!r}: self-consistency matches the budget of topology "
                                 "arms, and the study has none: add one, or give n = [vote sizes]")
            if arm.match_on == "cost" and not self.costs:
                raise ValueError(f"arm {arm.name!r}: match_on = 'cost' needs declared engine costs: declare "
                                 "cost_per_1k_tokens or active_params in every engine table, or match_on = 'ttc'")
            if arm.match_on == "cost" and self.costs[DEFAULT_ENGINE].of(1000) <= 0:
                raise ValueError(f"arm {arm.name!r}: match_on = 'cost' prices self-consistency's trajectories at "
                                 "the [engine] table's cost, which is 0: declare a cost > 0 there")
        code_data = self.dataset.is_code()
        if code_data and self.grading.grader != "code":
            raise ValueError("this dataset's answers are programs graded by execution: set [grading] "
                             "grader = 'code'")
        if not code_data and self.grading.grader == "code":
            raise ValueError("grader = 'code' needs a code dataset (name = 'humaneval', kind = "
                             "'livecodebench' or kind = 'code-tasks')")
        for arm in self.arms:
            for target in arm.match or []:
                if target not in runs:
                    raise ValueError(f"arm {arm.name!r}: match names {target!r}, which is not a "
                                     f"topology arm of this study ({', '.join(sorted(runs)) or 'none'})")
        return self

    def run_config(self, arm: ArmSpec, sample: int) -> RunConfig:
        """The ``RunConfig`` of one sample of a topology arm (retries are the study's)."""
        kw: dict[str, Any] = {
            "sampling": self.sampling.merged(arm.sampling),
            "seed": derive_seed(self.seed, "sample", sample) if self.seeded else None,
            "on_failure": arm.on_failure or "continue",
            "retry": self.retry,
        }
        for knob in ("order", "merge_identical", "max_message_tokens"):
            if getattr(arm, knob) is not None:
                kw[knob] = getattr(arm, knob)
        return RunConfig(**kw)

    def fingerprint(self) -> str:
        """Canonical JSON of everything that changes results (see ``_VOLATILE``). Fields added
        since the first stores were written enter it only when set (see ``_V0_KEYS``)."""
        full = self.model_dump(mode="json", exclude=_VOLATILE)  # type: ignore[arg-type]
        sparse = self.model_dump(mode="json", exclude=_VOLATILE, exclude_defaults=True)  # type: ignore[arg-type]
        data = _v0_compatible(full, sparse, "")
        data["engine"] = results_fingerprint(self.engine)
        if self.engines:  # studies of one engine keep the fingerprint they always had
            data["engines"] = engines_fingerprint(self.engines)
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


# The keys of each section in the fingerprints existing out dirs hold (the first format; list
# items share their list's path). A key not listed here is a field added since: it enters the
# fingerprint only when set to a non-default value, so old out dirs keep matching while a study
# that uses a new knob differs, as it should (tests/fixtures/study_gsm8k_v0.*).
_SAMPLING_V0 = frozenset({"frequency_penalty", "max_tokens", "presence_penalty", "seed", "stop",
                          "temperature", "top_k", "top_p"})
_V0_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"arms", "dataset", "engine", "grading", "name", "samples", "sampling", "seed",
                   "seeded", "trajectory_pool"}),
    "dataset": frozenset({"answer_field", "format", "id_field", "ids", "limit", "name", "offset", "path",
                          "problem_field", "prompt_template", "system_prompt"}),
    "arms": frozenset({"baseline", "compaction", "match", "max_message_tokens", "merge_identical", "n",
                       "name", "on_failure", "order", "params", "roles", "sampling", "topology", "widths"}),
    "arms.sampling": _SAMPLING_V0,
    "sampling": _SAMPLING_V0,
    "grading": frozenset({"timeout"}),
}


def _v0_compatible(full: Any, sparse: Any, path: str) -> Any:
    """``full`` without the keys unknown to ``_V0_KEYS[path]`` that ``sparse`` (the same dump
    without defaults) does not hold."""
    if isinstance(full, dict):
        known = _V0_KEYS.get(path)
        given = sparse if isinstance(sparse, dict) else {}
        return {k: _v0_compatible(v, given.get(k), f"{path}.{k}" if path else k) for k, v in full.items()
                if known is None or k in known or k in given}
    if isinstance(full, list):
        items = sparse if isinstance(sparse, list) and len(sparse) == len(full) else [None] * len(full)
        return [_v0_compatible(v, s, path) for v, s in zip(full, items, strict=True)]
    return full


def _engine_options(value: Any) -> Any:
    try:
        return parse_engine_options(value)
    except ConfigError as exc:  # one line that says what to fix, without pydantic's prefix
        reason = str(exc).removeprefix("engine option ")
        raise PydanticCustomError("engine_options", "{reason}", {"reason": reason}) from exc


def format_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        else:
            parts.append(f"{where}: {msg}" if where else msg)
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"study spec {source}: " + "; ".join(parts) + more
