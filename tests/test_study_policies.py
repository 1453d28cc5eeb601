"""Policies in a study: the adaptive example, tiny, on a FunctionEngine; spec checks; the report."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from pacore_agents import ConfigError, FunctionEngine, GenerationRequest
from pacore_agents.studies import ExportOptions, build_report, export_study, parse_study, run_study
from pacore_agents.studies._store import ResultStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "study_adaptive_arithmetic.toml"
_PROBLEM = re.compile(r"What is (\d+) ([+*]) (\d+)\?")


def _solver(request: GenerationRequest) -> list[str]:
    """Explorers answer right, except agent 1 of every round (so answers are not unanimous);
    the sink answers right."""
    a, op, b = _PROBLEM.search(request.messages[0].content).groups()  # type: ignore[union-attr]
    right = int(a) + int(b) if op == "+" else int(a) * int(b)
    out = []
    for node in request.metadata.nodes:
        answer = right + 1 if node.agent == 1 and node.round == 1 else right
        out.append(f"step by step {a} {op} {b} </think> so \\boxed{{{answer}}}")
    return out


def _tiny_spec(count: int = 6) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "count = 100" in text
    return text.replace("count = 100", f"count = {count}")


def test_the_adaptive_example_runs_and_reports_savings(tmp_path: Path) -> None:
    spec = parse_study(_tiny_spec(), source="example")
    out = tmp_path / "out"
    summary = anyio.run(lambda: run_study(spec, out, engine=FunctionEngine(_solver)))
    assert summary.failed == [] and summary.ran == 6 * 6
    report = build_report(out, plots=False)
    rows = {r.arm: r for r in report.policies}
    assert set(rows) == {"consensus-w8x4", "consensus-share-w8x4", "width-w8x4", "width-w16"}
    assert rows["consensus-share-w8x4"].fired["consensus"] == 1.0  # 7 of 8 >= 75%
    # 7 of 8 agree: Beta(8, 2) passes at 0.95, so round 2 is skipped (4 of 13 nodes)
    consensus = rows["consensus-w8x4"]
    assert consensus.fired["consensus"] == 1.0 and consensus.skipped == 4
    assert consensus.twin == "fixed-w8x4" and consensus.pairs == 6
    assert consensus.saved is not None and consensus.saved > 0.2 and consensus.acc_diff == 0
    # waves of 4: 3 of 4 agree (Beta 0.94 < 0.95), the second wave makes 7 of 8: nothing left
    assert rows["width-w8x4"].fired["width"] == 0.0 and rows["width-w8x4"].saved == pytest.approx(0.0)
    # [16]: the first wave is not enough, the second (7 of 8) stops 8 launches; the plurality
    # answers, so the sink is skipped too
    w16 = rows["width-w16"]
    assert w16.fired == {"consensus": 1.0, "width": 1.0, "quorum": 0.0} and w16.skipped == 9
    assert w16.saved is not None and w16.saved > 0.5 and w16.acc_diff == 0
    assert (out / "report" / "policies.csv").exists()
    store = ResultStore.open(out)
    try:
        outcome = next(o for o in store.outcomes() if o.arm == "width-w16")
    finally:
        store.close()
    assert outcome.answered_by is not None and outcome.status == "correct"
    assert sum(nd.status == "skipped" for nd in outcome.nodes) == 9
    # skipped nodes are neither trajectories nor failures of the exported pool
    exported = export_study([out], tmp_path / "export", ExportOptions(formats=["verl"]))
    assert exported.counts.failed_pool_responses == 0 and exported.counts.episodes > 0


def test_a_policy_that_cannot_apply_to_an_arm_is_a_config_error() -> None:
    text = _tiny_spec().replace("width = { wave = 4 }, consensus", "width = { wave = 16 }, consensus")
    with pytest.raises(ConfigError, match=r"arm .width-w16.: adaptive width: round 1 .* not more than one wave"):
        parse_study(text, source="s")
    with pytest.raises(ConfigError, match="twin names 'nope'"):
        parse_study(_tiny_spec().replace('twin = "fixed-w16"', 'twin = "nope"'), source="s")


def test_policies_enter_the_fingerprint() -> None:
    with_policies = parse_study(_tiny_spec(), source="s")
    plain = parse_study(_tiny_spec().replace("width = { wave = 4 }", "width = { wave = 2 }"), source="s")
    assert with_policies.fingerprint() != plain.fingerprint()
    assert '"policies"' in with_policies.fingerprint()


def test_the_example_dry_run_names_the_policies() -> None:
    from typer.testing import CliRunner

    from pacore_agents.cli import study_app

    result = CliRunner().invoke(study_app, ["run", str(EXAMPLE), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "100 problems x 1 samples" in result.output and "engine: vllm (not started)" in result.output
    from pacore_agents.studies import load_study, plan_study

    _, plans = plan_study(load_study(EXAMPLE))
    notes = {p.name: p.note for p in plans}
    assert notes["fixed-w8x4"] == "" and notes["consensus-w8x4"] == (
        "policies: consensus(beta>=0.95, sink); twin fixed-w8x4")
