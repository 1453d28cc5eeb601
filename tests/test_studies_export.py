"""Studies become training data: exports of a small FunctionEngine study, read back with pyarrow
and ``datasets`` (offline), rewards recomputed against the stored grades, the filters against an
independent computation, redraws against the pinned format, secrets/paths, failures, bad input."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pyarrow.parquet as pq
import pytest

from pacore_agents import ConfigError, EngineError, FunctionEngine, GenerationRequest
from pacore_agents._ids import ProblemId
from pacore_agents._messages import ChatMessage, Problem
from pacore_agents._roles import pacore_compact
from pacore_agents.studies import (
    ExportOptions,
    close_rewards,
    compute_score,
    export_study,
    parse_study,
    reward_func,
    run_study,
    trl_reward,
)
from pacore_agents.studies._curation import (
    PAPER_REFERENCE_BANDS,
    PAPER_SYNTHESIS_BAND,
    CurationOptions,
    curate,
    render_draw,
)
from pacore_agents.studies._episodes import Episode, PoolResponse, ProblemMaterial, StudyMaterial

os.environ["HF_DATASETS_OFFLINE"] = "1"
KEY = "sk-exportSECRETkey0123456789"
CRED = "alice:pw-export-SECRET-77"
PROBLEMS, SAMPLES = 5, 2
FAILING = "q4"  # its round-1 node r1.a1 fails in every sample
ALL = ["verl", "trl", "sft", "dpo", "openrlhf", "pacore"]


def _handler(leak: str):  # type: ignore[no-untyped-def]
    def handler(request: GenerationRequest) -> list[str]:
        pid = str(request.metadata.problem_id)
        gold = int(pid[1:]) + 2
        out = []
        for node in request.metadata.nodes[: request.n]:
            if node.round == 1:
                if pid == FAILING and node.agent == 1:
                    raise EngineError("injected failure", retryable=False)
                right = node.agent < int(pid[1:]) % 4 + 1  # pool accuracy differs per problem
                out.append(f"<think>try {node.agent} {leak}</think>so \\boxed{{{gold if right else gold + 1}}}")
            else:
                right = node.agent % 2 == 0
                out.append(f"<think>refs {leak} {KEY}</think>final \\boxed{{{gold if right else 99}}}")
        return out
    return handler


def _spec(data: Path, widths: str = "[4, 2]", samples: int = SAMPLES, single: bool = True) -> str:
    arms = f'[[arms]]\nname = "w4"\nwidths = {widths}\nmerge_identical = false\n'
    if single:
        arms += '[[arms]]\nname = "single"\nbaseline = "single"\n'
    return f"""
name = "tiny"
samples = {samples}
[engine]
kind = "openai"
base_urls = ["http://{CRED}@localhost:9/v1"]
api_key = "{KEY}"
[dataset]
path = "{data}"
id_field = "id"
{arms}"""


def _run(tmp: Path, **kw: Any) -> Path:
    data = tmp / "problems.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i}+2?", "answer": str(i + 2), "id": f"q{i}"}) + "\n"
                            for i in range(PROBLEMS)))
    text = _spec(data, **kw)
    out = tmp / "study"
    summary = anyio.run(lambda: run_study(parse_study(text), out, spec_text=text,
                                          engine=FunctionEngine(_handler(f"{out} {Path.home()}/.config/x"))))
    assert summary.failed == [] and summary.ran > 0
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _run(tmp_path_factory.mktemp("export"))
    close_rewards()


@pytest.fixture(scope="module")
def exported(study: Path) -> Path:
    out = study.parent / "exp"
    export_study([study], out, ExportOptions(formats=ALL, draw_m=(2, 3), draws=2))
    return out


def _rows(out: Path, fmt: str, split: str = "train") -> list[dict[str, Any]]:
    return list(pq.read_table(out / "data" / fmt / f"{split}.parquet").to_pylist())


def _stored(study: Path) -> tuple[dict[tuple[str, str, int, str], dict[str, Any]], dict[tuple[str, str, int, str], str]]:
    """(node record, grade) per (arm, problem, sample, node), read from the store with sqlite."""
    conn = sqlite3.connect(study / "results.sqlite")
    records, grades = {}, {}
    for arm, pid, sample, outcome, trace in conn.execute(
            "SELECT arm, problem_id, sample, outcome_json, trace_json FROM results"):
        for nd in json.loads(outcome)["nodes"]:
            grades[(arm, pid, sample, nd["id"])] = nd["status"]
        for rec in json.loads(trace)["nodes"]:
            records[(arm, pid, sample, rec["id"])] = rec
    conn.close()
    return records, grades


def test_each_format_has_the_schema_its_trainer_reads(exported: Path) -> None:
    import datasets

    verl = datasets.load_dataset(str(exported), "verl", split="train")
    assert verl.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    row = verl[0]
    assert row["ability"] == "math" and row["data_source"] == "pacore/math/problems"
    assert set(row["reward_model"]) == {"style", "ground_truth"} and row["reward_model"]["style"] == "rule"
    assert all(set(m) == {"role", "content"} for m in row["prompt"])
    assert not {"num_turns", "rollout_reward_scores"} & set(row["extra_info"])
    assert [r["extra_info"]["index"] for r in verl] == list(range(len(verl)))
    assert {"study", "arm", "problem_id", "node", "references", "reference_grades"} <= set(row["extra_info"])

    trl = datasets.load_dataset(str(exported), "trl", split="train")
    assert trl.column_names[:3] == ["prompt", "ground_truth", "data_source"]
    sft = datasets.load_dataset(str(exported), "sft", split="train")
    assert all(r["messages"][-1]["role"] == "assistant" for r in sft)
    dpo = datasets.load_dataset("parquet", data_files=str(exported / "data/dpo/train.parquet"), split="train")
    assert dpo.column_names[:3] == ["prompt", "chosen", "rejected"] and len(dpo) > 0
    assert all(r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant" for r in dpo)
    orl = datasets.load_dataset(str(exported), "openrlhf", split="train")
    assert {"prompt", "label"} <= set(orl.column_names)
    pac = datasets.load_dataset(str(exported), "pacore", split="train")
    assert pac.column_names[:4] == ["conversation", "responses", "response_grades", "response_ids"]
    assert all(len(r["responses"]) == len(r["response_grades"]) for r in pac)
    assert len(verl) == len(trl) == len(orl)
    summary = json.loads((exported / "export.json").read_text())
    assert summary["rows"]["verl"]["train"] == len(verl) and summary["license"] == "unknown"
    front = (exported / "README.md").read_text().split("---\n")[1]  # the hub's YAML front matter
    assert 'license: "unknown"' in front and 'size_categories:\n- "n<1K"' in front
    assert front.count("- config_name:") == 6 and '    path: "data/verl/train.parquet"' in front


def test_stored_prompts_are_the_traces_and_rewards_equal_the_stored_grades(study: Path, exported: Path) -> None:
    records, grades = _stored(study)
    rows = [r for r in _rows(exported, "verl") if r["extra_info"]["node"] is not None]
    assert rows
    for row in rows:
        info = row["extra_info"]
        key = (info["arm"], info["problem_id"], info["sample"], info["node"])
        rec = records[key]
        assert row["prompt"] == rec["prompt"]
        assert info["stored_grade"] == grades[key]
        for ref, grade in zip(info["references"], info["reference_grades"], strict=True):
            arm, sample, node = ref.split("/")
            assert grades[(arm, info["problem_id"], int(sample[1:]), node)] == grade
        score = compute_score(row["data_source"], rec["content"], row["reward_model"]["ground_truth"], info)
        assert score == (1.0 if grades[key] == "correct" else 0.0), key
    assert {r["extra_info"]["stored_grade"] for r in rows} == {"correct", "wrong"}

    trl = [r for r in _rows(exported, "trl") if r["node"] is not None]
    completions = [[{"role": "assistant", "content": records[(r["arm"], r["problem_id"], r["sample"], r["node"])]["content"]}]
                   for r in trl]
    scores = trl_reward(completions, prompts=[r["prompt"] for r in trl], ground_truth=[r["ground_truth"] for r in trl],
                        data_source=[r["data_source"] for r in trl])
    assert scores == [1.0 if r["stored_grade"] == "correct" else 0.0 for r in trl]
    orl = [r for r in _rows(exported, "openrlhf") if r["node"] is not None]
    prompts = ["<|user|>" + r["prompt"][-1]["content"] + "<|assistant|>" for r in orl]
    queries = [p + records[(r["arm"], r["problem_id"], r["sample"], r["node"])]["content"] for p, r in zip(prompts, orl, strict=True)]
    result = reward_func(queries, prompts, [r["label"] for r in orl])
    assert [float(x) for x in result["rewards"]] == [1.0 if r["stored_grade"] == "correct" else 0.0 for r in orl]
    for row in _rows(exported, "sft"):
        assert compute_score(row["data_source"], row["messages"][-1]["content"], row["ground_truth"]) == 1.0
    for row in _rows(exported, "dpo"):
        assert compute_score(row["data_source"], row["chosen"][0]["content"], row["ground_truth"]) == 1.0
        assert compute_score(row["data_source"], row["rejected"][0]["content"], row["ground_truth"]) == 0.0


def test_no_secret_and_no_path_of_this_machine_in_any_exported_file(study: Path, exported: Path) -> None:
    forbidden = [KEY, CRED, "pw-export-SECRET", str(study), str(study.parent), os.getcwd(), str(Path.home()) + "/"]
    texts = []
    for path in sorted(exported.rglob("*")):
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False))
        elif path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    assert len(texts) == 8  # 6 formats, README.md, export.json
    for text in texts:
        for bad in forbidden:
            assert bad not in text, bad
    summary = json.loads((exported / "export.json").read_text())
    assert summary["scrubbed_secrets"] > 0 and summary["scrubbed_paths"] > 0  # the handler leaked both


def test_episodes_built_on_a_failed_reference_are_counted_not_exported(study: Path, exported: Path) -> None:
    summary = json.loads((exported / "export.json").read_text())
    assert summary["counts"]["failed_references"] == SAMPLES * 2  # the two round-2 nodes per sample
    assert summary["counts"]["failed_pool_responses"] == SAMPLES  # r1.a1 of q4, once per sample
    assert all(not r["extra_info"]["missing_references"] for r in _rows(exported, "verl"))
    pool = next(r for r in _rows(exported, "pacore") if r["problem_id"] == FAILING)
    assert not any(i.endswith("/r1.a1") and i.startswith("w4/") for i in pool["response_ids"])
    kept = study.parent / "exp-degraded"
    again = export_study([study], kept, ExportOptions(formats=["verl"], include_degraded=True))
    assert again.counts.degraded_kept == SAMPLES * 2 and again.counts.failed_references == 0
    degraded = [r for r in _rows(kept, "verl") if r["extra_info"]["missing_references"]]
    assert len(degraded) == SAMPLES * 2
    assert all(r["extra_info"]["missing_references"] == [f"w4/s{r['extra_info']['sample']}/r1.a1"] for r in degraded)


def _material(rng: random.Random, n: int) -> StudyMaterial:
    problems = {}
    for i in range(n):
        pid = f"p{i}"
        prob = ProblemMaterial(Problem(id=ProblemId(pid), messages=(ChatMessage(role="user", content=f"{pid}?"),),
                                       answer="1"))
        prob.pool = [PoolResponse(f"a/s0/r1.a{j}", f"c{j}", f"c{j}", rng.choice(["correct", "wrong", "wrong", "timeout"]))
                     for j in range(24)]
        for j in range(rng.randint(0, 6)):
            missing = ("a/s0/r1.a0",) if rng.random() < 0.15 else ()
            prob.episodes.append(Episode("a", pid, 0, f"r2.a{j}", 2, prob.problem.messages, None if rng.random() < 0.1 else "x",
                                         rng.choice(["correct", "wrong", "failed"]), (), (), missing))
        problems[pid] = prob
    return StudyMaterial(name="s", folder="f", dataset="d", domain="math", license="mit", problems=problems, arms=["a"])


def test_filter_counts_match_an_independent_computation() -> None:
    rng = random.Random(7)
    study = _material(rng, 300)
    kept, counts = curate([study], CurationOptions(reference_bands=PAPER_REFERENCE_BANDS,
                                                   synthesis_band=PAPER_SYNTHESIS_BAND, draw_m=(16, 24), draws=3))
    expect = {"failed_episodes": 0, "failed_references": 0, "stage1": 0, "stage2": 0}
    survivors = []
    for pid, prob in study.problems.items():
        usable = []
        for ep in prob.episodes:
            if ep.status == "failed" or ep.response is None:
                expect["failed_episodes"] += 1
            elif ep.missing_references:
                expect["failed_references"] += 1
            else:
                usable.append(ep)
        right = sum(r.status == "correct" for r in prob.pool)
        graded = sum(r.status in ("correct", "wrong") for r in prob.pool)
        if not (graded and 0 < right / graded < 9 / 24):
            expect["stage1"] += 1
            continue
        s_right = sum(e.status == "correct" for e in usable)
        s_graded = sum(e.status in ("correct", "wrong") for e in usable)
        if not (s_graded and 0 < s_right / s_graded < 1):
            expect["stage2"] += 1
            continue
        survivors.append(pid)
    assert counts.failed_episodes == expect["failed_episodes"] and counts.failed_references == expect["failed_references"]
    assert counts.stage1_problems == expect["stage1"] > 0 and counts.stage2_problems == expect["stage2"] > 0
    assert [str(k.material.problem.id) for k in kept] == survivors and survivors
    assert counts.problems == 300 and counts.draws == 3 * len(survivors)
    for item in kept:
        for ep in item.drawn:
            assert 16 <= len(ep.references) <= 24 and len(set(ep.references)) == len(ep.references)
    def drawn(seed: int) -> list[tuple[str, ...]]:
        items, _ = curate([study], CurationOptions(reference_bands=PAPER_REFERENCE_BANDS, synthesis_band=PAPER_SYNTHESIS_BAND,
                                                   draw_m=(16, 24), draws=3, seed=seed))
        return [e.references for k in items for e in k.drawn]

    assert drawn(0) == [e.references for k in kept for e in k.drawn]  # deterministic in the seed
    assert drawn(1) != drawn(0)


def test_a_draw_renders_the_pinned_format_byte_for_byte(golden: dict[str, Any]) -> None:
    for case in golden["cases"]:
        prob = ProblemMaterial(Problem(messages=(ChatMessage(role="user", content=case["problem"]),), answer="1"))
        pool = [PoolResponse(f"x/s0/r1.a{i}", c, pacore_compact(c), "wrong")
                for i, c in enumerate(case["round_contents_in_completion_order"])]
        episode = render_draw(prob, pool, 0)
        assert episode.prompt[-1].content == case["rendered_user_message"]


def test_a_full_draw_is_the_prompt_the_study_sent(tmp_path: Path) -> None:
    study = _run(tmp_path, widths="[4]", samples=1, single=False)
    out = tmp_path / "exp"
    summary = export_study([study], out, ExportOptions(formats=["trl"], draw_m=(4, 4)))
    rows = _rows(out, "trl")
    for pid in {r["problem_id"] for r in rows} - {FAILING}:
        stored = [r for r in rows if r["problem_id"] == pid and r["node"] is not None]
        drawn = [r for r in rows if r["problem_id"] == pid and r["draw"] is not None]
        assert len(stored) == len(drawn) == 1 and drawn[0]["prompt"] == stored[0]["prompt"]
        assert drawn[0]["references"] == stored[0]["references"]
    assert summary.counts.draw_skipped_problems == 1  # q4's pool lost a trajectory: 3 < 4
    close_rewards()


def test_splits_are_by_problem(study: Path) -> None:
    out = study.parent / "exp-split"
    summary = export_study([study], out, ExportOptions(formats=["verl"], test_fraction=0.5, seed=3))
    train, test = _rows(out, "verl", "train"), _rows(out, "verl", "test")
    assert train and test and summary.rows["verl"] == {"train": len(train), "test": len(test)}
    assert not {r["extra_info"]["problem_id"] for r in train} & {r["extra_info"]["problem_id"] for r in test}
    assert {r["extra_info"]["split"] for r in test} == {"test"}
    import datasets

    assert len(datasets.load_dataset(str(out), "verl", split="test")) == len(test)


def test_several_study_folders_export_together(study: Path, tmp_path: Path) -> None:
    second = _run(tmp_path, widths="[4]", samples=1, single=False).rename(tmp_path / "second")
    out = tmp_path / "both"
    summary = export_study([study, second], out, formats=["trl", "pacore"])
    assert summary.studies == ["study", "second"]
    assert [r["study_folder"] for r in _rows(out, "pacore")] == ["study"] * PROBLEMS + ["second"] * PROBLEMS
    assert {r["study_folder"] for r in _rows(out, "trl")} == {"study", "second"}
    same_name = _run(tmp_path / "x") if (tmp_path / "x").mkdir() is None else None
    assert same_name is not None
    with pytest.raises(ConfigError, match="share a name"):
        export_study([study, same_name], tmp_path / "clash", formats=["trl"])
    assert not (tmp_path / "clash").exists()


def test_bad_input_is_one_clear_error_and_nothing_is_clobbered(study: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a study folder"):
        export_study([tmp_path], tmp_path / "o", ExportOptions(formats=["verl"]))
    with pytest.raises(ConfigError, match="unknown export format 'parquet'"):
        ExportOptions.of(formats=["parquet"])
    with pytest.raises(ConfigError, match="0 <= LOW < HIGH <= 1"):
        ExportOptions.of(formats=["verl"], synthesis_band=(0.5, 0.2))
    with pytest.raises(ConfigError, match="the domains are math, code"):
        ExportOptions.of(formats=["verl"], reference_bands={"maths": (0.0, 0.5)})
    with pytest.raises(ConfigError, match="export option draws"):
        export_study([study], tmp_path / "o", formats=["verl"], draws=0)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists: choose a new OUT folder, or pass --force"):
        export_study([study], mine, ExportOptions(formats=["verl"]))
    with pytest.raises(ConfigError, match="did not write"):
        export_study([study], mine, ExportOptions(formats=["verl"], force=True))
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    first = tmp_path / "again"
    export_study([study], first, ExportOptions(formats=["verl", "sft"]))
    export_study([study], first, ExportOptions(formats=["trl"], force=True))  # an earlier export: replaced
    assert sorted(p.name for p in (first / "data").iterdir()) == ["trl"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.raises(ConfigError, match="names no pacore_agents grader"):
        compute_score("openai/gsm8k", "1", "1")
    with pytest.raises(ConfigError, match="not a CodeTests JSON"):
        compute_score("pacore/code/apps", "print(1)", "[]")


def test_every_known_format_has_a_builder_and_a_schema() -> None:
    from pacore_agents.studies._export import KNOWN_FORMATS
    from pacore_agents.studies._export_rows import BUILDERS, SCHEMAS

    assert list(BUILDERS) == list(SCHEMAS) == list(KNOWN_FORMATS) == ALL


def test_trainers_can_load_the_reward_file_by_its_path() -> None:
    """verl (custom_reward_function.path) and OpenRLHF (--remote_rm_url) import the file by path."""
    import importlib.util

    import pacore_agents.studies._rewards as rewards

    spec = importlib.util.spec_from_file_location("custom_module", rewards.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        assert module.compute_score("pacore/math/x", "<think>\\boxed{3}</think> it is \\boxed{4}", "4") == 1.0
        assert module.compute_score("pacore/math/x", "<think>\\boxed{4}</think> it is \\boxed{3}", "4") == 0.0
        assert module.score_batch(["math"] * 3, ["\\boxed{1}", "\\boxed{2}", ""], ["1", "1", "1"]) == [1.0, 0.0, 0.0]
    finally:
        module.close_rewards()
