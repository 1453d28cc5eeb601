"""The two-engine example studies (issue 19) validate with ``--dry-run``: nothing is started,
downloaded or written; the arms bind the roles to the engines they say."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pacore_agents.cli._study import study_app
from pacore_agents.studies import load_study, plan_study

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _bindings(name: str) -> dict[str, dict[str, str | None]]:
    spec = load_study(EXAMPLES / name)
    out = {}
    for arm in spec.arms:
        if arm.baseline is None:
            out[arm.name] = {n: r.engine for n, r in arm.used_roles(arm.build_topology()).items()}
    return out


def test_the_gpu_example_binds_a_small_explorer_and_a_large_sink_by_hub_id(tmp_path: Path) -> None:
    result = CliRunner().invoke(study_app, ["run", str(EXAMPLES / "study_gpu_two_models.toml"), "--dry-run",
                                            "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "engine: vllm (not started); engine big: vllm (not started)" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
    spec = load_study(EXAMPLES / "study_gpu_two_models.toml")
    assert (spec.engine.model, spec.engines["big"].model) == ("Qwen/Qwen3-1.7B", "Qwen/Qwen3-8B")
    assert spec.costs["big"].active_params == 8.2e9 and spec.costs["default"].unit == "flops"
    assert _bindings("study_gpu_two_models.toml") == {
        "big-everywhere": {"explorer": "big", "sink": "big"},
        "small-explore-big-sink": {"explorer": None, "sink": "big"},
        "small-everywhere": {"explorer": None, "sink": None}}
    assert {a.name: a.match_on for a in spec.arms if a.baseline == "self-consistency"} == {
        "sc-small-ttc": "ttc", "sc-small-cost": "cost"}
    notes = {plan.name: plan.note for plan in plan_study(spec)[1]}
    assert notes["sc-small-cost"].startswith("N matched on declared cost to big-everywhere")


def test_the_local_example_uses_two_engine_kinds() -> None:
    result = CliRunner().invoke(study_app, ["run", str(EXAMPLES / "study_two_engines.toml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "engine server: openai (not started)" in " ".join(result.output.split())
    spec = load_study(EXAMPLES / "study_two_engines.toml")
    assert (spec.engine.kind, spec.engines["server"].kind) == ("vllm", "openai")
    assert _bindings("study_two_engines.toml")["server-sink"] == {"explorer": None, "sink": "server"}
    assert [a.match_on for a in spec.arms if a.baseline == "self-consistency"] == ["cost"]
