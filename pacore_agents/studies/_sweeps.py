"""Sweeps: a grid of topology arms written once (``[[sweep]]`` in a study file).

Contract: a ``SweepSpec`` lists axes (each a list of values); its arms are the cartesian
product of the axes, in the order of ``AXES`` (``params`` keys and ``role_temperature`` roles
in the order written). Each point becomes an ``ArmSpec``: the fixed knobs of ``arm``, then the
point's values (``temperature``/``max_tokens`` into the arm's ``sampling``,
``role_temperature`` into that role's sampling, ``params`` into the topology params). Its name
is ``name`` with every ``{axis}`` replaced by the point's value (lists joined by ``x``: widths
``[32, 4]`` -> ``32x4``; numbers in their shortest form); names must be valid, unique arm names
(an axis with several values missing from ``name`` is an error). Placeholders: ``{topology}``,
``{widths}``, ``{<param>}``, ``{temperature}``, ``{max_tokens}``, ``{<role>_temperature}``,
``{compaction}``, ``{order}``, ``{max_message_tokens}``. Every expanded arm records its sweep
(``ArmSpec.sweep`` = the sweep's ``label``) and point (``ArmSpec.sweep_point``); a
self-consistency arm's ``match`` may name a sweep's label to match each of its arms.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pacore_agents._references import OrderPolicy
from pacore_agents._roles import CompactionKind

#: Axes that change the graph (and so the budget): a line of the scaling plot runs along them;
#: the other axes split lines.
SCALE_AXES = ("topology", "widths")
AXES = ("topology", "widths", "params", "temperature", "max_tokens", "role_temperature", "compaction",
        "order", "max_message_tokens")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]+$")


class SweepSpec(BaseModel):
    """``[[sweep]]``: topology arms over a grid of knobs (see the module contract)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="arm name pattern with {axis} placeholders, "
                      "e.g. 'w{widths}-t{sink_temperature}'")
    label: str | None = Field(default=None, description="the sweep's name (plot legend, match); "
                              "default: the name pattern")
    arm: dict[str, Any] = Field(default_factory=dict, description="fixed arm knobs (any [[arms]] key "
                                "but name), e.g. { topology = 'ring', compaction = 'boxed' }")
    topology: list[str] | None = Field(default=None, min_length=1, description="axis: topology names/paths")
    widths: list[list[int]] | None = Field(default=None, min_length=1, description="axis: all-to-all widths")
    params: dict[str, list[Any]] = Field(default_factory=dict, description="axes: topology parameters, "
                                         "e.g. { width = [4, 8], rounds = [2, 3] }")
    temperature: list[float] | None = Field(default=None, min_length=1, description="axis: the arm's "
                                            "sampling temperature (every role)")
    max_tokens: list[int] | None = Field(default=None, min_length=1, description="axis: max tokens per trajectory")
    role_temperature: dict[str, list[float]] = Field(default_factory=dict, description="axes: one role's "
                                                     "temperature, e.g. { sink = [0.3, 1.0] }")
    compaction: list[CompactionKind] | None = Field(default=None, min_length=1, description="axis")
    order: list[OrderPolicy] | None = Field(default=None, min_length=1, description="axis")
    max_message_tokens: list[int] | None = Field(default=None, min_length=1, description="axis")

    @property
    def id(self) -> str:
        return self.label or self.name

    def axes(self) -> list[tuple[str, str, list[Any]]]:
        """(placeholder, field, values) per axis, in expansion order."""
        out: list[tuple[str, str, list[Any]]] = []
        for field in AXES:
            if field == "params":
                out += [(key, "params", values) for key, values in self.params.items()]
            elif field == "role_temperature":
                out += [(f"{role}_temperature", "role_temperature", values)
                        for role, values in self.role_temperature.items()]
            elif getattr(self, field) is not None:
                out.append((field, field, list(getattr(self, field))))
        return out


def format_value(value: Any) -> str:
    """A value as it appears in an arm name: lists joined by 'x', numbers shortest."""
    if isinstance(value, list | tuple):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _set(arm: dict[str, Any], placeholder: str, field: str, value: Any) -> None:
    if field == "params":
        arm.setdefault("params", {})[placeholder] = value
    elif field == "temperature" or field == "max_tokens":
        arm.setdefault("sampling", {})[field] = value
    elif field == "role_temperature":
        role = placeholder.removesuffix("_temperature")
        arm.setdefault("roles", {}).setdefault(role, {}).setdefault("sampling", {})["temperature"] = value
    else:
        arm[field] = value


def _fill(pattern: str, values: dict[str, Any]) -> str:
    return re.sub(r"\{([^{}]*)\}", lambda m: format_value(values[m.group(1)]), pattern)


def expand_sweep(sweep: SweepSpec) -> list[dict[str, Any]]:
    """The arm tables (plain dicts, for ``ArmSpec``) of one sweep; ``ValueError`` says what to fix."""
    where = f"sweep {sweep.id!r}"
    if "name" in sweep.arm:
        raise ValueError(f"{where}: arm takes the fixed knobs; the names come from the sweep's name pattern")
    axes = sweep.axes()
    if not axes:
        raise ValueError(f"{where}: give at least one axis (topology, widths, params, temperature, ...)")
    holders = [p for p, _, _ in axes]
    dup = sorted({p for p in holders if holders.count(p) > 1})
    if dup:
        raise ValueError(f"{where}: two axes are called {{{dup[0]}}}: rename a topology parameter")
    used = set(re.findall(r"\{([^{}]*)\}", sweep.name))
    unknown = sorted(used - set(holders))
    if unknown:
        raise ValueError(f"{where}: name has {{{unknown[0]}}}, which is not an axis ({', '.join(holders)})")
    missing = [p for p, _, values in axes if len(values) > 1 and p not in used]
    if missing:
        raise ValueError(f"{where}: the axis {missing[0]} has several values: put {{{missing[0]}}} in the name")
    arms: list[dict[str, Any]] = []
    for point in itertools.product(*(values for _, _, values in axes)):
        arm = copy.deepcopy(sweep.arm)
        for (placeholder, field, _), value in zip(axes, point, strict=True):
            _set(arm, placeholder, field, value)
        values = dict(zip(holders, point, strict=True))
        name = _fill(sweep.name, values)
        if not _NAME_RE.match(name):
            raise ValueError(f"{where}: the arm name {name!r} may only use letters, digits and _ . @ + -")
        arm["name"] = name
        arm["sweep"] = sweep.id
        arm["sweep_point"] = values
        arms.append(arm)
    return arms
