"""``export_study``: study folders become training data (``pacore study export``).

Contract:
- Reads the folders (never writes them), curates (``_curation``), builds each format's rows
  (``_export_rows``), and writes ``OUT/data/<format>/<split>.parquet``, the dataset
  card ``OUT/README.md`` and the summary ``OUT/export.json``. Files are written in a sibling
  temporary folder first and moved into place at the end: a failure leaves OUT as it was.
- An OUT that exists and is not empty is refused unless ``force``, and even then only if it is
  an earlier export (it holds ``export.json``): nothing else is ever replaced.
- Every exported string passes one scrubber: the package's secret redaction (keys, URL
  credentials, registered secrets) and this machine's paths (OUT, the study folders, their
  datasets, home, working directory, Python prefix) become ``***`` / ``<path>``; the summary
  counts the strings changed. Rows hold only whitelisted fields (never a trace's config,
  engine details, errors or notes).
- Splits are by problem (a problem's rows share one split): ``test`` if
  ``derive_seed(seed, "split", folder, problem) / 2**31 < test_fraction``, else ``train``.
- Row order: study folders as given, then store order (``_episodes``), stored episodes before
  draws. A format without rows gets no file or config (the summary says 0).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pacore_agents._errors import ConfigError
from pacore_agents._logging import redact
from pacore_agents._references import derive_seed

from ._curation import Band, CurationCounts, CurationOptions, curate
from ._dataset_card import ConfigFiles, render_card
from ._episodes import StudyMaterial, load_study_material
from ._rewards import DOMAINS

SUMMARY_NAME = "export.json"
KNOWN_FORMATS = ("verl", "trl", "sft", "dpo", "openrlhf", "pacore")


class ExportOptions(BaseModel):
    """What to export and how to curate it (see ``_curation`` for the filters' semantics)."""

    model_config = ConfigDict(extra="forbid")

    formats: list[str] = Field(min_length=1, description="verl, trl, sft, dpo, openrlhf, pacore")
    reference_bands: dict[str, Band] = Field(default_factory=dict, description="stage 1: per domain, "
                                             "keep problems whose pool accuracy is strictly inside")
    synthesis_band: Band | None = Field(default=None, description="stage 2: keep problems whose "
                                        "synthesis accuracy is strictly inside")
    include_degraded: bool = Field(default=False, description="keep episodes built on a failed reference")
    draw_m: tuple[int, int] | None = Field(default=None, description="|M| range of fresh draws (inclusive)")
    draws: int = Field(default=1, ge=1, description="fresh draws per problem")
    seed: int = Field(default=0, description="seeds draws and the split")
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="problems put in the test split")
    license: str | None = Field(default=None, description="licence id of the source data (files)")
    force: bool = Field(default=False, description="replace an earlier export in OUT")

    @classmethod
    def of(cls, **options: Any) -> ExportOptions:
        """Validated options; bad ones raise ``ConfigError`` with one line saying what to fix."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"export option {where}: {msg}" if where and err["type"] != "value_error"
                              else msg) from exc

    @field_validator("formats")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for fmt in value:
            if fmt not in KNOWN_FORMATS:
                raise ValueError(f"unknown export format {fmt!r}: use {', '.join(KNOWN_FORMATS)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _bands(self) -> ExportOptions:
        for domain in self.reference_bands:
            if domain not in DOMAINS:
                raise ValueError(f"reference band for {domain!r}: the domains are {', '.join(DOMAINS)}")
        for what, band in [*(("reference band " + d, b) for d, b in self.reference_bands.items()),
                           ("synthesis band", self.synthesis_band)]:
            if band is not None and not 0.0 <= band[0] < band[1] <= 1.0:
                raise ValueError(f"{what} {band}: give LOW:HIGH with 0 <= LOW < HIGH <= 1")
        if self.draw_m is not None and not 1 <= self.draw_m[0] <= self.draw_m[1]:
            raise ValueError(f"draw_m {self.draw_m}: give LOW:HIGH with 1 <= LOW <= HIGH")
        return self


class ExportSummary(BaseModel):
    """What an export wrote and removed (also ``OUT/export.json``)."""

    out: str
    studies: list[str]
    formats: list[str]
    rows: dict[str, dict[str, int]]
    files: list[str]
    license: str
    counts: CurationCounts
    scrubbed_secrets: int = 0
    scrubbed_paths: int = 0
    baseline_samples: int = 0
    notes: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict, description="the options, to reproduce it")


class _Scrubber:
    """The one place every exported string passes (see the module contract)."""

    def __init__(self, paths: Sequence[str]) -> None:
        # "/a/b" and longer; a one-part path only as a prefix ("/root/"): "/root" alone is a word
        kept = {p if p.endswith("/") else p.rstrip("/") for p in paths}
        self.paths = sorted((p for p in kept if p.strip("/").count("/") >= 1 or (p.endswith("/") and len(p) > 2)),
                            key=len, reverse=True)
        self.secrets = self.hits = 0

    def text(self, value: str) -> str:
        out = redact(value)
        self.secrets += out != value
        for path in self.paths:
            if path in out:
                out = out.replace(path, "<path>")
                self.hits += 1
        return out

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


def _machine_paths(out: Path, studies: Sequence[StudyMaterial], folders: Sequence[Path]) -> list[str]:
    paths = [str(out.resolve()), str(out.resolve().parent), str(Path.cwd()), sys.prefix,
             str(Path(__file__).resolve().parents[2])]
    home = Path.home()
    paths.append(str(home) if len(home.parts) > 2 else f"{home}/")
    for folder in folders:
        paths += [str(folder.resolve()), str(folder.resolve().parent)]
    for study in studies:
        paths += study.local_paths
    return [p for p in paths if p not in ("/", "")]


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder: choose a new OUT folder")
    if not any(out.iterdir()):
        return
    if not force:
        raise ConfigError(f"{out} exists: choose a new OUT folder, or pass --force to replace an earlier export")
    if not (out / SUMMARY_NAME).is_file():
        raise ConfigError(f"{out} holds files that `pacore study export` did not write (no {SUMMARY_NAME}); "
                          "refusing to replace them: choose a new OUT folder")


def _split(seed: int, folder: str, problem: str, fraction: float) -> str:
    return "test" if fraction and derive_seed(seed, "split", folder, problem) / 2**31 < fraction else "train"


def _license(studies: Sequence[StudyMaterial], given: str | None) -> tuple[str, list[str]]:
    if given is not None:
        return given, []
    found = {s.license or "unknown" for s in studies}
    notes = [f"study {s.folder}: its dataset is a local file of unknown licence (pass --license ID)"
             for s in studies if s.license is None]
    return (found.pop() if len(found) == 1 else "other"), notes


def export_study(studies: Sequence[str | Path], out: str | Path, options: ExportOptions | None = None,
                 **kw: Any) -> ExportSummary:
    """Export ``studies`` (study folders) into ``out`` (see the module contract): ``options``, or
    its fields as keywords (``formats=["verl"]``). Raises ``ConfigError`` for bad input, with
    nothing written."""
    options = options if options is not None else ExportOptions.of(**kw)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ._export_rows import BUILDERS, SCHEMAS
    except ImportError as exc:
        raise ConfigError("study export needs pyarrow: pip install 'pacore-agents[export]'") from exc
    out_path = Path(out)
    folders = [Path(s) for s in studies]
    if not folders:
        raise ConfigError("give at least one study folder to export")
    resolved = [f.resolve() for f in folders]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("a study folder is given twice: give each once")
    if out_path.resolve() in resolved:
        raise ConfigError(f"OUT {out_path} is a study folder: choose a new folder for the export")
    _check_out(out_path, options.force)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    materials = [load_study_material(f) for f in folders]
    names = [m.folder for m in materials]
    if len(set(names)) != len(names):
        raise ConfigError("two study folders share a name; rows name their folder: rename one")

    curation = CurationOptions(reference_bands=options.reference_bands, synthesis_band=options.synthesis_band,
                               include_degraded=options.include_degraded, draw_m=options.draw_m,
                               draws=options.draws, seed=options.seed)
    kept, counts = curate(materials, curation)
    scrub = _Scrubber(_machine_paths(out_path, materials, folders))
    tables: dict[str, dict[str, list[dict[str, Any]]]] = {f: {} for f in options.formats}
    for item in kept:
        split = _split(options.seed, item.study.folder, str(item.material.problem.id), options.test_fraction)
        for fmt in options.formats:
            rows = tables[fmt].setdefault(split, [])
            rows += [scrub.value(row) for row in BUILDERS[fmt](item, split)]
    for split_rows in tables.get("verl", {}).values():
        for index, row in enumerate(split_rows):
            row["extra_info"]["index"] = index

    license_id, notes = _license(materials, options.license)
    tmp = out_path.parent / f".{out_path.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    configs: list[ConfigFiles] = []
    try:
        tmp.mkdir(parents=True)
        for fmt, splits in tables.items():
            files, sizes = {}, {}
            for split in sorted(splits, key=lambda s: (s != "train", s)):
                rows = splits[split]
                if not rows:
                    continue
                rel = f"data/{fmt}/{split}.parquet"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[fmt]), tmp / rel)
                files[split], sizes[split] = rel, len(rows)
            if files:
                configs.append(ConfigFiles(name=fmt, files=files, rows=sizes))
            else:
                notes.append(f"format {fmt}: no rows (nothing passed, or no episode of the kind it needs)")
        summary = ExportSummary(
            out=out_path.name, studies=names, formats=list(options.formats),
            rows={c.name: c.rows for c in configs}, files=[p for c in configs for p in c.files.values()],
            license=license_id, counts=counts, scrubbed_secrets=scrub.secrets, scrubbed_paths=scrub.hits,
            baseline_samples=sum(m.baseline_samples for m in materials), notes=notes,
            options=options.model_dump(mode="json", exclude={"force"}))
        sources = {m.folder: f"{m.dataset} ({m.license or options.license or 'unknown'})" for m in materials}
        card = render_card(title=f"PaCoRe synthesis episodes: {', '.join(sorted({m.name for m in materials}))}",
                           license_id=license_id, configs=configs, counts=counts, sources=sources,
                           options=summary.options)
        (tmp / "README.md").write_text(scrub.text(card), encoding="utf-8")
        (tmp / SUMMARY_NAME).write_text(scrub.text(summary.model_dump_json(indent=1)), encoding="utf-8")
        _swap(tmp, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _swap(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an earlier export in ``out`` (checked) is removed only after."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
