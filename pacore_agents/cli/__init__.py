"""The ``pacore`` command line: one typer app, a module per command group.

- ``_run``: ``pacore run``, ``pacore topologies``; ``_study``: ``pacore study ...``;
  ``_search``: ``pacore study search``, ``search-report``; ``_serve``: ``pacore serve``; ``_engine_flags``: the engine flags the three share;
  ``_output``: printing (user text is never markup) and the one error path (bad input exits
  2, library errors 1, Ctrl-C 130, each one line on stderr).
- Importing this package stays light: a grading worker started under ``pacore`` re-imports
  the entry script, so each command imports what it runs when it runs.
"""

from __future__ import annotations

import gc
import sys

import typer

from ._export import export_command
from ._run import run_command, topologies_command
from ._search import search_command, search_report_command
from ._serve import serve_command
from ._study import study_app
from ._view import view_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="PaCoRe: parallel coordinated reasoning where every trajectory is an agent.")
app.command("run")(run_command)
app.command("topologies")(topologies_command)
app.command("serve")(serve_command)
study_app.command("export")(export_command)
study_app.command("search")(search_command)
study_app.command("search-report")(search_report_command)
app.command("view")(view_command)
app.add_typer(study_app, name="study", help="Run and report studies: sweeps over datasets.")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point. Whatever the command, everything it opened is closed when
    ``app`` returns or raises, so the objects left are frozen out of the interpreter's final
    garbage collection, which would walk all of them (~0.2 s after a study on a server:
    openai's and pydantic's types) before the process could end. Not with vLLM in the
    process: its triton bindings (nanobind) report every object the final collection leaves
    as a leak, and an in-process engine's own shutdown takes seconds anyway."""
    try:
        app()
    finally:
        if "vllm" not in sys.modules:
            gc.freeze()
