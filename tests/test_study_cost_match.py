"""Self-consistency budget-matched on declared cost (``match_on = "cost"``) beside the TTC match,
with two FunctionEngines of different declared prices: the N chosen against an independent
computation from the store, the report saying what each arm was matched on, and
``accuracy_vs_cost.png`` with its data (``cost.csv``) against an independent computation."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from pacore_agents import ConfigError, FunctionEngine, GenerationRequest
from pacore_agents.studies import build_report, parse_study, plan_study, run_study

PRICES = {"default": 0.1, "big": 2.0}
PROBLEMS, SAMPLES = 6, 2


def small(request: GenerationRequest) -> list[str]:
    """Explorers and baselines: agent k is right unless k % 3 == 2, and thinks 3 + k % 3 words."""
    gold = int(re.findall(r"What is (\d+)\+2", request.messages[-1].content)[0]) + 2
    out = []
    for node in request.metadata.nodes[: request.n]:
        right = node.agent % 3 != 2
        out.append(f"<think>{'step ' * (3 + node.agent % 3)}</think>so \\boxed{{{gold if right else gold + 1}}}")
    return out


def big(request: GenerationRequest) -> list[str]:
    """The sink on the big engine: right, after a long think."""
    gold = int(re.findall(r"What is (\d+)\+2", request.messages[0].content + request.messages[-1].content)[0]) + 2
    return [f"<think>{'check ' * 40}</think>final \\boxed{{{gold}}}"] * request.n


def _text(data: Path, costs: bool = True, sc: str = 'match_on = "cost"') -> str:
    default_cost = f"cost_per_1k_tokens = {PRICES['default']}" if costs else ""
    big_cost = f"cost_per_1k_tokens = {PRICES['big']}" if costs else ""
    return f"""
name = "cost-match"
samples = {SAMPLES}
seeded = false
[dataset]
path = "{data}"
id_field = "id"
[engine]
kind = "function"
function = "tests.fixtures.handlers:answer"
{default_cost}
[engines.big]
kind = "function"
function = "tests.fixtures.handlers:answer"
{big_cost}
[[arms]]
name = "small-only"
widths = [3]
[[arms]]
name = "big-sink"
widths = [3]
roles = {{ sink = {{ engine = "big" }} }}
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc-ttc"
baseline = "self-consistency"
[[arms]]
name = "sc-cost"
baseline = "self-consistency"
{sc}
"""


def _data(tmp: Path) -> Path:
    data = tmp / "problems.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i}+2?", "answer": str(i + 2), "id": f"q{i}"}) + "\n"
                            for i in range(PROBLEMS)))
    return data


def _run(out: Path, text: str) -> None:
    summary = anyio.run(lambda: run_study(parse_study(text), out, spec_text=text, engine=FunctionEngine(small),
                                          engines={"big": FunctionEngine(big)}))
    assert summary.failed == [] and summary.ran == PROBLEMS * SAMPLES * 5


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("cost-match")
    out = tmp / "study"
    _run(out, _text(_data(tmp)))
    yield out


def _store(study: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(every sample: arm, kind, status, nodes of its trace), meta, read with sqlite."""
    conn = sqlite3.connect(study / "results.sqlite")
    samples = []
    for arm, outcome, trace in conn.execute("SELECT arm, outcome_json, trace_json FROM results"):
        o = json.loads(outcome)
        samples.append({"arm": arm, "kind": o["kind"], "status": o["status"], "nodes": json.loads(trace)["nodes"],
                        "graded": [nd["status"] for nd in o["nodes"]]})
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.close()
    return samples, meta


def _cost(node: dict[str, Any]) -> float:
    usage = node["usage"]
    return (usage["prompt_tokens"] + usage["completion_tokens"]) / 1000 * PRICES[node.get("engine") or "default"]


def test_n_matches_each_arms_declared_cost_within_one_trajectory(study: Path) -> None:
    samples, meta = _store(study)
    trajectories = [_cost({**nd, "engine": "default"}) for s in samples if s["kind"] in ("topology", "single")
                    for nd in s["nodes"] if nd["round"] == 1 and not nd["inputs"]
                    and (nd.get("engine") or "default") == "default"]
    c = sum(trajectories) / len(trajectories)
    sizes = json.loads(meta["sc_sizes:sc-cost"])
    ttc_sizes = json.loads(meta["sc_sizes:sc-ttc"])
    assert set(sizes) == set(ttc_sizes) == {"small-only", "big-sink"}
    for arm, n in sizes.items():
        costs = [sum(_cost(nd) for nd in s["nodes"]) for s in samples if s["arm"] == arm]
        budget = sum(costs) / len(costs)
        assert abs(n * c - budget) <= c, (arm, n, c, budget)
        assert n == max(1, round(budget / c))
    # the big engine's sink is 20x the price: a cost match buys many more trajectories than a TTC match
    assert sizes["big-sink"] > ttc_sizes["big-sink"] and sizes["big-sink"] > sizes["small-only"]
    record = json.loads(meta["sc_match:sc-cost"])
    assert record["on"] == "cost" and record["unit"] == pytest.approx(c)
    assert json.loads(meta["sc_match:sc-ttc"])["on"] == "ttc"
    sc = next(s for s in samples if s["arm"] == "sc-cost")
    assert len(sc["nodes"]) == max(sizes.values())  # one set of trajectories serves every budget


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_report_says_what_each_arm_was_matched_on_and_plots_accuracy_against_cost(study: Path) -> None:
    console = Console(record=True, width=220)
    report = build_report(study, console=console)
    text = console.export_text()
    assert re.search(r"self-consistency sc-cost: matched on cost \(mean declared cost per sample, price", text)
    assert "self-consistency sc-ttc: matched on effective TTC" in text
    assert "budget-matched on cost and ttc" in text
    metrics = {r["label"]: r for r in _csv(study / "report" / "metrics.csv")}
    assert {metrics[f"sc-cost@{a}"]["match_on"] for a in ("small-only", "big-sink")} == {"cost"}
    assert {metrics[f"sc-ttc@{a}"]["match_on"] for a in ("small-only", "big-sink")} == {"ttc"}
    assert metrics["small-only"]["match_on"] == ""

    plot = study / "report" / "accuracy_vs_cost.png"
    assert plot in report.files and (study / "report" / "accuracy_vs_ttc.png").is_file()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _csv(study / "report" / "cost.csv")
    assert [r["label"] for r in rows] == list(metrics)  # one row per metrics row, in its order
    samples, _ = _store(study)
    for row in rows:
        mine = [s for s in samples if s["arm"] == row["arm"]]
        n = int(row["vote_size"]) if row["vote_size"] else None
        want = sum(sum(_cost(nd) for nd in s["nodes"][:n]) for s in mine) / len(mine)
        assert float(row["mean_cost"]) == pytest.approx(want), row["label"]
        assert row["cost_unit"] == "price" and row["accuracy"] == metrics[row["label"]]["accuracy"]
        assert row["ci_low"] == metrics[row["label"]]["ci_low"] and row["ci_high"] == metrics[row["label"]]["ci_high"]
        if row["kind"] != "self-consistency":  # accuracy: correct / graded samples
            graded = [s["status"] for s in mine if s["status"] in ("correct", "wrong")]
            assert float(row["accuracy"]) == pytest.approx(graded.count("correct") / len(graded))
        else:
            assert row["match_on"] == ("cost" if row["arm"] == "sc-cost" else "ttc")


def test_without_declared_costs_there_is_no_cost_plot_and_no_cost_match(tmp_path: Path) -> None:
    data = _data(tmp_path)
    with pytest.raises(ConfigError, match="match_on = 'cost' needs declared engine costs") as err:
        parse_study(_text(data, costs=False))
    assert "\n" not in str(err.value)
    text = _text(data, costs=False, sc="")
    _run(tmp_path / "out", text)
    report = build_report(tmp_path / "out")
    assert (tmp_path / "out" / "report" / "accuracy_vs_ttc.png").is_file()
    assert not (tmp_path / "out" / "report" / "accuracy_vs_cost.png").exists()
    assert not (tmp_path / "out" / "report" / "cost.csv").exists() and report.costs == []
    assert {m.match_on for m in report.metrics if m.kind == "self-consistency"} == {"ttc"}


def test_match_on_says_what_to_fix_and_the_dry_run_says_what_it_matches(tmp_path: Path) -> None:
    data = _data(tmp_path)
    with pytest.raises(ConfigError, match="match, match_on and n are for baseline = 'self-consistency'"):
        parse_study(_text(data) + '[[arms]]\nname = "s2"\nbaseline = "single"\nmatch_on = "cost"\n')
    with pytest.raises(ConfigError, match="n gives fixed vote sizes"):
        parse_study(_text(data, sc='match_on = "cost"\nn = [2]'))
    with pytest.raises(ConfigError, match=r"match_on"):
        parse_study(_text(data, sc='match_on = "flops"'))
    with pytest.raises(ConfigError, match="which is 0: declare a cost > 0 there"):
        parse_study(_text(data).replace(f"cost_per_1k_tokens = {PRICES['default']}", "cost_per_1k_tokens = 0"))
    _, plans = plan_study(parse_study(_text(data)))
    notes = {p.name: p.note for p in plans}
    assert notes["sc-cost"] == "N matched on declared cost to small-only, big-sink"
    assert notes["sc-ttc"] == "N matched on effective TTC to small-only, big-sink"
    # the default keeps the meaning (and the fingerprint) of every existing study
    plain = parse_study(_text(data, sc=""))
    assert plain.arms[-1].match_on == "ttc" and '"match_on"' not in plain.fingerprint()
    assert '"match_on": "cost"' in parse_study(_text(data)).fingerprint()
