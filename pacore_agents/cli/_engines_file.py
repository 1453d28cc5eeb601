"""``pacore run --engines FILE``: more engines for one run, bound to roles (several models in
one graph). The file is TOML::

    [engines.big]                 # one engine kind's options, as a study's [engines.NAME]
    kind = "openai"
    base_urls = ["http://127.0.0.1:8001/v1"]

    [roles]                       # role = engine name; roles left out use the --engine flags'
    sink = "big"

The engine the ``--engine`` flags build is ``default``. Bad input is one ``ConfigError`` line
naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacore_agents._role_merge import RoleOverride
    from pacore_agents.engines import EngineOptions


def load_engines_file(path: Path) -> tuple[dict[str, EngineOptions], dict[str, RoleOverride]]:
    """The named engines' options and the role bindings (as ``RoleOverride(engine=...)``)."""
    from pacore_agents._binding import DEFAULT_ENGINE
    from pacore_agents._errors import ConfigError
    from pacore_agents._role_merge import RoleOverride
    from pacore_agents.engines import parse_engine_options

    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the engines file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"engines file {path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"engines", "roles"})
    if unknown:
        raise ConfigError(f"engines file {path}: unknown key {unknown[0]!r}: it holds [engines.NAME] and [roles]")
    tables, roles = data.get("engines") or {}, data.get("roles") or {}
    if not isinstance(tables, dict) or not isinstance(roles, dict) or not tables:
        raise ConfigError(f"engines file {path}: give [engines.NAME] tables and a [roles] table (role = \"NAME\")")
    engines: dict[str, EngineOptions] = {}
    for name, table in tables.items():
        if name == DEFAULT_ENGINE:
            raise ConfigError(f"engines file {path}: [engines.{DEFAULT_ENGINE}] is the --engine flags' engine")
        try:
            engines[name] = parse_engine_options(table)
        except ConfigError as exc:
            raise ConfigError(f"engines file {path}, [engines.{name}]: {exc}") from exc
    bindings: dict[str, RoleOverride] = {}
    for role, name in roles.items():
        if not isinstance(name, str) or (name not in engines and name != DEFAULT_ENGINE):
            raise ConfigError(f"engines file {path}: role {role!r} = {name!r} names no engine of the file "
                              f"(engines: {', '.join([DEFAULT_ENGINE, *engines])})")
        bindings[role] = RoleOverride(engine=name)
    return engines, bindings
