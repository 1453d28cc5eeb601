"""``pacore study search`` and ``pacore study search-report`` (mounted on the study sub-app).

``search`` runs, resumes or joins (several workers on one ``--out``) the search of a search
file, runs its Pareto set on the held-out split and prints the report; ``search-report``
prints it again and rewrites ``OUT/report``. Bad input exits 2 with one line; failed trials
exit 1 (rerun the same command to retry them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from ._engine_flags import EngineFlags, with_engine_flags
from ._output import console as _console
from ._output import errors, fail, note


def _need_optuna() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        fail("pacore study search needs Optuna: pip install 'pacore-agents[search]'")


@with_engine_flags()
def search_command(
    spec_path: Annotated[Path, typer.Argument(metavar="SEARCH.toml", help="a study file with a [search] table")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the search's folder (created; resumable; "
                                             "several workers may share it)")] = None,
    heldout: Annotated[bool, typer.Option("--heldout/--no-heldout", help="run the Pareto set on the "
                                          "held-out split at the end")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="print the report at the end")] = True,
    check: Annotated[bool, typer.Option("--check", help="validate the search file and print its space; "
                                        "start no engine, write nothing")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every run")] = False,
    *,
    flags: EngineFlags,
) -> None:
    """Search arms (topology, widths, rounds, role temperatures, compaction, ...) for the
    accuracy / cost Pareto set on a search split, then confirm it on a held-out split."""
    from pacore_agents._logging import configure_logging
    from pacore_agents.studies._engines import COST_KEYS
    from pacore_agents.studies._search_space import load_search

    configure_logging(verbose=verbose)
    console = _console()
    with errors(interrupted=f"interrupted; run the same command again to resume (finished trials are "
                            f"kept in {out})"):
        spec = load_search(spec_path)
        if flags.given():
            study = spec.study([spec.settings.arm_table(spec.settings.defaults())])
            table = spec.base.get("engine") if isinstance(spec.base.get("engine"), dict) else {}
            costs = {k: v for k, v in (table or {}).items() if k in COST_KEYS}
            engine = flags.options(study.engine).model_dump(exclude_none=True)
            spec.base = {**spec.base, "engine": {**engine, **costs},
                         "retry": flags.retry(study.retry).model_dump(exclude_none=True)}
        s = spec.settings
        size = s.size()
        if check:
            console.print(f"search space: {len(s.dimension)} dimensions, "
                          f"{'infinite (a range)' if size is None else f'{size} points'}; {s.trials} trials; "
                          f"{len(s.builtin_points())} tried first; splits {s.search_problems} search + "
                          f"{s.heldout_problems} held-out; sampler {s.sampler} (seed {s.seed})", markup=False)
            return
        if out is None:
            fail("give --out DIR: the folder the search goes to (or --check to validate the file)")
        _need_optuna()
        from pacore_agents.studies._search import run_search

        def on_trial(line: str) -> None:
            console.print(line, markup=False, highlight=False)

        summary = anyio.run(lambda: run_search(spec, out, heldout=heldout, on_trial=on_trial))
    console.print(f"{summary.evaluated} configurations evaluated ({summary.ran} run now, {summary.cached} "
                  f"proposals served from the cache, {summary.adopted} trials of dead workers finished); "
                  f"stopped: {summary.stopped}; {summary.elapsed:.1f}s", markup=False)
    if report:
        from pacore_agents.studies._search_report import build_search_report

        with errors():
            build_search_report(out, console=console)
    for line in summary.invalid[:10]:
        note("invalid", line)
    if summary.failed:
        for line in summary.failed[:10]:
            note("failed", line, style="red")
        fail(f"{len(summary.failed)} trials failed (the held-out run waits for them); run the same command "
             "again to retry their samples", 1)


def search_report_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="a search's folder")],
    csv_files: Annotated[bool, typer.Option("--csv/--no-csv", help="write CSV files")] = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write the Pareto plot")] = True,
) -> None:
    """Print the report of the search in OUT; write its CSVs and the Pareto plot into OUT/report."""
    from pacore_agents._logging import configure_logging

    configure_logging()
    _need_optuna()
    from pacore_agents.studies._search_report import build_search_report

    with errors():
        build_search_report(out, csv_files=csv_files, plots=plots, console=_console())
