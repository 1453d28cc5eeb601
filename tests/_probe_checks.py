"""Check functions for grading-worker tests; this module imports only the standard library, so
a worker that unpickles one imports nothing else of ours through it."""

from __future__ import annotations

import sys

#: modules a grading worker has no use for: the runtime, engines, logging, templates, HTTP
HEAVY = ("pacore_agents._run", "pacore_agents._executor", "pacore_agents.studies._runner",
         "networkx", "structlog", "jinja2", "openai", "httpx", "rich.progress")


def heavy_modules_check(gold: str, prediction: str) -> bool:
    """True ("correct") when none of ``HEAVY`` is loaded in the worker; else it raises, naming
    them (the grade's status is then "error" and its detail names them)."""
    loaded = [name for name in HEAVY if name in sys.modules]
    if loaded:
        raise RuntimeError(f"loaded: {', '.join(loaded)}")
    return True
