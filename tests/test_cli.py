"""The ``pacore`` command: runs, traces, logs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = "function:tests.fixtures.handlers:answer"


def pacore(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pacore_agents", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd, env=env, timeout=120)


def test_run_prints_answer_and_writes_trace(tmp_path: Path) -> None:
    trace_path = tmp_path / "out" / "trace.json"
    log_path = tmp_path / "log.jsonl"
    proc = pacore("run", "What is the sum of all integers from 1 to 100?", "--topology", "pacore-low",
                  "--engine", ENGINE, "--trace", str(trace_path), "--log-json", str(log_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Pairs sum to 101, so \\boxed{5050} (read 4)"
    trace = json.loads(trace_path.read_text())
    for key in ("answer", "sink", "effective_ttc", "config", "topology", "nodes"):
        assert key in trace
    assert trace["sink"] == "r2.a0" and len(trace["nodes"]) == 5
    node = trace["nodes"][4]
    for key in ("id", "round", "agent", "role", "inputs", "prompt", "content", "reasoning", "message",
                "finish_reason", "usage", "error", "attempts", "started_at", "ended_at"):
        assert key in node
    assert set(node["usage"]) >= {"prompt_tokens", "completion_tokens", "cached_tokens"}
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert {"run started", "run finished"} <= {e["event"] for e in events}


def test_widths_and_topologies(tmp_path: Path) -> None:
    trace_path = tmp_path / "t.json"
    proc = pacore("run", "Q?", "--widths", "3,2", "--engine", ENGINE, "--trace", str(trace_path), "-q")
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(trace_path.read_text())
    assert [n["id"] for n in trace["nodes"] if n["round"] == 3] == ["r3.a0"]
    assert len(trace["nodes"]) == 6
    for topo in ("ring", "hierarchical", "star", "all-to-all", "critic-ring"):
        assert pacore("run", "Q?", "--topology", topo, "--engine", ENGINE, "-q").returncode == 0, topo
    listing = pacore("topologies").stdout.splitlines()
    assert any(line.startswith("pacore-high ") and "[32,4,1]" in line for line in listing)
    assert len(listing) == len(list((REPO / "topologies").glob("*.toml")))


def test_spec_file_and_param_override(tmp_path: Path) -> None:
    spec = tmp_path / "mine.toml"
    spec.write_text('name = "mine"\nkind = "ring"\nparams = { width = 3, rounds = 2 }\n')
    trace_path = tmp_path / "t.json"
    proc = pacore("run", "Q?", "--topology", str(spec), "--param", "width=5", "--engine", ENGINE,
                  "--trace", str(trace_path), "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(trace_path.read_text())["topology_name"] == "mine"
    assert len(json.loads(trace_path.read_text())["nodes"]) == 11


def test_problem_as_chat_messages_file(tmp_path: Path) -> None:
    problem = tmp_path / "problem.json"
    problem.write_text(json.dumps({"messages": [{"role": "system", "content": "Be terse."},
                                                {"role": "user", "content": "What is 2+3?"}]}))
    trace_path = tmp_path / "t.json"
    proc = pacore("run", f"@{problem}", "--engine", ENGINE, "--trace", str(trace_path), "-q")
    assert proc.returncode == 0, proc.stderr
    sink = json.loads(trace_path.read_text())["nodes"][-1]["prompt"]
    assert sink[0] == {"role": "system", "content": "Be terse."}
    assert "Original Problem:\nWhat is 2+3?\n" in sink[1]["content"]
    bad = pacore("run", f"@{tmp_path / 'missing.json'}", "--engine", ENGINE)
    assert bad.returncode == 2 and "cannot read problem file" in bad.stderr


def test_problem_from_stdin() -> None:
    proc = pacore("run", "-", "--engine", ENGINE, "-q", stdin="What is 1+1?")
    assert proc.returncode == 0 and "5050" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "", "--engine", ENGINE], "the problem is empty"),
        (["run", "Q?", "--widths", "4,x", "--engine", ENGINE], "bad --widths"),
        (["run", "Q?", "--widths", "4,-1", "--engine", ENGINE], "positive integer"),
        (["run", "Q?", "--topology", "nowhere", "--engine", ENGINE], "unknown topology 'nowhere'"),
        (["run", "Q?", "--topology", "missing.toml", "--engine", ENGINE], "does not exist"),
        (["run", "Q?", "--topology", "{bad}", "--engine", ENGINE], "bad.toml"),
        (["run", "Q?", "--engine", "quantum"], "unknown engine 'quantum'"),
        (["run", "Q?", "--engine", "function:tests.fixtures.handlers:nope"], "no callable 'nope'"),
        (["run", "Q?", "--engine", "function:no_such_module:f"], "cannot be imported"),
        (["run", "Q?", "--engine", "openai"], "needs --base-url"),
        (["run", "Q?", "--order", "random", "--engine", ENGINE], "bad --order"),
        (["run", "Q?", "--topology", "ring", "--widths", "4", "--engine", ENGINE], "--widths applies"),
        (["run", "Q?", "--param", "colour=red", "--engine", ENGINE], "unknown parameter 'colour'"),
        (["run", "Q?", "--temperature", "-1", "--engine", ENGINE], "temperature"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    if "{bad}" in args:
        bad = tmp_path / "bad.toml"
        bad.write_text('name = "b"\nkind = "ring"\nparams = { width = 4 }\nsize = 3\n')
        args = [str(bad) if a == "{bad}" else a for a in args]
    proc = pacore(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_topology_without_sink_is_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "nosink.toml"
    spec.write_text('name = "two"\nkind = "edges"\nedges = [["r1.a0", "r2.a0"], ["r1.a1", "r2.a1"]]\n')
    proc = pacore("run", "Q?", "--topology", str(spec), "--engine", ENGINE)
    assert proc.returncode == 2 and "exactly one sink" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_run_exits_1_and_keeps_trace(tmp_path: Path) -> None:
    trace_path = tmp_path / "t.json"
    proc = pacore("run", "Q?", "--engine", "function:tests.fixtures.handlers:broken", "--trace", str(trace_path), "-q")
    assert proc.returncode == 1 and "server said no" in proc.stderr and "Traceback" not in proc.stderr
    trace = json.loads(trace_path.read_text())
    assert trace["answer"] is None and "status=400" in trace["nodes"][0]["error"]


def test_runs_outside_the_checkout(tmp_path: Path) -> None:
    proc = pacore("run", "Q?", "--topology", "ring", "--engine", ENGINE, "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_degraded_run_says_so_in_its_summary_line(tmp_path: Path) -> None:
    trace_path = tmp_path / "t.json"
    proc = pacore("run", "Q?", "--engine", "function:tests.fixtures.handlers:one_explorer_fails", "--no-merge",
                  "--on-failure", "continue", "--trace", str(trace_path), "-q")
    assert proc.returncode == 0, proc.stderr  # an answer was produced
    assert "degraded: 1 of 5 trajectories failed (r1.a1)" in proc.stderr
    trace = json.loads(trace_path.read_text())
    assert trace["degraded"] and trace["nodes"][1]["status"] == "failed"
    healthy = pacore("run", "Q?", "--engine", ENGINE, "-q")
    assert healthy.returncode == 0 and "degraded" not in healthy.stderr


@pytest.mark.parametrize("mode", ["dataflow", "rounds"])
def test_mode_flag_reaches_the_trace(tmp_path: Path, mode: str) -> None:
    trace_path = tmp_path / "t.json"
    proc = pacore("run", "Q?", "--engine", ENGINE, "--mode", mode, "--trace", str(trace_path), "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(trace_path.read_text())["mode"] == mode
    bad = pacore("run", "Q?", "--engine", ENGINE, "--mode", "async")
    assert bad.returncode == 2 and "bad --mode 'async'" in bad.stderr


def test_log_transport_flag_adds_other_libraries_lines(tmp_path: Path) -> None:
    quiet, loud = tmp_path / "quiet.jsonl", tmp_path / "loud.jsonl"
    for path, extra in ((quiet, []), (loud, ["--log-transport"])):
        proc = pacore("run", "Q?", "--engine", ENGINE, "-q", "--log-json", str(path), *extra)
        assert proc.returncode == 0, proc.stderr
    def foreign(path: Path) -> int:
        return sum(1 for line in path.read_text().splitlines()
                   if not json.loads(line).get("logger", "").startswith("pacore_agents"))
    assert foreign(quiet) == 0
    assert foreign(loud) > 0  # e.g. asyncio's "Using selector" debug line
