"""[[sweep]] tables expand into named topology arms (deterministic, unique names; unknown keys
and unnamed axes are errors); self-consistency can match a whole sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacore_agents import ConfigError
from pacore_agents.studies import parse_study
from pacore_agents.studies._spec import StudySpec

HEAD = '[dataset]\nkind = "arithmetic"\ncount = 3\n'

GRID = HEAD + """
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc"
baseline = "self-consistency"
match = ["wide"]
[[sweep]]
name = "w{widths}-t{sink_temperature}"
label = "wide"
arm = { compaction = "boxed", sampling = { max_tokens = 64 } }
widths = [[4], [8], [16, 4]]
role_temperature = { sink = [0.3, 1.0] }
[[sweep]]
name = "ring{width}-{order}"
arm = { topology = "ring", params = { rounds = 2 } }
params = { width = [3, 5] }
order = ["pacore", "graph"]
"""


def test_grid_expands_into_named_arms() -> None:
    spec = parse_study(GRID)
    names = [a.name for a in spec.arms]
    assert names == ["single", "sc", "w4-t0.3", "w4-t1", "w8-t0.3", "w8-t1", "w16x4-t0.3", "w16x4-t1",
                     "ring3-pacore", "ring3-graph", "ring5-pacore", "ring5-graph"]
    by = {a.name: a for a in spec.arms}
    arm = by["w16x4-t0.3"]
    assert arm.widths == [16, 4] and arm.compaction == "boxed" and arm.sweep == "wide"
    assert arm.sweep_point == {"widths": [16, 4], "sink_temperature": 0.3}
    assert arm.sampling is not None and arm.sampling.max_tokens == 64
    roles = arm.build_roles(arm.build_topology())
    assert roles["sink"].sampling is not None and roles["sink"].sampling.temperature == 0.3
    assert roles["sink"].template is not None  # the synthesis template is kept
    ring = by["ring5-graph"]
    assert ring.topology == "ring" and ring.params == {"rounds": 2, "width": 5} and ring.order == "graph"
    assert ring.build_topology().widths == [5, 5, 1] and ring.sweep == "ring{width}-{order}"
    assert by["sc"].match == names[2:8]  # the sweep's label names its arms
    assert spec.sweep == []
    # the dump (the store's fingerprint) validates again to the same arms, with no re-expansion
    again = StudySpec.model_validate(json.loads(spec.model_dump_json()))
    assert [a.name for a in again.arms] == names and parse_study(GRID) == spec


@pytest.mark.parametrize(("sweep", "message"), [
    ('name = "x"\nwidths = [[2], [3]]\n', r"the axis widths has several values: put \{widths\} in the name"),
    ('name = "x{foo}"\nwidths = [[2]]\n', r"name has \{foo\}, which is not an axis \(widths\)"),
    ('name = "x{widths}"\nwidths = [[2]]\nbogus = 1\n', "unknown key 'sweep.0.bogus'"),
    ('name = "x{widths}"\nwidths = [[2]]\narm = { bogus = 1 }\n', "sweep 'x{widths}', arm 'x2': unknown key 'bogus'"),
    ('name = "x{temperature}"\ntemperature = [0.5]\n', "give exactly one of topology or widths"),
    ('name = "x/{widths}"\nwidths = [[2]]\n', "may only use letters"),
    ('name = "r{width}"\narm = { topology = "ring" }\nparams = { wdth = [3] }\n', "not an axis"),
    ('name = "r{wdth}"\narm = { topology = "ring" }\nparams = { wdth = [3] }\n', "unknown parameter 'wdth'"),
    ('name = "x"\narm = { widths = [2] }\n', "give at least one axis"),
    ('name = "x{widths}"\nwidths = []\n', "sweep.0.widths"),
])
def test_bad_sweeps(sweep: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study(HEAD + "[[sweep]]\n" + sweep)


def test_duplicate_names_across_sweeps_and_arms() -> None:
    text = HEAD + '[[arms]]\nname = "x2"\nwidths = [2]\n[[sweep]]\nname = "x{widths}"\nwidths = [[2]]\n'
    with pytest.raises(ConfigError, match="'x2' is used twice"):
        parse_study(text)
    with pytest.raises(ConfigError, match="no arms"):
        parse_study(HEAD)


def test_sweep_study_reports_the_scaling_plot_and_key_pairs(tmp_path: Path) -> None:
    """Every trajectory answers 4 tokens; SC is matched to each swept arm's budget; the report
    draws the scaling plot and compares each swept arm with single and its matched SC."""
    import anyio
    from rich.console import Console

    from pacore_agents import FunctionEngine, GenerationRequest
    from pacore_agents.studies import build_report, run_study

    def engine(request: GenerationRequest) -> list[str]:
        return ["w w w \\boxed{0}"] * request.n

    text = "seeded = false\n" + HEAD.replace("count = 3", "count = 4\noperations = [\"-\"]") + """
[engine]
kind = "function"
function = "x:y"
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc"
baseline = "self-consistency"
match = ["w"]
[[sweep]]
name = "w{widths}-t{temperature}"
label = "w"
widths = [[2], [3]]
temperature = [0.5]
"""
    spec = parse_study(text)
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(engine)))
    assert summary.failed == [] and summary.sc_sizes == {"sc": {"w2-t0.5": 3, "w3-t0.5": 4}}
    console = Console(width=200, record=True)
    report = build_report(tmp_path / "out", console=console)
    names = {f.name for f in report.files}
    assert "scaling.png" in names and (tmp_path / "out" / "report" / "scaling.png").stat().st_size > 1000
    out = console.export_text()
    assert "paired comparisons" in out and "effective roles" in out
    pairs = {(p.a, p.b) for p in report.pairs}
    assert ("sc@w2-t0.5", "w2-t0.5") in pairs and ("single", "w3-t0.5") in pairs
    assert report.roles["w2-t0.5"]["sink"]["sampling"] == ""  # the arm's sampling, not a role's


def test_scaling_lines_run_along_graph_axes() -> None:
    """A line of the scaling plot follows widths/topology/params; other axes split lines."""
    from pacore_agents.studies._plots import _line_key

    assert _line_key({"widths": [4], "sink_temperature": 0.3}) == "sink_temperature=0.3"
    assert _line_key({"width": 4, "rounds": 2}) == ""
    assert _line_key({"widths": [16, 4], "compaction": "boxed", "temperature": 1.0}) == "compaction=boxed, temperature=1"
