"""The study reference (docs/studies.md) is generated and current; `pacore study schema`;
`pacore study run --dry-run` on the shipped examples (no engine started, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pacore_agents.cli import study_app
from pacore_agents.studies import StudySpec, load_study, plan_study
from pacore_agents.studies._columns import CSV_FILES
from pacore_agents.studies._docs import render_spec_docs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_docs_are_current() -> None:
    text = render_spec_docs()
    assert (ROOT / "docs" / "studies.md").read_text(encoding="utf-8") == text, (
        "docs/studies.md is stale: run python -m pacore_agents.studies._docs docs/studies.md")
    for key in ("role_temperature", "prompt_template", "sweep_point", "max_tokens", "trajectory_pool"):
        assert f"`{key}`" in text
    for words in ("emergent", "right-to-wrong", "consensus", "McNemar", "bootstrap", "cluster"):
        assert words in text
    for file, (_, columns) in CSV_FILES.items():
        assert f"### {file}" in text and all(f"| `{c}` |" in text for c in columns)


def test_every_key_of_every_model_is_documented() -> None:
    text = render_spec_docs()
    for heading in ("### top level", "### [dataset]", "### [[arms]]", "### [arms.roles.NAME]", "### [[sweep]]",
                    "### [sampling]", "### [grading]", "### [retry]", '### [engine] with kind = "vllm"'):
        assert heading in text
    for name in StudySpec.model_fields:
        assert f"| `{name}` |" in text


def test_schema_command() -> None:
    result = CliRunner().invoke(study_app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"] == "StudySpec" and {"arms", "sweep", "dataset"} <= set(schema["properties"])
    assert "SweepSpec" in schema["$defs"] and "RoleOverride" in schema["$defs"]


def test_dry_run_on_both_examples(tmp_path: Path) -> None:
    runner = CliRunner()
    arith = runner.invoke(study_app, ["run", str(EXAMPLES / "study_arithmetic.toml"), "--dry-run"])
    assert arith.exit_code == 0, arith.output
    assert "120 problems x 1 samples" in arith.output and "pacore-w8-sink0.3" in arith.output
    assert "engine: vllm (not started)" in arith.output
    gpu = runner.invoke(study_app, ["run", str(EXAMPLES / "study_gpu_pacore8b.toml"), "--dry-run",
                                    "--out", str(tmp_path / "out")])
    assert gpu.exit_code == 0, gpu.output
    assert "500 problems x 4 samples" in gpu.output and "pacore-k32x4" in gpu.output
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    problems, plans = plan_study(load_study(EXAMPLES / "study_gpu_pacore8b.toml"))
    by = {p.name: p for p in plans}
    assert problems == 500 and by["pacore-k32x4"].widths == [32, 4, 1]
    assert by["pacore-k32x4"].ttc_bound == 37 * 32768 and by["pacore-k4"].nodes == 5


def test_dry_run_starts_no_engine_and_run_needs_out(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('[engine]\nkind = "function"\nfunction = "no_such_module:nothing"\n[dataset]\nkind = "arithmetic"\n'
                    'count = 5\n[sampling]\nmax_tokens = 10\n[[arms]]\nname = "w2"\nwidths = [2]\n'
                    'roles = { sink = { sampling = { max_tokens = 50 } } }\n')
    runner = CliRunner()
    result = runner.invoke(study_app, ["run", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    (plan,) = plan_study(load_study(spec))[1]
    assert (plan.ttc_bound, plan.max_tokens, plan.units) == (2 * 10 + 50, 50, 5)  # the sink's own limit
    missing = runner.invoke(study_app, ["run", str(spec)])
    assert missing.exit_code == 2 and "give --out" in missing.output
