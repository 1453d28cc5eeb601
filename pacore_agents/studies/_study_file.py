"""Reading a study file: TOML to a validated ``StudySpec``, errors as one line that says what to
fix (``study spec SOURCE: ...``, at most five problems). Relative paths in the file (the dataset,
topology specs) resolve against the file's folder; every topology arm's graph, role engines and
policies are checked before any engine starts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from pacore_agents._errors import ConfigError
from pacore_agents._topology import Topology

from ._engines import check_role_engines
from ._spec import ArmSpec, StudySpec, format_error


def parse_study(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> StudySpec:
    """Validate a study spec; a relative ``dataset.path`` is resolved against ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study spec {source}: not valid TOML: {exc}") from exc
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, source)) from exc
    if base_dir is not None and spec.dataset.path is not None and not spec.dataset.path.is_absolute():
        spec.dataset.path = (base_dir / spec.dataset.path).resolve()
    for arm in spec.arms:  # topology errors surface now, before any engine starts
        if arm.topology is not None and arm.topology.endswith(".toml") and base_dir is not None \
                and not Path(arm.topology).is_absolute():
            arm.topology = str((base_dir / arm.topology).resolve())
        if arm.baseline is None:
            topology = arm.build_topology()
            check_role_engines(arm.name, arm.build_roles(topology), spec.engines)
            _check_policies(arm, topology, spec, source)
    return spec


def _check_policies(arm: ArmSpec, topology: Topology, spec: StudySpec, source: str) -> None:
    """An arm's policies must apply to its topology; its twin must be another topology arm."""
    try:
        arm.build_policies(topology)
    except ConfigError as exc:
        raise ConfigError(f"study spec {source}: arm {arm.name!r}: {exc}") from exc
    if arm.twin is not None:
        arms = {a.name for a in spec.arms if a.baseline is None and a.name != arm.name}
        if arm.twin not in arms:
            raise ConfigError(f"study spec {source}: arm {arm.name!r}: twin names {arm.twin!r}, which is not "
                              f"another topology arm of this study ({', '.join(sorted(arms)) or 'none'})")


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study spec file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study spec {p} does not exist")
    return parse_study(p.read_text(encoding="utf-8"), source=str(p), base_dir=p.parent.resolve())
