"""The study spec (TOML): dataset, samples, seed, engine, sampling, concurrency and arms.

Unknown keys are errors naming the key. An arm is either a PaCoRe-style run over a topology
(``topology`` = built-in name or spec path, or ``widths`` = all-to-all widths before the sink)
or a baseline: ``baseline = "single"`` (one trajectory) or ``"self-consistency"`` (majority vote
over N independent trajectories, N matched to each other arm's effective TTC; see
``_baselines``).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pacore_agents._config import PACORE_SAMPLING, FailurePolicy, RunConfig
from pacore_agents._engine import SamplingParams
from pacore_agents._errors import ConfigError
from pacore_agents._references import OrderPolicy, derive_seed
from pacore_agents._roles import CompactionKind, Role, builtin_roles
from pacore_agents._run import resolve_topology
from pacore_agents._specs import RoleSpec, load_topology
from pacore_agents._topology import Topology, all_to_all
from pacore_agents._wrappers import RetryPolicy
from pacore_agents.engines import EngineOptions

from ._datasets import DatasetSpec

BaselineKind = Literal["single", "self-consistency"]


class ArmSpec(BaseModel):
    """One arm of the study. Knobs left unset take the study's (or the library's) defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@+-]+$")
    baseline: BaselineKind | None = None
    topology: str | None = Field(default=None, description="built-in name or path to a .toml spec")
    widths: list[int] | None = Field(default=None, description="all-to-all widths; the sink is appended")
    params: dict[str, Any] = Field(default_factory=dict, description="topology parameter overrides")
    roles: dict[str, RoleSpec] = Field(default_factory=dict, description="extra or replaced roles")
    compaction: CompactionKind | None = Field(default=None, description="for every role of the arm")
    order: OrderPolicy | None = None
    merge_identical: bool | None = None
    max_message_tokens: int | None = Field(default=None, gt=0)
    on_failure: FailurePolicy | None = None
    sampling: SamplingParams | None = Field(default=None, description="overrides of the study's sampling")
    match: list[str] | None = Field(default=None, description="self-consistency: arms whose TTC to match")
    n: list[int] | None = Field(default=None, description="self-consistency: fixed vote sizes instead")

    @model_validator(mode="after")
    def _check_kind(self) -> ArmSpec:
        graph_knobs = [k for k in ("topology", "widths") if getattr(self, k) is not None]
        if self.baseline is None:
            if len(graph_knobs) != 1:
                raise ValueError(f"arm {self.name!r}: give exactly one of topology or widths (or a baseline)")
            if self.match is not None or self.n is not None:
                raise ValueError(f"arm {self.name!r}: match and n are for baseline = 'self-consistency'")
        else:
            extra = graph_knobs + [k for k in ("roles", "params") if getattr(self, k)]
            if extra:
                raise ValueError(f"arm {self.name!r}: a {self.baseline} baseline takes no {extra[0]}")
            if self.baseline == "single" and (self.match is not None or self.n is not None):
                raise ValueError(f"arm {self.name!r}: match and n are for baseline = 'self-consistency'")
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
        """Roles to pass to ``run``: the arm's roles over the topology's, with ``compaction``."""
        roles: dict[str, Role] = {**builtin_roles(), **topology.roles}
        for name, r in self.roles.items():
            roles[name] = Role(name, template=r.template, system=r.system, compaction=r.compaction,
                               sampling=r.sampling, description=r.description)
        if self.compaction is not None:
            roles = {n: Role(r.name, template=r.template, system=r.system, compaction=self.compaction,
                             sampling=r.sampling, description=r.description) for n, r in roles.items()}
        return roles


class GradingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=5.0, gt=0, description="seconds per math-verify check")
    workers: int = Field(default=1, ge=1, description="grading processes")


# Fields that may change between runs into the same out dir: they do not change results.
_VOLATILE = {"concurrency": True, "max_in_flight": True, "retry": True, "grading": {"workers"},
             "engine": {"base_urls", "api_key", "request_timeout"}}


class StudySpec(BaseModel):
    """A study: every arm runs every problem ``samples`` times."""

    model_config = ConfigDict(extra="forbid")

    name: str = "study"
    dataset: DatasetSpec
    samples: int = Field(default=1, ge=1)
    seed: int = 0
    seeded: bool = Field(default=True, description="send per-request seeds derived from seed (set "
                         "false for engines that cannot seed, e.g. vLLM 0.32 on CPU with chunked prefill)")
    engine: EngineOptions = EngineOptions()
    sampling: SamplingParams = PACORE_SAMPLING
    concurrency: int = Field(default=4, ge=1, description="problems in flight")
    max_in_flight: int = Field(default=64, ge=1, description="engine requests in flight (all arms)")
    retry: RetryPolicy = RetryPolicy()
    trajectory_pool: bool = Field(default=False, description="share round-1 trajectories across arms")
    grading: GradingSpec = GradingSpec()
    arms: list[ArmSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_arms(self) -> StudySpec:
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique: {dup[0]!r} is used twice")
        runs = {a.name for a in self.arms if a.baseline is None}
        for arm in self.arms:
            if arm.baseline == "self-consistency" and arm.n is None and not runs:
                raise ValueError(f"arm {arm.name!r}: self-consistency matches the budget of topology "
                                 "arms, and the study has none: add one, or give n = [vote sizes]")
        for arm in self.arms:
            for target in arm.match or []:
                if target not in runs:
                    raise ValueError(f"arm {arm.name!r}: match names {target!r}, which is not a "
                                     f"topology arm of this study ({', '.join(sorted(runs)) or 'none'})")
        return self

    def run_config(self, arm: ArmSpec, sample: int) -> RunConfig:
        """The ``RunConfig`` of one sample of a topology arm (cap and retries are the study's)."""
        kw: dict[str, Any] = {
            "sampling": self.sampling.merged(arm.sampling),
            "seed": derive_seed(self.seed, "sample", sample) if self.seeded else None,
            "on_failure": arm.on_failure or "continue",
            "max_in_flight": None,
            "retry": None,
        }
        for knob in ("order", "merge_identical", "max_message_tokens"):
            if getattr(arm, knob) is not None:
                kw[knob] = getattr(arm, knob)
        return RunConfig(**kw)

    def fingerprint(self) -> str:
        """Canonical JSON of everything that changes results (see ``_VOLATILE``)."""
        data = self.model_dump(mode="json", exclude=_VOLATILE)  # type: ignore[arg-type]
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _format_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        else:
            parts.append(f"{where}: {err['msg']}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"study spec {source}: " + "; ".join(parts) + more


def parse_study(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> StudySpec:
    """Validate a study spec; a relative ``dataset.path`` is resolved against ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study spec {source}: not valid TOML: {exc}") from exc
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from exc
    if base_dir is not None and spec.dataset.path is not None and not spec.dataset.path.is_absolute():
        spec.dataset.path = (base_dir / spec.dataset.path).resolve()
    for arm in spec.arms:  # topology errors surface now, before any engine starts
        if arm.topology is not None and arm.topology.endswith(".toml") and base_dir is not None \
                and not Path(arm.topology).is_absolute():
            arm.topology = str((base_dir / arm.topology).resolve())
        if arm.baseline is None:
            arm.build_roles(arm.build_topology())
    return spec


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study spec file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study spec {p} does not exist")
    return parse_study(p.read_text(encoding="utf-8"), source=str(p), base_dir=p.parent.resolve())
