"""A small study on a FunctionEngine whose answers are scripted per (arm, problem, sample, node):
every metric must equal its hand-computed value."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from pacore_agents import FunctionEngine, GenerationRequest
from pacore_agents.studies import (
    ArmMetrics,
    NodeOutcome,
    ResultStore,
    SampleOutcome,
    build_report,
    compute_metrics,
    parse_study,
    run_study,
    wilson_interval,
)

GOLD = {"p1": "1", "p2": "2", "p3": "3"}
NOANS = "nothing to see here"


def boxed(x: str, words: int = 3) -> str:
    return " ".join(["w"] * words) + f" \\boxed{{{x}}}"


# (problem, sample) -> round-1 texts, sink text of the `low2` arm (widths [2] + sink)
LOW2: dict[tuple[str, int], tuple[list[str], str]] = {
    ("p1", 0): ([boxed("1"), boxed("1")], boxed("1")),  # inputs all right, sink right
    ("p1", 1): ([boxed("1"), boxed("5")], boxed("5")),  # half right -> no flip base
    ("p2", 0): ([boxed("7"), boxed("8")], "参考 " + boxed("2", 5)),  # all wrong -> sink right: emergent
    ("p2", 1): ([boxed("7"), boxed("7")], boxed("7")),  # all wrong, sink wrong
    ("p3", 0): ([boxed("3"), boxed("3")], boxed("4")),  # all right -> sink wrong: flip
    ("p3", 1): ([boxed("3"), NOANS], "Reference 1 is right: " + boxed("3", 1)),  # cross-check
}
SINGLE = {("p1", 0): "1", ("p1", 1): "1", ("p2", 0): "9", ("p2", 1): "2", ("p3", 0): "3", ("p3", 1): "0"}
SC: dict[tuple[str, int], list[str]] = {
    ("p1", 0): [boxed("1"), boxed("2"), boxed("1")],  # vote 1: right
    ("p1", 1): [boxed("2"), boxed("2"), boxed("1")],  # vote 2: wrong
    ("p2", 0): [boxed("2"), NOANS, boxed("5")],  # tie 2/5 -> first seen (2): right
    ("p2", 1): [boxed("5"), boxed("2"), boxed("5")],  # vote 5: wrong
    ("p3", 0): [boxed("3"), boxed("3"), boxed("3")],  # right
    ("p3", 1): [boxed("4"), boxed("3"), boxed("3")],  # right
}


def scripted(request: GenerationRequest) -> list[str]:
    pid, arm, sample_tag = (request.metadata.unit or "").split("|")
    key = (pid, int(sample_tag[1:]))
    nodes = request.metadata.nodes
    assert len(nodes) == request.n
    if arm == "single":
        return [boxed(SINGLE[key])]
    if arm == "sc":
        return [SC[key][n.agent] for n in nodes]
    r1, sink = LOW2[key]
    return [r1[n.agent] if n.round == 1 else sink for n in nodes]


def write_study(tmp: Path, arms: str) -> str:
    data = tmp / "tiny.jsonl"
    data.write_text("".join(json.dumps({"id": k, "q": f"What is {v}?", "a": v}) + "\n" for k, v in GOLD.items()))
    return f"""
samples = 2
seed = 7
[engine]
kind = "function"
function = "tests.test_studies_metrics:scripted"
[dataset]
path = "{data}"
problem_field = "q"
answer_field = "a"
id_field = "id"
[sampling]
max_tokens = 32
[grading]
timeout = 60  # generous: the machine may be loaded; no check here comes near it
{arms}
"""


ARMS = """
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "low2"
widths = [2]
[[arms]]
name = "sc"
baseline = "self-consistency"
n = [3]
"""


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("study")
    spec = parse_study(write_study(tmp, ARMS))
    summary = anyio.run(lambda: run_study(spec, tmp / "out", engine=FunctionEngine(scripted)))
    assert summary.failed == [] and summary.ran == 18 and summary.total == 18
    return tmp / "out"


def metrics_by_label(out: Path) -> dict[str, ArmMetrics]:
    store = ResultStore.open(out)
    try:
        ms = compute_metrics(store.outcomes(), ["single", "low2", "sc"], {"sc": {"n=3": 3}})
    finally:
        store.close()
    return {m.label: m for m in ms}


def test_topology_arm_metrics(study: Path) -> None:
    m = metrics_by_label(study)["low2"]
    assert (m.samples, m.graded, m.correct, m.problems) == (6, 6, 3, 3)
    assert m.accuracy == 0.5
    assert (m.ci_low, m.ci_high) == pytest.approx(wilson_interval(3, 6))
    assert wilson_interval(3, 6) == pytest.approx((0.1876, 0.8124), abs=1e-4)
    ttcs = [sum(map(words, r1)) + words(sink) for r1, sink in LOW2.values()]
    assert m.mean_ttc == pytest.approx(sum(ttcs) / 6)
    r1, r2 = m.rounds
    assert (r1.round, r1.nodes, r2.nodes) == (1, 12, 6)
    assert r1.tokens == pytest.approx(sum(sum(map(words, t)) for t, _ in LOW2.values()) / 6)
    assert r2.tokens == pytest.approx(sum(words(s) for _, s in LOW2.values()) / 6)
    assert r1.accuracy == pytest.approx(6 / 12)
    assert r2.accuracy == pytest.approx(3 / 6)
    assert r1.consensus == pytest.approx((1 + 0.5 + 0.5 + 1 + 1 + 0.5) / 6)
    assert r2.consensus == 1.0
    assert r1.cross_check is None and r2.cross_check == pytest.approx(2 / 6)
    assert (m.emergent_n, m.emergent_base, m.emergent) == (1, 2, 0.5)
    assert (m.flips_n, m.flips_base, m.flips) == (1, 2, 0.5)
    assert m.cross_check == pytest.approx(2 / 6)


def test_baseline_metrics(study: Path) -> None:
    by = metrics_by_label(study)
    single = by["single"]
    assert single.accuracy == pytest.approx(4 / 6)
    assert single.mean_ttc == 4
    sc = by["sc@3"]
    assert sc.vote_size == 3 and sc.kind == "self-consistency"
    assert sc.accuracy == pytest.approx(4 / 6)
    assert sc.mean_ttc == pytest.approx(sum(sum(map(words, t)) for t in SC.values()) / 6)
    (r1,) = sc.rounds
    assert r1.accuracy == pytest.approx(10 / 18)
    assert r1.consensus == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 2 / 3 + 1 + 2 / 3) / 6)
    assert sc.emergent is None and sc.flips is None


def test_stored_traces_and_report(study: Path) -> None:
    store = ResultStore.open(study)
    try:
        trace = store.trace_json("low2", "p2", 0)
        assert trace is not None and trace["sink"] == "r2.a0" and len(trace["nodes"]) == 3
        assert store.get_meta("sc_sizes:sc") == json.dumps({"n=3": 3})
    finally:
        store.close()
    report = build_report(study)
    names = sorted(f.name for f in report.files)
    assert names == ["accuracy_vs_ttc.png", "engine.csv", "metrics.csv", "pairs.csv", "roles.csv", "rounds.csv",
                     "rounds.png", "samples.csv", "sequences_in_flight.png", "topology_low2.png"]
    # low2 - single per problem: p1 1/2 - 1, p2 1/2 - 1/2, p3 1/2 - 1/2 -> d = (-1/2, 0, 0); a
    # bootstrap mean is -X/6, X ~ Binomial(3, 1/3), P(X = 3) = 1/27 > 2.5%: interval [-1/2, 0]
    pairs = {(p.a, p.b): p for p in report.pairs}
    assert set(pairs) == {("single", "low2"), ("single", "sc@3"), ("low2", "sc@3")}
    p = pairs[("single", "low2")]
    assert (p.problems, p.samples_per_problem, p.p_value) == (3, 2, None)
    assert (p.diff, p.diff_low, p.diff_high) == pytest.approx((1 / 6, 0.0, 0.5))
    assert report.roles == {"low2": {"explorer": {"template": "problem", "system": "", "compaction": "pacore",
                                                  "sampling": ""},
                                     "sink": {"template": "pacore", "system": "", "compaction": "pacore",
                                              "sampling": ""}}}
    pair_rows = (study / "report" / "pairs.csv").read_text().splitlines()
    assert pair_rows[0] == "a,b,problems,samples_per_problem,acc_a,acc_b,diff,diff_low,diff_high,a_only,b_only,p_value"
    assert len(pair_rows) == 4
    assert (study / "report" / "roles.csv").read_text().splitlines()[1:] == [
        "low2,explorer,problem,,pacore,", "low2,sink,pacore,,pacore,"]
    for f in report.files:
        assert f.stat().st_size > 100
    rows = (study / "report" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("label,arm,kind") and len(rows) == 4 and ",ci_method," in rows[0]
    assert (study / "report" / "accuracy_vs_ttc.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_runs_nothing(study: Path) -> None:
    spec = parse_study(write_study(study.parent, ARMS))

    def never(request: GenerationRequest) -> list[str]:
        raise AssertionError("a stored sample was run again")

    summary = anyio.run(lambda: run_study(spec, study, engine=FunctionEngine(never)))
    assert (summary.ran, summary.already_done, summary.failed) == (0, 18, [])


def test_budget_matched_self_consistency_with_pool(tmp_path: Path) -> None:
    """Every trajectory has 4 tokens and every sink 4: low2's TTC is 12, so N = 3. With the
    pool, round 1 is generated once per (problem, sample) and shared by low2, single and SC."""
    requests: list[GenerationRequest] = []

    def engine(request: GenerationRequest) -> list[str]:
        requests.append(request)
        gold = GOLD[(request.metadata.unit or "").split("|")[0]]
        return [f"t{len(requests)}.{i} w w \\boxed{{{gold}}}" for i in range(request.n)]  # 4 tokens

    arms = """
[[arms]]
name = "low2"
widths = [2]
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc"
baseline = "self-consistency"
"""
    spec = parse_study(write_study(tmp_path, arms).replace("seed = 7", "seed = 7\ntrajectory_pool = true"))
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(engine)))
    assert summary.failed == [] and summary.sc_sizes == {"sc": {"low2": 3}}
    assert {r.metadata.problem_id for r in requests} == set(GOLD)  # affinity stays per problem
    pool = [r for r in requests if "|pool|" in (r.metadata.unit or "")]
    others = [r for r in requests if "|pool|" not in (r.metadata.unit or "")]
    # per (problem, sample): 2 pooled trajectories in one request (phase 1: low2 and single
    # share it), then 1 more for SC's N = 3 (phase 2)
    assert sorted(r.n for r in pool) == [1] * 6 + [2] * 6
    assert [r.n for r in pool[:6]] == [2] * 6
    assert all(r.metadata.round == 2 for r in others) and len(others) == 6  # only low2's sinks
    by = metrics_by_label(tmp_path / "out")
    assert by["low2"].mean_ttc == 12
    store = ResultStore.open(tmp_path / "out")
    try:
        ms = {m.label: m for m in compute_metrics(store.outcomes(), ["low2", "single", "sc"],
                                                  {"sc": {"low2": 3}})}
        low2 = store.trace_json("low2", "p1", 1)
        sc = store.trace_json("sc", "p1", 1)
    finally:
        store.close()
    assert ms["sc@low2"].mean_ttc == 12 and ms["sc@low2"].accuracy == 1.0
    assert low2 is not None and sc is not None
    assert [n["content"] for n in low2["nodes"][:2]] == [n["content"] for n in sc["nodes"][:2]]
    assert low2["nodes"][0]["notes"].get("precomputed") is True


@pytest.mark.parametrize("seeded", [True, False])
def test_seeds_sent_only_when_seeded(tmp_path: Path, seeded: bool) -> None:
    requests: list[GenerationRequest] = []

    def engine(request: GenerationRequest) -> list[str]:
        requests.append(request)
        return [boxed("1")] * request.n

    arms = "[[arms]]\nname = \"low2\"\nwidths = [2]\n[[arms]]\nname = \"single\"\nbaseline = \"single\"\n"
    text = write_study(tmp_path, arms).replace("seed = 7", f"seed = 7\nseeded = {str(seeded).lower()}")
    spec = parse_study(text.replace("seed = 7", "seed = 7\ntrajectory_pool = true"))
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(engine)))
    assert summary.failed == [] and len(requests) == 12  # 6 pool requests + 6 sinks
    assert all((r.sampling.seed is not None) == seeded for r in requests)


def test_cli_report(study: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pacore_agents.cli import study_app

    runner = CliRunner()
    result = runner.invoke(study_app, ["report", str(study), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "sc@3" in result.output and "low2" in result.output and "50.0 [19-81]" in result.output
    missing = runner.invoke(study_app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "holds no study results" in missing.output


def _node(nid: str, status: str, answer: str | None = None, inputs: int = 0, xref: bool = False) -> NodeOutcome:
    r, a = (int(x) for x in nid[1:].split(".a"))
    return NodeOutcome(id=nid, round=r, agent=a, inputs=[f"r{r - 1}.a{i}" for i in range(inputs)],
                       tokens=0 if status == "failed" else 5, status=status,  # type: ignore[arg-type]
                       answer=answer, cross_refs=xref)


def test_failed_nodes_leave_every_per_round_denominator() -> None:
    """Round 2 of a ring: sample 0 has one failed synthesizer, sample 1 has all failed.
    Consensus and cross-checking count only the nodes that sent a message (#10.12)."""
    s0 = [_node("r1.a0", "correct", "1"), _node("r1.a1", "wrong", "2"), _node("r1.a2", "correct", "1"),
          _node("r2.a0", "correct", "1", 2, xref=True), _node("r2.a1", "correct", "1", 2),
          _node("r2.a2", "failed", None, 2), _node("r3.a0", "correct", "1", 2, xref=True)]
    s1 = [_node("r1.a0", "wrong", "3"), _node("r1.a1", "wrong", "4"), _node("r1.a2", "wrong", None),
          _node("r2.a0", "failed", None, 3), _node("r2.a1", "failed", None, 3),
          _node("r2.a2", "failed", None, 3), _node("r3.a0", "wrong", "3", 0)]
    outcomes = [SampleOutcome(arm="ring", problem_id="p", sample=i, kind="topology", status=nodes[-1].status,
                              answer=nodes[-1].answer, effective_ttc=30, sink="r3.a0", nodes=nodes)
                for i, nodes in enumerate((s0, s1))]
    (m,) = compute_metrics(outcomes, ["ring"], {})
    r1, r2, r3 = m.rounds
    assert (r2.nodes, r2.failed, r1.failed) == (6, 4, 0)
    assert r2.accuracy == 1.0  # 2 graded of the 2 that sent a message
    assert r2.consensus == 1.0  # sample 0: 2/2 agree (2/3 if the failed one counted); sample 1: no message
    assert r2.cross_check == 0.5  # 1 of the 2 sent (1/6 if failed nodes counted)
    assert r1.consensus == pytest.approx((2 / 3 + 1 / 3) / 2)  # a message without an answer still counts
    assert r3.cross_check == 1.0  # the sink of sample 1 has no inputs
    assert m.cross_check == pytest.approx(2 / 3)  # r2.a0 and r3.a0 of the 3 sent with inputs
