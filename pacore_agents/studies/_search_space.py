"""The search file of ``pacore study search``: a study file whose ``[search]`` table declares a
space of arms instead of ``[[arms]]``.

Contract:
- Everything but ``[search]`` is a study file (dataset, engine(s), costs, sampling, seed,
  trajectory pool, grading); it must not declare ``[[arms]]`` or ``[[sweep]]``: the search
  makes the arms.
- A dimension is a dotted **key path into an arm table** (``topology``, ``widths``,
  ``compaction``, ``params.width``, ``roles.sink.sampling.temperature``, any field ``ArmSpec``
  has or gains) with ``choices`` (any TOML values) or a range (``low``/``high``, optional
  ``step``/``log``; integers when all are integers). ``path = "."`` addresses the arm itself:
  its choices are tables merged into it (``{ widths = [4] }`` or ``{ topology = "ring" }``,
  for knobs that exclude each other). A point is ``[search] arm`` (fixed knobs) with every
  dimension's value set at its path; it is validated as an ``ArmSpec`` inside the study, so
  an unknown key path is an error that names it, and new arm fields are searchable as they
  are added.
- An arm's name is ``s-`` + 10 hex digits of the SHA-256 of its table: the same table is the
  same arm (the result cache), whichever parameters produced it.
- Built-in trials (``builtins = true``): every choice that names a built-in topology
  (``path = "topology"``, or a ``"."`` choice with a built-in ``topology`` and no ``params``),
  the other dimensions at their ``default`` (given, else the first choice, else ``low``),
  then the ``[[search.enqueue]]`` points, are tried first, in that order.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pacore_agents._errors import ConfigError
from pacore_agents._specs import builtin_topologies

from ._engines import check_role_engines
from ._spec import ArmSpec, StudySpec, format_error

PRUNE = "prune"  # the parameter of the pruning move (see ``_prune``)
_RESERVED = {"name", "sweep", "sweep_point"}
_MAX_CHECKED = 2000  # finite spaces up to this size have every point validated when they load
Scalar = str | int | float | bool


class SearchDimension(BaseModel):
    """``[[search.dimension]]``: one key path of the arm and the values it takes."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="dotted key path into the arm table (e.g. "
                      "roles.sink.sampling.temperature); '.' = the arm itself (choices are tables)")
    name: str | None = Field(default=None, description="the parameter's name (default: the path)")
    choices: list[Any] | None = Field(default=None, description="the values (categorical)")
    low: float | None = Field(default=None, description="a range's lower end")
    high: float | None = Field(default=None, description="a range's upper end")
    step: float | None = Field(default=None, gt=0, description="a range's step")
    log: bool = Field(default=False, description="sample the range on a log scale")
    default: Any = Field(default=None, description="the value built-in trials use (default: the first "
                         "choice, or low)")

    @model_validator(mode="after")
    def _check(self) -> SearchDimension:
        where = f"search dimension {self.key!r}"
        if self.path != "." and (self.path.startswith(".") or self.path.endswith(".") or ".." in self.path):
            raise ValueError(f"{where}: a key path is names joined by dots, e.g. roles.sink.sampling.temperature")
        if self.path.split(".")[0] in _RESERVED:
            raise ValueError(f"{where}: {self.path.split('.')[0]!r} is set by the search, not searched")
        if self.key == PRUNE:
            raise ValueError(f"{where}: the name {PRUNE!r} is the pruning move's ([search.prune])")
        ranged = self.low is not None or self.high is not None
        if (self.choices is not None) == ranged:
            raise ValueError(f"{where}: give choices = [...] or low and high")
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"{where}: choices is empty: give at least one value")
            if self.path == "." and not all(isinstance(c, dict) for c in self.choices):
                raise ValueError(f"{where}: path '.' takes tables as choices, e.g. {{ widths = [4] }}")
            if self.path == "." and self.name is None:
                raise ValueError(f"{where}: path '.' needs a name")
            labels = [label_of(c) for c in self.choices]
            if len(set(labels)) != len(labels):
                raise ValueError(f"{where}: a choice is listed twice")
            if self.default is not None and label_of(self.default) not in labels:
                raise ValueError(f"{where}: default {self.default!r} is not one of the choices")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{where}: a range needs low < high")
            if self.log and (self.step is not None or self.low <= 0):
                raise ValueError(f"{where}: a log range needs low > 0 and no step")
            if self.default is not None and not self.low <= float(self.default) <= self.high:
                raise ValueError(f"{where}: default {self.default!r} is outside [{self.low:g}, {self.high:g}]")
        return self

    @property
    def key(self) -> str:
        return self.name or self.path

    @property
    def integer(self) -> bool:
        return all(v is None or float(v).is_integer() for v in (self.low, self.high, self.step)) \
            and self.step is not None

    def default_value(self) -> Any:
        if self.default is not None:
            return self.choice(label_of(self.default)) if self.choices is not None else self.default
        return self.choices[0] if self.choices is not None else self._num(self.low)

    def labels(self) -> list[Scalar]:
        """Optuna's categorical choices: scalars as they are, other values as compact JSON."""
        assert self.choices is not None
        return [label_of(c) for c in self.choices]

    def choice(self, label: Any) -> Any:
        """The value of a categorical label (``ConfigError`` if it is not a choice)."""
        assert self.choices is not None
        for value in self.choices:
            if label_of(value) == label_of(label):
                return copy.deepcopy(value)
        raise ConfigError(f"search dimension {self.key!r}: {label!r} is not one of its choices")

    def _num(self, value: float | None) -> Any:
        assert value is not None
        return int(value) if self.integer else float(value)

    def corners(self) -> list[Any]:
        """Values that check the dimension: every choice, or a range's ends."""
        return list(self.choices) if self.choices is not None else [self._num(self.low), self._num(self.high)]


class PruneSpec(BaseModel):
    """``[search.prune]``: the edge-pruning move (see ``_prune``)."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] = Field(min_length=1, description="usage thresholds tried (0 = no pruning is "
                                    "always one): an edge whose measured usage is below is removed")
    min_pairs: int = Field(default=5, ge=1, description="edges seen on fewer graded samples are kept")

    def choices(self) -> list[float]:
        return sorted({0.0, *self.thresholds})


class SearchSettings(BaseModel):
    """The ``[search]`` table."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, description="distinct configurations to run on the search split (repeats "
                        "served from the cache do not count)")
    search_problems: int = Field(ge=1, description="problems in the search split")
    heldout_problems: int = Field(ge=1, description="problems in the held-out split (disjoint)")
    split_seed: int = Field(default=0, description="shuffles the dataset before it is split")
    sampler: Literal["tpe", "nsga2", "random"] = Field(default="tpe", description="Optuna's sampler")
    seed: int = Field(default=0, description="the sampler's seed")
    cost: Literal["ttc", "declared"] = Field(default="ttc", description="the second objective: mean "
                                             "effective TTC, or mean declared cost ([engine] costs)")
    arm: dict[str, Any] = Field(default_factory=dict, description="fixed arm knobs under every point")
    dimension: list[SearchDimension] = Field(default_factory=list, description="[[search.dimension]]")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="points to try first "
                                          "(parameter name -> value; the rest at their defaults)")
    builtins: bool = Field(default=True, description="try the built-in topologies of the space first")
    patience: int = Field(default=50, ge=1, description="stop after this many proposals in a row that "
                          "were all already evaluated")
    prune: PruneSpec | None = Field(default=None, description="[search.prune]: the edge-pruning move")

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        if not self.dimension:
            raise ValueError("the search space is empty: add [[search.dimension]] tables")
        keys = [d.key for d in self.dimension]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"two search dimensions are called {dup[0]!r}: give one a name")
        if "name" in self.arm:
            raise ValueError("[search] arm: the search names its arms; remove name")
        return self

    def size(self) -> int | None:
        """The number of points (None: a range makes it infinite)."""
        if any(d.choices is None for d in self.dimension):
            return None
        return math.prod(len(d.choices or []) for d in self.dimension) * len(self._prune_choices())

    def _prune_choices(self) -> list[float]:
        return self.prune.choices() if self.prune is not None else [0.0]

    def defaults(self) -> dict[str, Any]:
        return {d.key: d.default_value() for d in self.dimension}

    def builtin_points(self) -> list[dict[str, Any]]:
        """The built-in trials, then the enqueued points (see the module contract)."""
        names = set(builtin_topologies())
        points: list[dict[str, Any]] = []
        if self.builtins:
            for dim in self.dimension:
                for value in dim.choices or []:
                    builtin = (dim.path == "topology" and value in names) or (
                        dim.path == "." and value.get("topology") in names and not value.get("params"))
                    if builtin:
                        points.append({**self.defaults(), dim.key: value})
        dims = {d.key: d for d in self.dimension}
        for i, given in enumerate(self.enqueue):
            unknown = sorted(set(given) - set(dims))
            if unknown:
                raise ConfigError(f"[[search.enqueue]] {i + 1}: {unknown[0]!r} is not a search dimension "
                                  f"({', '.join(dims)})")
            points.append({**self.defaults(), **{k: dims[k].choice(v) if dims[k].choices is not None else v
                                                 for k, v in given.items()}})
        return points

    def points(self) -> Iterator[dict[str, Any]]:
        """Every point of a finite space (dimension order)."""
        for values in itertools.product(*(d.choices or [] for d in self.dimension)):
            yield dict(zip((d.key for d in self.dimension), values, strict=True))

    def arm_table(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The named arm table of a point (dimension key -> value)."""
        arm = copy.deepcopy(self.arm)
        for dim in self.dimension:
            value = copy.deepcopy(values[dim.key])
            if dim.path == ".":
                _merge(arm, value, dim.key)
            else:
                _set_path(arm, dim.path.split("."), value, dim.key)
        arm["name"] = arm_name(arm)
        return arm


def label_of(value: Any) -> Scalar:
    """A choice as Optuna stores it: scalars unchanged, lists and tables as sorted compact JSON."""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arm_name(table: Mapping[str, Any]) -> str:
    body = {k: v for k, v in table.items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return "s-" + digest.hexdigest()[:10]


def _merge(arm: dict[str, Any], table: Mapping[str, Any], key: str) -> None:
    for k, v in table.items():
        if isinstance(v, dict) and isinstance(arm.get(k), dict):
            _merge(arm[k], v, key)
        else:
            arm[k] = v


def _set_path(arm: dict[str, Any], parts: Sequence[str], value: Any, key: str) -> None:
    node = arm
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"search dimension {key!r}: the key path crosses {'.'.join(parts[:i + 1])!r}, "
                              "which is not a table")
        node = child
    node[parts[-1]] = value


@dataclass
class SearchSpec:
    """A loaded search file: its ``[search]`` table, the rest of the file (a study without
    arms, as data) and where it came from."""

    settings: SearchSettings
    base: dict[str, Any]
    text: str
    base_dir: Path | None

    def study(self, arms: Sequence[Mapping[str, Any]]) -> StudySpec:
        """The study of these arm tables on the file's study (``ConfigError`` for bad input;
        relative paths resolved as ``parse_study`` does)."""
        try:
            spec = StudySpec.model_validate({**copy.deepcopy(self.base), "arms": [dict(a) for a in arms]})
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from exc
        base = self.base_dir
        if base is not None and spec.dataset.path is not None and not spec.dataset.path.is_absolute():
            spec.dataset.path = (base / spec.dataset.path).resolve()
        for arm in spec.arms:
            if arm.topology is not None and arm.topology.endswith(".toml") and base is not None \
                    and not Path(arm.topology).is_absolute():
                arm.topology = str((base / arm.topology).resolve())
            if arm.baseline is None:
                check_role_engines(arm.name, arm.build_roles(arm.build_topology()), spec.engines)
        return spec

    def arm(self, values: Mapping[str, Any]) -> ArmSpec:
        """The validated arm of a point."""
        return self.study([self.settings.arm_table(values)]).arms[0]

    def check(self) -> None:
        """Validate the points a bad space would break: every point of a finite space up to
        ``_MAX_CHECKED`` points, else the defaults and each dimension's corners."""
        settings = self.settings
        size = settings.size()
        if size is not None and size <= _MAX_CHECKED:
            candidates: list[dict[str, Any]] = list(settings.points())
        else:
            defaults = settings.defaults()
            candidates = [defaults] + [{**defaults, d.key: v} for d in settings.dimension for v in d.corners()]
        candidates += settings.builtin_points()
        for values in candidates:
            try:
                self.arm(values)
            except ConfigError as exc:
                shown = {k: label_of(v) for k, v in values.items()}
                raise ConfigError(f"search point {json.dumps(shown, ensure_ascii=False)}: {exc}") from exc


def _explain(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden" and loc[:1] == ["arms"] and len(loc) > 2:
        return f"unknown key path {'.'.join(loc[2:])!r} of an arm: check the search dimension's path"
    return format_error(exc, "").replace("study spec : ", "").replace("arms.0: ", "").replace("arms.0.", "arm: ")


def parse_search(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> SearchSpec:
    """Validate a search file (see the module contract); ``ConfigError`` says what to fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"search file {source}: not valid TOML: {exc}") from exc
    table = data.pop("search", None)
    if not isinstance(table, dict):
        raise ConfigError(f"search file {source}: no [search] table: declare the space there "
                          "(see docs/search.md)")
    for key in ("arms", "sweep"):
        if key in data:
            raise ConfigError(f"search file {source}: remove [[{key}]]: the search makes the arms")
    try:
        settings = SearchSettings.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = f"unknown key {where!r}" if err["type"] == "extra_forbidden" else \
            (f"{where}: " if where else "") + err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"search file {source}: [search] {what}") from exc
    spec = SearchSpec(settings, data, text, base_dir)
    try:
        spec.check()
    except ConfigError as exc:
        raise ConfigError(f"search file {source}: {exc}") from exc
    return spec


def load_search(path: str | Path) -> SearchSpec:
    """Read and validate a search file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search file {p} does not exist")
    return parse_search(p.read_text(encoding="utf-8"), source=str(p), base_dir=p.parent.resolve())
