"""Code rewards: a small code study (FunctionEngine, the generated code tasks) exported, every
row's reward recomputed by ``compute_score`` / ``acompute_score`` / ``trl_reward`` /
``reward_func`` against the pass rate and grade the study stored; hostile programs in
``solution_str`` contained by the sandbox; bad grading settings refused in one line."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pyarrow.parquet as pq
import pytest

from pacore_agents import ConfigError, FunctionEngine
from pacore_agents.execution import _sandbox, bwrap_path
from pacore_agents.studies import (
    ExportOptions,
    close_rewards,
    compute_score,
    configure_rewards,
    export_study,
    parse_study,
    reward_func,
    run_study,
    trl_reward,
)
from pacore_agents.studies._rewards import acompute_score, score_batch

from .test_studies_code import SPEC, CodeModel, fenced

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
#: add, subtract, multiply, square right; is_even wrong on one test of five (pass rate 0.8)
STUDY = (SPEC.format(extra="").replace("count = 6", "count = 5")
         .split("[[arms]]\nname = \"single\"")[0])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("code-export") / "study"
    summary = anyio.run(lambda: run_study(parse_study(STUDY), out, spec_text=STUDY,
                                          engine=FunctionEngine(CodeModel())))
    assert summary.failed == []
    yield out
    close_rewards()


@pytest.fixture(scope="module")
def exported(study: Path) -> Path:
    out = study.parent / "exp"
    export_study([study], out, ExportOptions(formats=["verl", "trl", "sft", "openrlhf", "pacore"]))
    return out


def _rows(out: Path, fmt: str) -> list[dict[str, Any]]:
    return list(pq.read_table(out / "data" / fmt / "train.parquet").to_pylist())


def _stored(study: Path) -> tuple[dict[tuple[str, str, int, str], str], dict[tuple[str, str, int, str], dict[str, Any]]]:
    """(content, stored node outcome) per (arm, problem, sample, node), read with sqlite."""
    conn = sqlite3.connect(study / "results.sqlite")
    contents, outcomes = {}, {}
    for arm, pid, sample, outcome, trace in conn.execute(
            "SELECT arm, problem_id, sample, outcome_json, trace_json FROM results"):
        for nd in json.loads(outcome)["nodes"]:
            outcomes[(arm, pid, sample, nd["id"])] = nd
        for rec in json.loads(trace)["nodes"]:
            contents[(arm, pid, sample, rec["id"])] = rec["content"]
    conn.close()
    return contents, outcomes


def test_every_rows_code_reward_is_the_pass_rate_the_study_stored(study: Path, exported: Path) -> None:
    contents, stored = _stored(study)
    verl = _rows(exported, "verl")
    assert verl and {r["data_source"] for r in verl} == {"pacore/code/code-tasks"}
    assert {r["ability"] for r in verl} == {"code"}
    grading = json.loads(verl[0]["extra_info"]["grading"])
    assert grading == {"grader": "code", "code": {"mode": "lcb", "test_timeout": 1.0, "sample_timeout": 8.0,
                                                  "limits": grading["code"]["limits"]}}
    keys = [(r["extra_info"]["arm"], r["extra_info"]["problem_id"], r["extra_info"]["sample"],
             r["extra_info"]["node"]) for r in verl]
    expected = [float(stored[k]["pass_rate"]) for k in keys]
    assert 0.8 in expected and 1.0 in expected  # a partly right program and right ones
    for row, key, want in zip(verl, keys, expected, strict=True):
        score = compute_score(row["data_source"], contents[key], row["reward_model"]["ground_truth"], row["extra_info"])
        assert score == want, key
        assert (score == 1.0) == (stored[key]["status"] == "correct") == (row["extra_info"]["stored_grade"] == "correct")

    async def scores_async() -> list[float]:
        return [await acompute_score(r["data_source"], contents[k], r["reward_model"]["ground_truth"], r["extra_info"])
                for r, k in zip(verl[:3], keys[:3], strict=True)]
    assert anyio.run(scores_async) == expected[:3]

    trl = _rows(exported, "trl")
    completions = [[{"role": "assistant", "content": contents[(r["arm"], r["problem_id"], r["sample"], r["node"])]}]
                   for r in trl]
    columns = {c: [r[c] for r in trl] for c in ("ground_truth", "data_source", "grading", "prompt")}
    assert trl_reward(completions, **columns) == [
        float(stored[(r["arm"], r["problem_id"], r["sample"], r["node"])]["pass_rate"]) for r in trl]

    orl = _rows(exported, "openrlhf")
    assert all(json.loads(r["label"])["ground_truth"] == v["reward_model"]["ground_truth"]
               for r, v in zip(orl, verl, strict=True))
    prompts = ["<|user|>" + r["prompt"][-1]["content"] + "<|assistant|>" for r in orl]
    queries = [p + contents[(r["arm"], r["problem_id"], r["sample"], r["node"])] for p, r in zip(prompts, orl, strict=True)]
    result = reward_func(queries, prompts, [r["label"] for r in orl])
    assert [float(x) for x in result["rewards"]] == pytest.approx([  # float32 tensors when torch is there
        float(stored[(r["arm"], r["problem_id"], r["sample"], r["node"])]["pass_rate"]) for r in orl], rel=1e-6)

    for row in _rows(exported, "sft"):  # the stored correct syntheses
        assert compute_score(row["data_source"], row["messages"][-1]["content"], row["ground_truth"],
                             {"grading": row["grading"]}) == 1.0
    pool = _rows(exported, "pacore")[0]  # add: the pool's programs, right and wrong
    scores = score_batch([pool["data_source"]] * len(pool["responses"]), pool["responses"],
                         [pool["ground_truth"]] * len(pool["responses"]), [pool["grading"]] * len(pool["responses"]))
    assert [s == 1.0 for s in scores] == [g == "correct" for g in pool["response_grades"]]
    assert {"correct", "wrong"} <= set(pool["response_grades"])


def test_the_reward_grades_with_the_rows_settings_not_the_defaults(exported: Path) -> None:
    """A program that takes 1.5 s per test: over the study's 1 s limit (the row), inside the
    default 6 s one (no settings)."""
    row = next(r for r in _rows(exported, "verl") if r["extra_info"]["problem_id"] == "code-0")
    slow = fenced("import time\ndef add(a, b):\n    time.sleep(1.5)\n    return a + b")
    gold = row["reward_model"]["ground_truth"]
    assert compute_score(row["data_source"], slow, gold, row["extra_info"]) == 0.0
    assert compute_score(row["data_source"], slow, gold) == 1.0


HOSTILE = {
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "endless loop": "def add(a, b):\n    while True:\n        pass",
    "writes outside": "open({marker!r}, 'w').write('escaped')\ndef add(a, b):\n    return a + b",
    "reads home": "import os\nprint(os.listdir({home!r}))\ndef add(a, b):\n    return a + b",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\ndef add(a, b):\n    return a + b",
    "kills parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef add(a, b):\n    return a + b",
    "memory": "x = bytearray(1 << 40)\ndef add(a, b):\n    return a + b",
}


def _children() -> set[int]:
    """Our running descendants (zombies are not: the suite's subreaper adopts every orphan)."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def test_a_hostile_program_in_solution_str_is_contained(exported: Path, tmp_path: Path) -> None:
    row = next(r for r in _rows(exported, "verl") if r["extra_info"]["problem_id"] == "code-0")
    marker = tmp_path / "escaped.txt"
    before = _children()
    for name, code in HOSTILE.items():
        program = code.format(marker=str(marker), home=str(Path.home()))
        started = time.monotonic()
        score = compute_score(row["data_source"], fenced(program), row["reward_model"]["ground_truth"], row["extra_info"])
        # the study's budget (8 s per sample) bounds every program; a wall-clock margin for a loaded machine
        assert time.monotonic() - started < 60, name
        if name in ("fork bomb", "endless loop", "memory", "network"):
            assert score == 0.0, name
        else:  # the side effect fails or stays in the sandbox; the function itself is right
            assert score in (0.0, 1.0), name
    assert not marker.exists()
    deadline = time.monotonic() + 20  # a killed sandbox's processes take a moment to be reaped
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _children() - before  # nothing a program started outlived its sandbox
    # the sandbox still grades after all of them
    assert compute_score(row["data_source"], fenced("def add(a, b):\n    return a + b"),
                         row["reward_model"]["ground_truth"], row["extra_info"]) == 1.0


def test_bad_code_reward_input_says_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not a CodeTests JSON"):
        compute_score("pacore/code/apps", "print(1)", "[]")
    tests = json.dumps({"kind": "stdin", "tests": [{"input": "1\n", "output": "1\n"}]})
    with pytest.raises(ConfigError, match="grading settings are not valid"):
        compute_score("pacore/code/apps", "print(1)", tests, {"grading": '{"grader": "math", "timeout": 5}'})
    with pytest.raises(ConfigError, match="grading settings are not valid"):
        compute_score("pacore/code/apps", "print(1)", tests, {"grading": '{"grader": "code", "code": {"mode": "x"}}'})
    row = {"grading": json.dumps({"grader": "code", "code": {"sandbox": "none", "test_timeout": 2.0}})}
    assert compute_score("code", fenced("print(input())"), tests, row) == 1.0
    assert compute_score("code", "no code block here", tests, row) == 0.0
    # a row may not switch the isolation off: its sandbox key is ignored, bubblewrap is required
    monkeypatch.setattr(_sandbox, "bwrap_path", lambda: None)
    with pytest.raises(ConfigError, match="bubblewrap"):
        compute_score("code", fenced("print(input())"), tests, row)


def test_no_sandbox_is_the_trainers_loud_choice(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pacore_agents")
    tests = json.dumps({"kind": "stdin", "tests": [{"input": "3\n", "output": "3\n"}]})
    monkeypatch.setattr(_sandbox, "bwrap_path", lambda: None)
    try:
        configure_rewards(sandbox="none")
        assert "WITHOUT A SANDBOX" in caplog.text
        assert compute_score("code", fenced("print(input())"), tests) == 1.0
    finally:
        configure_rewards()
    with pytest.raises(ConfigError, match="bubblewrap"):  # back to the sandbox, which is missing here
        compute_score("code", fenced("print(input())"), tests)
    with pytest.raises(ConfigError, match="use 'bwrap' or 'none'"):
        configure_rewards(sandbox="docker")
