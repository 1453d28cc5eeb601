"""``pacore study export``: the command end to end, and its bad input as one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_studies_export import _run

REPO = Path(__file__).resolve().parent.parent


def pacore(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "pacore_agents", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("cli-export"))


def test_export_writes_the_formats_and_prints_what_the_filters_removed(study: Path) -> None:
    out = study.parent / "exp"
    done = pacore("study", "export", str(out), str(study), "--format", "verl", "-f", "pacore",
                  "--paper-filters", "--reference-band", "math=0:1", "--draw-m", "2:3", "--draws", "2", "--seed", "5")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "export.json").read_text())
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(summary["rows"]) == ["pacore", "verl"]
    assert summary["options"]["reference_bands"] == {"math": [0.0, 1.0], "code": [0.0, 0.625]}
    counts = summary["counts"]
    assert f"stage 1 {counts['stage1_problems']} problems" in done.stdout
    assert f"{counts['failed_references']} built on a failed reference" in done.stdout
    assert "unknown licence" in done.stderr  # a local dataset file: say so
    again = pacore("study", "export", str(out), str(study), "--format", "trl")
    assert again.returncode == 2 and "pass --force" in again.stderr
    assert pacore("study", "export", str(out), str(study), "--format", "trl", "--force").returncode == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == ["trl"]


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "csv"], "unknown export format 'csv'"),
    (["--format", "verl", "--synthesis-band", "0.5"], "write LOW:HIGH"),
    (["--format", "verl", "--reference-band", "math:0:1"], "write DOMAIN=LOW:HIGH"),
    (["--format", "verl", "--draw-m", "24:16"], "1 <= LOW <= HIGH"),
])
def test_bad_options_are_one_line(study: Path, tmp_path: Path, args: list[str], message: str) -> None:
    done = pacore("study", "export", str(tmp_path / "o"), str(study), *args)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_an_export_that_keeps_nothing_says_so(study: Path) -> None:
    out = study.parent / "empty"
    done = pacore("study", "export", str(out), str(study), "--format", "verl", "--synthesis-band", "0.99:1")
    assert done.returncode == 0, done.stderr
    assert "format verl: no rows" in done.stderr and "stage 2 5 problems" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json"]


def test_a_folder_that_is_not_a_study(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    done = pacore("study", "export", str(tmp_path / "o"), str(tmp_path / "notes"), "--format", "verl")
    assert done.returncode == 2 and "is not a study folder" in done.stderr and done.stderr.count("\n") == 1
