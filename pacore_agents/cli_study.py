"""``pacore study run|report``: the studies sub-app (mounted by ``pacore_agents.cli``).

``run`` runs or resumes a study into ``--out`` (rerun the same command after a crash or a
kill: finished samples are kept, the rest run); ``report`` prints the metrics and writes CSV
files and PNG plots into ``<out>/report``. Bad input exits 2; failed samples exit 1.
Also runnable as ``python -m pacore_agents.cli_study``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import anyio
import typer
from rich.console import Console

from ._cli_engine import EngineFlags, exit_code_for, with_engine_flags
from ._errors import ConfigError, PacoreError

if TYPE_CHECKING:
    from .studies import StudySpec

study_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Run and report studies: arms x problems x samples, resumable.")
_err = Console(stderr=True)


def _console() -> Console:
    """Wide tables when the output is a file or a pipe (rich would use 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=140)


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
    from ._logging import configure_logging
    from .studies import load_study, run_study

    configure_logging(verbose=verbose)
    console = _console()
    try:
        spec = load_study(spec_path)
        if flags.given():
            spec = spec.model_copy(update={"engine": flags.options(spec.engine), "retry": flags.retry(spec.retry)})
        if dry_run:
            _dry_run(spec, console)
            return
        if out is None:
            _fail("give --out DIR: the folder the results go to (or --dry-run to see the plan)")
        text = spec_path.read_text(encoding="utf-8")
        summary = anyio.run(lambda: run_study(spec, out, spec_text=text, progress=progress, console=console))
    except (PacoreError, BaseExceptionGroup) as exc:
        mapped = exit_code_for(exc)
        if mapped is None:
            raise
        leaf, code = mapped
        _fail(str(leaf), code)
    except KeyboardInterrupt:
        _fail(f"interrupted; run the same command again to resume (finished samples are kept in {out})", 130)
    console.print(f"{summary.ran} samples run now, {summary.already_done} were already stored, "
                  f"{summary.total} in the study; {summary.elapsed:.1f}s")
    for arm, sizes in summary.sc_sizes.items():
        console.print(f"self-consistency {arm}: vote sizes {sizes}")
    if report:
        from .studies import build_report  # the report's modules (numpy, plots) load only for it

        build_report(out, console=console)
    if summary.failed:
        for line in summary.failed[:10]:
            _err.print(f"failed: {line}", highlight=False, soft_wrap=True)
        extra = " (self-consistency waits for them)" if summary.skipped_phase2 else ""
        _fail(f"{len(summary.failed)} samples failed{extra}; run the same command again to retry them", 1)


def _dry_run(spec: StudySpec, console: Console) -> None:
    from .studies import plan_study, plan_table
    from .studies._report import roles_table

    problems, plans = plan_study(spec)
    console.print(plan_table(spec, problems, plans))
    console.print(roles_table({p.name: p.roles for p in plans if p.roles}))
    units = sum(p.units for p in plans)
    bounds = [p.ttc_bound * p.units for p in plans if p.ttc_bound is not None]
    console.print(f"{units} units in all; at most {sum(bounds):,} completion tokens for the "
                  f"{len(bounds)} arms with a bound; engine: {spec.engine.kind} (not started)")


@study_app.command("schema")
def schema_command() -> None:
    """Print the JSON schema of a study file (TOML with this structure)."""
    import json

    from .studies import StudySpec

    typer.echo(json.dumps(StudySpec.model_json_schema(), indent=2, ensure_ascii=False))


@study_app.command("report")
def report_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="a study's results folder")],
    csv_files: Annotated[bool, typer.Option("--csv/--no-csv", help="write CSV files")] = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="write PNG plots")] = True,
) -> None:
    """Print the metrics table of the study in OUT; write CSVs and plots into OUT/report."""
    from ._logging import configure_logging
    from .studies import build_report

    configure_logging()
    try:
        build_report(out, csv_files=csv_files, plots=plots, console=_console())
    except ConfigError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    study_app()
