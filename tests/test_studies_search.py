"""``pacore study search`` on a deterministic FunctionEngine: the Pareto set it must find, the
result cache, resuming after kill -9, two workers on one journal, the held-out re-run, edge
pruning, and bad search files."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from pacore_agents import FunctionEngine, GenerationRequest
from pacore_agents._errors import ConfigError
from pacore_agents.studies._search import run_search
from pacore_agents.studies._search_report import build_search_report
from pacore_agents.studies._search_space import load_search, parse_search

ENGINE = r'''
import os
import re

def answer(request):
    """Round-1 agents answer 4 in three words. A synthesis (its prompt holds references)
    answers right if it ran at temperature <= 0.5 and heard >= 4 references or the problem
    number is even; else 5."""
    text = request.messages[-1].content
    refs = text.count("\\boxed{")
    if refs == 0:
        return ["so it is \\boxed{4}"] * request.n
    number = int(re.search(r"\((\d+)\)", text).group(1))
    right = (request.sampling.temperature or 1.0) <= 0.5 and (refs >= 4 or number % 2 == 0)
    return ["\\boxed{4}" if right else "\\boxed{5}"] * request.n

def handler(request):
    log = os.environ.get("SEARCH_LOG")
    if log:
        import time
        time.sleep(float(os.environ.get("SEARCH_SLEEP", "0")))
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {request.metadata.unit} {request.metadata.round}\n")
    return answer(request)
'''

SEARCH = """
seed = 0
[engine]
kind = "function"
function = "searchfe:handler"
max_sequences = {window}
[dataset]
path = "d.jsonl"
id_field = "id"
[sampling]
temperature = 1.0
[search]
trials = {trials}
search_problems = 8
heldout_problems = 6
seed = 3
patience = {patience}
[[search.dimension]]
name = "graph"
path = "."
choices = [{{ widths = [2] }}, {{ widths = [4] }}, {{ topology = "pacore-low" }}]
[[search.dimension]]
path = "roles.sink.sampling.temperature"
choices = [1.0, 0.3]
"""


def _write(tmp: Path, trials: int = 6, patience: int = 200, window: int = 64) -> Path:
    (tmp / "searchfe.py").write_text(ENGINE)
    (tmp / "d.jsonl").write_text("".join(f'{{"problem": "What is 2+2 ({i})?", "answer": "4", "id": "q{i}"}}\n'
                                         for i in range(16)))
    path = tmp / "search.toml"
    path.write_text(SEARCH.format(trials=trials, patience=patience, window=window))
    return path


@pytest.fixture
def fe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FunctionEngine:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SEARCH_LOG", raising=False)
    (tmp_path / "searchfe.py").write_text(ENGINE)
    import importlib

    module = importlib.import_module("searchfe")
    importlib.reload(module)
    return FunctionEngine(module.handler)


def _units(requests: list[GenerationRequest]) -> Counter[str]:
    return Counter(str(r.metadata.unit) for r in requests)


def test_search_finds_the_pareto_set_caches_repeats_and_confirms(tmp_path: Path, fe: FunctionEngine) -> None:
    spec = load_search(_write(tmp_path))
    out = tmp_path / "out"
    summary = anyio.run(lambda: run_search(spec, out, engine=fe))
    assert summary.evaluated == 6 and summary.failed == []
    assert summary.cached >= 1  # the seeded TPE repeats itself on 6 points: served, not run
    units = _units(fe.requests)
    search_units = {u: n for u, n in units.items() if u.split("|")[0] in {"q" + str(i) for i in range(16)}}
    assert set(search_units.values()) == {2}  # every unit once: round 1 (one request with n) + sink
    report = build_search_report(out)
    confs = {c["arm"]: c for c in report.configurations}
    tables = {a: json.loads(c["table"]) for a, c in confs.items()}
    pareto = {json.dumps({k: v for k, v in t.items() if k != "name"}, sort_keys=True)
              for a, t in tables.items() if confs[a]["pareto"]}
    sink = {"roles": {"sink": {"sampling": {"temperature": 0.3}}}}
    assert pareto == {json.dumps({**sink, "widths": [2]}, sort_keys=True),
                      json.dumps({**sink, "widths": [4]}, sort_keys=True),
                      json.dumps({**sink, "topology": "pacore-low"}, sort_keys=True)}
    ref = next(c for c in report.configurations if c["reference"])
    # the built-in as shipped: pacore-low with the other dimensions at their defaults (T = 1.0)
    assert tables[ref["arm"]] == {"name": ref["arm"], "topology": "pacore-low",
                                  "roles": {"sink": {"sampling": {"temperature": 1.0}}}}
    assert ref["accuracy"] == 0.0 and not ref["pareto"]
    held = [c for c in report.configurations if c["heldout_accuracy"] is not None]
    assert {c["arm"] for c in held} == {a for a, c in confs.items() if c["pareto"]} | {ref["arm"]}
    w4 = next(c for c in held if tables[c["arm"]].get("widths") == [4])
    assert w4["heldout_accuracy"] == 1.0 and w4["heldout_diff"] == 1.0
    w2 = next(c for c in held if tables[c["arm"]].get("widths") == [2])
    assert 0 < w2["heldout_diff"] < 1 and w2["heldout_diff_low"] <= w2["heldout_diff"] <= w2["heldout_diff_high"]
    rows = list(csv.DictReader((out / "report" / "trials.csv").open()))
    assert len(rows) == summary.evaluated + summary.cached
    assert (out / "report" / "pareto.png").stat().st_size > 1000
    assert report.spend["search"]["samples"] == 6 * 8 and report.spend["heldout"]["samples"] == 4 * 6
    # each word is a token: round 1 says 4 per agent, the sink 1; widths [2]: 9, [4]: 17 per sample
    assert report.spend["search"]["completion_tokens"] == 8 * (2 * 9 + 4 * 17)
    before = len(fe.requests)
    again = anyio.run(lambda: run_search(spec, out, engine=fe))
    assert len(fe.requests) == before and again.ran == 0  # all cached, the held-out stored


@pytest.mark.parametrize(("body", "message"), [
    ("[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\n", "search space is empty"),
    ("[search]\ntrials = 0\nsearch_problems = 2\nheldout_problems = 2\n[[search.dimension]]\npath = 'compaction'\n"
     "choices = ['boxed']\n", "trials"),
    ("[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\n[[search.dimension]]\n"
     "path = 'roles.sink.sampling.temprature'\nchoices = [0.3]\n", "unknown key path 'roles.sink.sampling.temprature'"),
    ("[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\n[[search.dimension]]\npath = 'widths'\n"
     "choices = []\n", "choices is empty"),
    ("[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\nbogus = 1\n[[search.dimension]]\n"
     "path = 'widths'\nchoices = [[2]]\n", "unknown key 'bogus'"),
    ("[[arms]]\nname = 'a'\nwidths = [2]\n[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\n", "remove [[arms]]"),
    ("", "no [search] table"),
])
def test_bad_search_files_say_what_to_fix(body: str, message: str) -> None:
    text = '[dataset]\nkind = "arithmetic"\ncount = 4\n[engine]\nkind = "function"\nfunction = "m:f"\n' + body
    with pytest.raises(ConfigError) as info:
        parse_search(text, source="s.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_split_larger_than_the_dataset(tmp_path: Path, fe: FunctionEngine) -> None:
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("search_problems = 8", "search_problems = 12"))
    with pytest.raises(ConfigError, match=r"the splits need 12 \+ 6 problems and the dataset has 16"):
        anyio.run(lambda: run_search(load_search(path), tmp_path / "out", engine=fe))
    assert not (tmp_path / "out").exists()


def test_cli_bad_search_file_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_text(path.read_text().replace('path = "roles.sink.sampling.temperature"',
                                             'path = "roles.sink.sampling.temprature"'))
    proc = subprocess.run([sys.executable, "-m", "pacore_agents", "study", "search", str(path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "temprature" in proc.stderr


def _log(log: Path) -> list[tuple[int, str]]:
    return [(int(line.split()[0]), line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []


def _cmd(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pacore_agents", "study", "search", str(spec), "--out", str(out), "--no-report"]


def _env(tmp: Path, log: Path, sleep: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "SEARCH_LOG": str(log), "SEARCH_SLEEP": sleep}


@pytest.mark.timeout(600)
def test_kill9_mid_search_then_rerun_runs_no_trial_twice(tmp_path: Path) -> None:
    spec, out, log = _write(tmp_path, trials=4, window=2), tmp_path / "out", tmp_path / "calls.log"
    proc = subprocess.Popen(_cmd(spec, out), env=_env(tmp_path, log, "0.05"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(_log(log)) < 24 and time.monotonic() < deadline:  # mid 2nd configuration (16 requests a trial)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = proc.pid
    done_before = _stored(out / "search" / "results.sqlite")
    assert 0 < len(done_before) < 4 * 8
    rerun = subprocess.run(_cmd(spec, out), env=_env(tmp_path, log, "0"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 trials of dead workers finished" in rerun.stdout
    second = Counter(unit for pid, unit in _log(log) if pid != first)
    for problem, arm, sample in done_before:
        assert second[f"{problem}|{arm}|s{sample}"] == 0  # a stored unit never runs again
    assert max(second.values()) == 2  # round 1 + sink, each once
    stored = _stored(out / "search" / "results.sqlite")
    assert len(stored) == len(set(stored)) == 4 * 8


def _stored(db: Path) -> list[tuple[str, str, int]]:
    import sqlite3

    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [(str(a), str(p), int(s)) for a, p, s in conn.execute("SELECT arm, problem_id, sample FROM results")]
    finally:
        conn.close()


@pytest.mark.timeout(600)
def test_two_workers_share_the_journal_and_run_no_unit_twice(tmp_path: Path) -> None:
    spec, out, log = _write(tmp_path, trials=6, window=4), tmp_path / "out", tmp_path / "calls.log"
    env = _env(tmp_path, log, "0.1")  # trials last long enough for both to work
    procs = [subprocess.Popen(_cmd(spec, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=500) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    calls = _log(log)
    assert {pid for pid, _ in calls} == {p.pid for p in procs}  # both worked
    per_unit = Counter(unit for _, unit in calls)
    assert set(per_unit.values()) == {2}  # no unit (search or held-out) ran twice
    assert len(_stored(out / "search" / "results.sqlite")) == 6 * 8
    report = build_search_report(out)
    assert len([c for c in report.configurations if c["pareto"]]) == 3
    assert {t["state"] for t in report.trials} == {"complete"}  # no trial left running or failed


def test_the_arithmetic_example_searches_in_small(tmp_path: Path) -> None:
    """examples/search_arithmetic.toml, shrunk (3 trials, 4 + 2 problems), on a function engine
    that computes the sum or product, wrongly at temperature > 0.8."""

    def handler(request: GenerationRequest) -> list[str]:
        a, op, b = re.search(r"(\d+) ([+*]) (\d+)", request.messages[-1].content).groups()  # type: ignore[union-attr]
        value = int(a) + int(b) if op == "+" else int(a) * int(b)
        wrong = (request.sampling.temperature or 1.0) > 0.8
        return [f"thinking \\boxed{{{value + wrong}}}"] * request.n

    example = Path(__file__).resolve().parent.parent / "examples" / "search_arithmetic.toml"
    spec = load_search(example)
    assert spec.settings.size() == 24
    spec.settings = spec.settings.model_copy(update={"trials": 3, "search_problems": 4, "heldout_problems": 2})
    out = tmp_path / "out"
    summary = anyio.run(lambda: run_search(spec, out, engine=FunctionEngine(handler)))
    assert summary.evaluated == 3 and summary.failed == [] and summary.heldout_arms
    report = build_search_report(out)
    ref = next(c for c in report.configurations if c["reference"])
    assert json.loads(ref["table"])["topology"] == "pacore-low" and ref["heldout_accuracy"] is not None


def test_ranges_and_declared_cost(tmp_path: Path, fe: FunctionEngine) -> None:
    """Float and integer ranges are sampled as such; cost = 'declared' weighs the engine's price."""
    path = _write(tmp_path)
    text = path.read_text().replace('max_sequences = 64', 'max_sequences = 64\ncost_per_1k_tokens = 2.0')
    text = text.replace('patience = 200', 'patience = 200\ncost = "declared"\nsampler = "random"\nbuiltins = false')
    text = text[:text.index('[[search.dimension]]')] + """
[[search.dimension]]
path = "roles.sink.sampling.temperature"
low = 0.2
high = 1.0
[[search.dimension]]
path = "max_message_tokens"
low = 8
high = 64
step = 8
[search.arm]
widths = [2]
"""
    path.write_text(text.replace("trials = 6", "trials = 3"))
    spec = load_search(path)
    assert spec.settings.size() is None
    out = tmp_path / "out"
    summary = anyio.run(lambda: run_search(spec, out, engine=fe))
    assert summary.evaluated == 3 and summary.failed == []
    report = build_search_report(out)
    assert report.reference is None  # no built-in in the space: nothing to compare against
    for c in report.configurations:
        table = json.loads(c["table"])
        temperature = table["roles"]["sink"]["sampling"]["temperature"]
        assert 0.2 <= temperature <= 1.0 and isinstance(table["max_message_tokens"], int)
        assert table["max_message_tokens"] % 8 == 0
        assert c["cost"] == c["mean_cost"] > 0 and c["cost"] != c["mean_ttc"]


def test_a_changed_space_or_split_needs_a_new_out(tmp_path: Path, fe: FunctionEngine) -> None:
    path = _write(tmp_path, trials=1)
    out = tmp_path / "out"
    anyio.run(lambda: run_search(load_search(path), out, engine=fe, heldout=False))
    text = path.read_text()
    path.write_text(text.replace("choices = [1.0, 0.3]", "choices = [1.0, 0.5]"))
    with pytest.raises(ConfigError, match="different space"):
        anyio.run(lambda: run_search(load_search(path), out, engine=fe))
    path.write_text(text.replace("seed = 3", "seed = 3\nsplit_seed = 1"))
    with pytest.raises(ConfigError, match=r"different spec \(differs in: split.ids"):
        anyio.run(lambda: run_search(load_search(path), out, engine=fe))
    path.write_text(text.replace("trials = 1", "trials = 2"))  # a larger budget resumes
    assert anyio.run(lambda: run_search(load_search(path), out, engine=fe, heldout=False)).evaluated == 2


def test_a_point_that_is_no_arm_is_one_line() -> None:
    text = ('[dataset]\nkind = "arithmetic"\ncount = 4\n[engine]\nkind = "function"\nfunction = "m:f"\n'
            "[search]\ntrials = 2\nsearch_problems = 2\nheldout_problems = 2\n[[search.dimension]]\n"
            "path = 'params.width'\nchoices = [3]\n")
    with pytest.raises(ConfigError) as info:
        parse_search(text, source="s.toml")
    assert str(info.value).endswith("give exactly one of topology or widths (or a baseline)")
    assert "arms.0" not in str(info.value)


def test_cli_search_then_search_report(tmp_path: Path) -> None:
    spec, out = _write(tmp_path, trials=2), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "pacore_agents", "study", "search", str(spec), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "trial 0: graph=" in proc.stdout and "2 configurations evaluated" in proc.stdout
    assert "held-out confirmation" in proc.stdout and "the search's own spend" in proc.stdout
    again = subprocess.run([sys.executable, "-m", "pacore_agents", "study", "search-report", str(out), "--no-plots"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "Pareto set of 2 configurations" in again.stdout
    missing = subprocess.run([sys.executable, "-m", "pacore_agents", "study", "search-report", str(tmp_path)],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 2 and "holds no search" in missing.stderr
