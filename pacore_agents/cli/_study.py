"""``pacore study run|report|schema``: the studies sub-app (mounted by ``pacore_agents.cli``).

``run`` runs or resumes a study into ``--out`` (rerun the same command after a crash or a
kill: finished samples are kept, the rest run); ``report`` prints the metrics and writes CSV
files and PNG plots into ``<out>/report``. Bad input exits 2; failed samples exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from ._engine_flags import EngineFlags, with_engine_flags
from ._output import console as _console
from ._output import errors, fail, note

if TYPE_CHECKING:
    from rich.console import Console

    from pacore_agents.studies import StudySpec

study_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Run and report studies: arms x problems x samples, resumable.")
@study_app.command("run")
@with_engine_flags()
def run_command(
    spec_path: Annotated[Path, typer.Argument(metavar="STUDY.toml", help="the study spec")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="results folder (created; resumable)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="live progress with ETA")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="print the report at the end")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every run")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the arms, units and token budgets; "
                                          "start no engine, write nothing")] = False,
    *,
    flags: EngineFlags,
) -> None:
    """Run (or resume) the study in STUDY.toml into --out. Engine flags override the study's
    [engine] table (and --retries / --request-timeout its [retry] table)."""
    from pacore_agents._logging import configure_logging
    from pacore_agents.studies import load_study, run_study

    configure_logging(verbose=verbose)
    console = _console()
    with errors(interrupted=f"interrupted; run the same command again to resume (finished samples "
                            f"are kept in {out})"):
        spec = load_study(spec_path)
        if flags.given():
            spec = spec.model_copy(update={"engine": flags.options(spec.engine), "retry": flags.retry(spec.retry)})
        if dry_run:
            _dry_run(spec, console)
            return
        if out is None:
            fail("give --out DIR: the folder the results go to (or --dry-run to see the plan)")
        text = spec_path.read_text(encoding="utf-8")
        summary = anyio.run(lambda: run_study(spec, out, spec_text=text, progress=progress, console=console))
    console.print(f"{summary.ran} samples run now, {summary.already_done} were already stored, "
                  f"{summary.total} in the study; {summary.elapsed:.1f}s", markup=False)
    for arm, sizes in summary.sc_sizes.items():
        console.print(f"self-consistency {arm}: vote sizes {sizes}", markup=False)
    if report:
        from pacore_agents.studies import (
            build_report,  # the report's modules (numpy, plots) load only for it
        )

        with errors():
            build_report(out, console=console)
    if summary.failed:
        for line in summary.failed[:10]:
            note("failed", line, style="red")
        extra = " (self-consistency waits for them)" if summary.skipped_phase2 else ""
        fail(f"{len(summary.failed)} samples failed{extra}; run the same command again to retry them", 1)


def _dry_run(spec: StudySpec, console: Console) -> None:
    from pacore_agents.studies import plan_study, plan_table
    from pacore_agents.studies._report import roles_table

    problems, plans = plan_study(spec)
    console.print(plan_table(spec, problems, plans))
    console.print(roles_table({p.name: p.roles for p in plans if p.roles}))
    units = sum(p.units for p in plans)
    bounds = [p.ttc_bound * p.units for p in plans if p.ttc_bound is not None]
    console.print(f"{units} units in all; at most {sum(bounds):,} completion tokens for the "
                  f"{len(bounds)} arms with a bound; engine: {spec.engine.kind} (not started)", markup=False)


@study_app.command("schema")
def schema_command() -> None:
    """Print the JSON schema of a study file (TOML with this structure)."""
    import json

    from pacore_agents.studies import StudySpec

    typer.echo(json.dumps(StudySpec.model_json_schema(), indent=2, ensure_ascii=False))


@study_app.command("report")
def report_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="a study's results folder")],
    csv_files: Annotated[bool, typer.Option("--csv/--no-csv", help="write CSV files")] = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Print the metrics table of the study in OUT; write CSVs and plots into OUT/report."""
    from pacore_agents._logging import configure_logging
    from pacore_agents.studies import build_report

    configure_logging()
    with errors():
        build_report(out, csv_files=csv_files, plots=plots, console=_console())
