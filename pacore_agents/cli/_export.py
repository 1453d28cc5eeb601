"""``pacore study export OUT STUDY_DIR... --format F``: study folders become training data.

Writes ``OUT/data/<format>/<split>.parquet``, the dataset card ``OUT/README.md`` and the summary
``OUT/export.json`` (see ``pacore_agents.studies._export``); prints rows per format and split and
what each filter removed. Bad input (not a study folder, an OUT that exists, an unknown format,
a malformed band) exits 2 with one line; nothing is written then.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import console as _console
from ._output import errors, fail, note

if TYPE_CHECKING:
    from pacore_agents.studies import ExportSummary

_FORMATS = "verl, trl, sft, dpo, openrlhf or pacore"


def _pair(text: str, what: str, kind: type[float] | type[int]) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return kind(low), kind(high)
    except ValueError:
        fail(f"{what} {text!r}: write LOW:HIGH, e.g. {'0:0.375' if kind is float else '16:24'}")


def _bands(items: list[str]) -> dict[str, tuple[float, float]]:
    bands = {}
    for item in items:
        domain, sep, band = item.partition("=")
        if not sep or not domain:
            fail(f"--reference-band {item!r}: write DOMAIN=LOW:HIGH, e.g. math=0:0.375")
        bands[domain] = _pair(band, "--reference-band", float)
    return bands


def export_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="the export folder (must not exist; see --force)")],
    studies: Annotated[list[Path], typer.Argument(metavar="STUDY_DIR...", help="study folders (--out of study run)")],
    formats: Annotated[list[str], typer.Option("--format", "-f", help=f"{_FORMATS}; repeat for several")],
    paper_filters: Annotated[bool, typer.Option("--paper-filters", help="the paper's bands: reference accuracy "
                                                "in (0, 9/24) math, (0, 15/24) code; synthesis in (0, 1)")] = False,
    reference_band: Annotated[list[str] | None, typer.Option("--reference-band", metavar="DOMAIN=LOW:HIGH",
                                                             help="stage 1: keep problems whose pool accuracy "
                                                             "is strictly inside (repeat per domain)")] = None,
    synthesis_band: Annotated[str | None, typer.Option("--synthesis-band", metavar="LOW:HIGH",
                                                       help="stage 2: keep problems whose synthesis accuracy "
                                                       "is strictly inside")] = None,
    draw_m: Annotated[str | None, typer.Option("--draw-m", metavar="LOW:HIGH", help="also draw fresh prompts "
                                               "from each problem's pool, |M| uniform in LOW..HIGH (paper: 16:24)")] = None,
    draws: Annotated[int, typer.Option("--draws", help="fresh prompts per problem (with --draw-m)")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seeds the draws and the split")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of problems in the test split")] = 0.0,
    license_id: Annotated[str | None, typer.Option("--license", help="licence id of the source data (a local "
                                                   "dataset file's is unknown otherwise)")] = None,
    include_degraded: Annotated[bool, typer.Option("--include-degraded", help="keep episodes whose prompt lost a "
                                                   "failed reference (listed in their rows)")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace OUT if it holds an earlier export")] = False,
) -> None:
    """Export the synthesis episodes of STUDY_DIR... into OUT as training data, with a dataset card."""
    from pacore_agents.studies import ExportOptions, export_study
    from pacore_agents.studies._curation import PAPER_REFERENCE_BANDS, PAPER_SYNTHESIS_BAND

    with errors():
        bands = dict(PAPER_REFERENCE_BANDS) if paper_filters else {}
        bands.update(_bands(reference_band or []))
        synthesis = PAPER_SYNTHESIS_BAND if paper_filters else None
        if synthesis_band is not None:
            synthesis = _pair(synthesis_band, "--synthesis-band", float)
        drawn = None if draw_m is None else _pair(draw_m, "--draw-m", int)
        options = ExportOptions.of(
            formats=formats, reference_bands=bands, synthesis_band=synthesis, include_degraded=include_degraded,
            draw_m=drawn, draws=draws, seed=seed, test_fraction=test_fraction, license=license_id, force=force)
        summary = export_study(studies, out, options)
    _print(summary, out)


def _print(summary: ExportSummary, out: Path) -> None:
    console = _console()
    for fmt, splits in summary.rows.items():
        console.print(f"{fmt}: " + ", ".join(f"{split} {n} rows" for split, n in splits.items()), markup=False)
    c = summary.counts
    console.print(f"{c.kept_problems} of {c.problems} problems and {c.kept_episodes} of {c.episodes} stored "
                  f"episodes kept; removed: {c.failed_episodes} failed episodes, {c.failed_references} built on "
                  f"a failed reference, stage 1 {c.stage1_problems} problems ({c.stage1_episodes} episodes), "
                  f"stage 2 {c.stage2_problems} problems ({c.stage2_episodes} episodes); {c.failed_pool_responses} "
                  f"failed trajectories in no pool; {c.draws} fresh draws",
                  markup=False)
    for line in summary.notes:
        note("note", line)
    if summary.scrubbed_secrets or summary.scrubbed_paths:
        note("scrubbed", f"{summary.scrubbed_secrets} strings held a secret, {summary.scrubbed_paths} a local "
             "path (replaced by *** / <path>)")
    console.print(f"wrote {out} (README.md: the dataset card; export.json: this summary)", markup=False)
