"""Role overrides and the one function that merges roles, wherever roles merge.

A ``RoleOverride`` changes some fields of a role and keeps the rest: a topology spec's
``[roles.NAME]``, a study arm's ``roles``, ``run(roles={"sink": RoleOverride(...)})``. Every one
of them goes through ``merge_roles`` onto the role of that name (the built-in, or the topology's),
so ``[roles.sink]`` with only ``sampling = {...}`` keeps the sink's synthesis template and
compaction everywhere. A ``Role`` object is a whole definition and replaces the role of its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from ._engine import SamplingParams
from ._errors import ConfigError
from ._roles import CompactionKind, Role, pacore_synthesis_template

#: Templates an override can name instead of writing Jinja2: the PaCoRe synthesis template, or
#: the problem's messages unchanged (no template).
NAMED_TEMPLATES = ("pacore", "problem")


def named_template(name: str) -> str | None:
    """The template source a ``NAMED_TEMPLATES`` name stands for (None: the bare problem)."""
    return pacore_synthesis_template() if name == "pacore" else None


class RoleOverride(BaseModel):
    """Some fields of a role. Every field left out keeps the value of the role it overrides (the
    built-in or topology role of that name; for a new name: no template, ``pacore``
    compaction, the run's sampling). ``sampling`` merges field by field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str | None = Field(default=None, description="Jinja2 template replacing the last user "
                                 "message, or a name: 'pacore' (the synthesis template), 'problem' "
                                 "(the problem unchanged)")
    system: str | None = Field(default=None, description="system prompt prepended")
    compaction: CompactionKind | None = Field(default=None, description="the message passed on: pacore "
                                              "(after </think>), full, or boxed (the final answer only)")
    sampling: SamplingParams | None = Field(default=None, description="merged onto the role's sampling")
    description: str | None = Field(default=None, description="free text")
    engine: str | None = Field(default=None, description="the named engine this role's nodes run on "
                               "(default: the run's default engine)")

    def apply(self, name: str, base: Role | None) -> Role:
        """The role ``base`` (or a plain new role) with the fields this override sets."""
        base = base or Role(name)
        template = base.template
        if self.template is not None:
            template = named_template(self.template) if self.template in NAMED_TEMPLATES else self.template
        sampling = self.sampling if base.sampling is None else base.sampling.merged(self.sampling)
        return Role(name, template=template,
                    system=self.system if self.system is not None else base.system,
                    compaction=self.compaction or base.compaction, sampling=sampling,
                    description=self.description if self.description is not None else base.description,
                    engine=self.engine if self.engine is not None else base.engine)


RoleLike = Role | RoleOverride
RolesArg = Mapping[str, RoleLike] | Sequence[Role] | None


def merge_roles(base: Mapping[str, Role], changes: RolesArg, *,
                compaction: CompactionKind | None = None) -> dict[str, Role]:
    """``base`` with ``changes`` applied in order: a ``RoleOverride`` merges onto the role of
    its name (``RoleOverride.apply``), a ``Role`` replaces it; then ``compaction`` (if given) on
    every role. Pure: ``base`` is not modified. Anything else is a ``ConfigError``."""
    out = dict(base)
    items: list[tuple[str, object]]
    if changes is None:
        items = []
    elif isinstance(changes, Mapping):
        items = list(changes.items())
    else:
        items = [(getattr(role, "name", "?"), role) for role in changes]
    for name, change in items:
        if isinstance(change, RoleOverride):
            out[name] = change.apply(name, out.get(name))
        elif isinstance(change, Role):
            if change.name != name:
                raise ConfigError(f"role {change.name!r} is given under the name {name!r}: use one name")
            out[name] = change
        else:
            raise ConfigError(f"role {name!r}: {change!r} is neither a pacore_agents.Role (a whole role) "
                              "nor a RoleOverride (some fields of one)")
    if compaction is not None:
        out = {n: replace(r, compaction=compaction) for n, r in out.items()}
    return out
