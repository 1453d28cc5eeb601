"""Study specs (unknown keys named, arms validated) and the results store (unique rows,
spec saved, a different spec into the same out dir refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacore_agents import ConfigError
from pacore_agents.studies import ResultStore, SampleOutcome, load_study, parse_study

BASE = """
[dataset]
name = "gsm8k"
limit = 2
[[arms]]
name = "low"
topology = "pacore-low"
"""


def test_example_spec_is_valid() -> None:
    spec = load_study(Path(__file__).resolve().parent.parent / "examples" / "study_gsm8k.toml")
    assert [a.name for a in spec.arms] == ["single", "self-consistency", "pacore-low", "ring"]
    assert spec.engine.kind == "vllm" and spec.engine.model is None
    assert spec.dataset.limit == 10 and spec.sampling.max_tokens == 192


@pytest.mark.parametrize(("extra", "message"), [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[engine]\nkind = \"vllm\"\nmodle = \"x\"\n", "takes no option 'modle'"),
    ("[sampling]\ntemprature = 1.0\n", "unknown key 'sampling.temprature'"),
    ("[[arms]]\nname = \"x\"\nwidths = [2]\ntopolgy = \"ring\"\n", "unknown key 'arms.1.topolgy'"),
])
def test_unknown_keys_are_named(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study(extra + BASE if not extra.startswith("[") else BASE + extra)


@pytest.mark.parametrize(("arms", "message"), [
    ("[[arms]]\nname = \"low\"\nwidths = [2]\n", "unique"),
    ("[[arms]]\nname = \"x\"\n", "exactly one of topology or widths"),
    ("[[arms]]\nname = \"x\"\nwidths = [2]\ntopology = \"ring\"\n", "exactly one of topology or widths"),
    ("[[arms]]\nname = \"x\"\nbaseline = \"single\"\nwidths = [2]\n", "takes no widths"),
    ("[[arms]]\nname = \"x\"\nbaseline = \"self-consistency\"\nmatch = [\"nope\"]\n", "match names 'nope'"),
    ("[[arms]]\nname = \"x\"\ntopology = \"no-such-topology\"\n", "unknown topology"),
    ("[[arms]]\nname = \"x\"\ntopology = \"ring\"\nparams = {wdth = 3}\n", "unknown parameter 'wdth'"),
])
def test_bad_arms(arms: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study(BASE + arms)


def test_self_consistency_needs_a_budget() -> None:
    text = "[dataset]\nname = \"gsm8k\"\n[[arms]]\nname = \"sc\"\nbaseline = \"self-consistency\"\n"
    with pytest.raises(ConfigError, match="add one, or give n"):
        parse_study(text)
    assert parse_study(text + "n = [4, 8]\n").arms[0].n == [4, 8]


def test_arm_run_config_and_compaction() -> None:
    spec = parse_study(BASE + "[[arms]]\nname = \"r\"\ntopology = \"ring\"\nparams = {width = 3, rounds = 2}\n"
                       "compaction = \"boxed\"\norder = \"graph\"\nsampling = {max_tokens = 50}\n")
    arm = spec.arms[1]
    topo = arm.build_topology()
    assert topo.widths == [3, 3, 1]
    assert {r.compaction for r in arm.build_roles(topo).values()} == {"boxed"}
    cfg = spec.run_config(arm, sample=1)
    assert cfg.order == "graph" and cfg.sampling.max_tokens == 50 and cfg.sampling.temperature == 1.0
    assert cfg.seed != spec.run_config(arm, sample=0).seed
    assert cfg.retry == spec.retry


def _outcome(arm: str, pid: str, sample: int) -> SampleOutcome:
    return SampleOutcome(arm=arm, problem_id=pid, sample=sample, kind="single", status="wrong",
                         effective_ttc=3, nodes=[])


def test_store_unique_rows_and_spec_guard(tmp_path: Path) -> None:
    spec = parse_study(BASE)
    store = ResultStore.open(tmp_path, spec, BASE)
    assert store.put(_outcome("low", "a", 0), "{}") is True
    assert store.put(_outcome("low", "a", 0), "{}") is False  # never duplicated
    assert store.put(_outcome("low", "a", 1), "{}") is True
    store.close()
    assert (tmp_path / "study.toml").read_text() == BASE
    # same spec (volatile knobs may differ): reopens with the data
    again = ResultStore.open(tmp_path, parse_study("[grading]\nworkers = 3\n" + BASE), "x")
    assert again.done_keys() == {("low", "a", 0), ("low", "a", 1)}
    again.close()
    assert (tmp_path / "study.toml").read_text() == BASE  # the saved spec is not overwritten
    with pytest.raises(ConfigError, match=r"different spec \(differs in: dataset.limit"):
        ResultStore.open(tmp_path, parse_study(BASE.replace("limit = 2", "limit = 3")), "y")
    with pytest.raises(ConfigError, match="differs in: samples"):
        ResultStore.open(tmp_path, parse_study("samples = 2\n" + BASE), "y")
    kept = ResultStore.open(tmp_path)
    assert len(kept.outcomes()) == 2
    kept.close()


def test_report_on_empty_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no study results"):
        ResultStore.open(tmp_path / "nothing")
