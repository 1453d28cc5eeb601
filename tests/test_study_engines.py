"""A study with several engines (issue 19): ``[engines.NAME]`` tables beside ``[engine]``, arms
that rebind roles to engines, fingerprints that refuse a resume whose engines changed, tokens
per engine and role in the report, declared costs (price or FLOPs) against accuracy, and an
engine that reports no usage failing its unit."""

from __future__ import annotations

import csv
from pathlib import Path

import anyio
import pytest

from pacore_agents import Completion, ConfigError, FunctionEngine, GenerationRequest, Usage
from pacore_agents.studies import build_report, parse_study, run_study

BASE = """
name = "two-engines"
seeded = false
[dataset]
kind = "arithmetic"
count = 3
operations = ["+"]
[engine]
kind = "function"
function = "tests.fixtures.handlers:answer"
{default_cost}
[engines.big]
kind = "function"
function = "tests.fixtures.handlers:sampling_echo"
{big_cost}
[sampling]
max_tokens = 16
[[arms]]
name = "small-only"
widths = [2]
[[arms]]
name = "big-sink"
widths = [2]
roles = {{ sink = {{ engine = "big" }} }}
"""


def _spec(default_cost: str = "", big_cost: str = "", extra: str = "") -> str:
    return BASE.format(default_cost=default_cost, big_cost=big_cost) + extra


def test_engines_tables_and_rebinding_arms_parse() -> None:
    spec = parse_study(_spec())
    assert set(spec.engines) == {"big"} and spec.engines["big"].kind == "function"
    arm = spec.arms[1]
    assert arm.build_roles(arm.build_topology())["sink"].engine == "big"
    with pytest.raises(ConfigError, match=r"runs on engine 'huge', which the study does not declare: add an \[engines\.huge\]"):
        parse_study(_spec(extra='[[arms]]\nname = "x"\nwidths = [2]\nroles = { sink = { engine = "huge" } }\n'))
    with pytest.raises(ConfigError, match=r"\[engines\.default\]: the default engine is the \[engine\] table"):
        parse_study(_spec().replace("[engines.big]", "[engines.default]").replace('engine = "big"', 'engine = "default"'))


def test_costs_are_one_kind_for_every_engine_or_none() -> None:
    spec = parse_study(_spec("cost_per_1k_tokens = 0.1", "cost_per_1k_tokens = 2.0"))
    assert spec.costs["default"].cost_per_1k_tokens == 0.1 and spec.costs["big"].of(500) == 1.0
    flops = parse_study(_spec("active_params = 1.7e9", "active_params = 8e9"))
    assert flops.costs["big"].of(10) == 2 * 8e9 * 10
    with pytest.raises(ConfigError, match="engine 'big' declares no cost"):
        parse_study(_spec("cost_per_1k_tokens = 0.1"))
    with pytest.raises(ConfigError, match="costs of two kinds"):
        parse_study(_spec("cost_per_1k_tokens = 0.1", "active_params = 8e9"))


def test_the_fingerprint_follows_the_engines_that_change_results() -> None:
    one = parse_study(_spec()).fingerprint()
    assert parse_study(_spec("cost_per_1k_tokens = 0.1", "cost_per_1k_tokens = 2.0")).fingerprint() == one
    other = _spec().replace("handlers:sampling_echo", "handlers:broken")
    assert parse_study(other).fingerprint() != one
    single = parse_study(_spec().split("[engines.big]")[0] + "[[arms]]\nname = \"a\"\nwidths = [2]\n")
    assert '"engines"' not in single.fingerprint()  # one-engine studies keep their old fingerprint


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_study_reports_tokens_per_engine_and_cost_and_refuses_changed_engines(tmp_path: Path) -> None:
    text = _spec("cost_per_1k_tokens = 0.1", "cost_per_1k_tokens = 2.0")
    summary = anyio.run(lambda: run_study(parse_study(text), tmp_path / "out"))
    assert summary.ran == 6 and not summary.failed
    report = build_report(tmp_path / "out", plots=False)
    tokens = _rows(tmp_path / "out" / "report" / "engine_tokens.csv")
    by = {(r["arm"], r["engine"], r["role"]): r for r in tokens}
    assert set(by) == {("big-sink", "big", "sink"), ("big-sink", "default", "explorer"),
                       ("small-only", "default", "explorer"), ("small-only", "default", "sink")}
    for arm in ("small-only", "big-sink"):
        ttc = next(m.mean_ttc for m in report.metrics if m.label == arm)
        assert sum(float(r["completion_tokens"]) for r in tokens if r["arm"] == arm) == pytest.approx(ttc)
    sink = by[("big-sink", "big", "sink")]
    want = (float(sink["completion_tokens"]) + float(sink["prompt_tokens"])) / 1000 * 2.0
    assert float(sink["cost"]) == pytest.approx(want)
    cost = {r["arm"]: r for r in _rows(tmp_path / "out" / "report" / "cost.csv")}
    assert set(cost) == {"small-only", "big-sink"} and cost["big-sink"]["cost_unit"] == "price"
    assert float(cost["big-sink"]["mean_cost"]) > float(cost["small-only"]["mean_cost"])  # the pricier sink
    changed = text.replace("handlers:sampling_echo", "handlers:answer")
    with pytest.raises(ConfigError, match="differs in: engines"):
        anyio.run(lambda: run_study(parse_study(changed), tmp_path / "out"))


def test_an_engine_that_reports_no_usage_fails_its_units(tmp_path: Path) -> None:
    def silent(request: GenerationRequest) -> list[Completion]:
        return [Completion(content="\\boxed{1}", usage=Usage()) for _ in range(request.n)]

    spec = parse_study(_spec())
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engines={"big": FunctionEngine(silent)}))
    assert summary.ran == 3 and len(summary.failed) == 3
    assert all("engine 'big' reported no usage for node r2.a0" in f for f in summary.failed)
