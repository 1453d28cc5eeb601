"""Studies graded by execution (``grader = "code"``) with the function engine: per-test
outcomes stored, pass rate and pass@k, self-consistency by output signature, the grading
figures, a hostile program that does not stop the study, the synthesis prompt keeping the
references' code blocks intact, a missing bubblewrap refused and ``sandbox = "none"`` loud."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from pacore_agents import ConfigError, FunctionEngine, GenerationRequest
from pacore_agents.execution import CodeTests, _sandbox, bwrap_path
from pacore_agents.studies import DatasetSpec, build_report, load_problems, parse_study, run_study
from pacore_agents.studies._store import ResultStore

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = {
    "add": "def add(a, b):\n    return a + b", "subtract": "def subtract(a, b):\n    return a - b",
    "multiply": "def multiply(a, b):\n    return a * b", "square": "def square(n):\n    return n * n",
    "is_even": "def is_even(n):\n    return n % 2 == 0", "absolute": "def absolute(n):\n    return abs(n)",
}
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
NAME_RE = re.compile(r"Write a Python function `(\w+)\(")
#: is_even's first test input: the wrong is_even gets exactly that one test wrong
FIRST_EVEN = json.loads(CodeTests.model_validate_json(
    load_problems(DatasetSpec(kind="code-tasks", count=6))[4].answer or "").tests[0].input)

SPEC = """
name = "code"
samples = 2
[dataset]
kind = "code-tasks"
count = 6
[grading]
grader = "code"
workers = 2
[grading.code]
test_timeout = 1.0
sample_timeout = 8.0
{extra}
[[arms]]
name = "pacore"
widths = [3]
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc"
baseline = "self-consistency"
n = [3]
"""


def fenced(code: str, words: str = "Here is the function.") -> str:
    return f"<think>I will write it.</think>{words}\n```python\n{code}\n```\nThat is all."


class CodeModel:
    """Right programs for add/subtract/multiply/square, a wrong one for is_even, a fork bomb
    for absolute; a self-consistency batch gives two right programs and one wrong one."""

    def __init__(self) -> None:
        self.synthesis_prompts: list[str] = []

    def __call__(self, request: GenerationRequest) -> list[str]:
        prompt = request.messages[-1].content
        name = NAME_RE.search(prompt)
        assert name is not None
        fn = name.group(1)
        if "Reference" in prompt or "reference" in prompt:
            self.synthesis_prompts.append(prompt)
        if fn == "absolute":
            return [fenced(FORK_BOMB)] * request.n
        right = SOLUTIONS[fn] if fn != "is_even" else (
            f"def is_even(n):\n    return (n % 2 == 0) != (n == {FIRST_EVEN})")
        wrong = f"def {fn}(*args):\n    return 12345"
        return [fenced(right if i % 3 != 2 else wrong, f"Attempt {i}.") for i in range(request.n)]


pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")


def test_a_code_study_grades_by_execution(tmp_path: Path) -> None:
    model = CodeModel()
    spec = parse_study(SPEC.format(extra=""))
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(model)))
    assert summary.failed == [] and summary.ran == 6 * 2 * 3
    assert summary.grading["sandbox"] == "bwrap" and summary.grading["tests"] > 0
    assert summary.grading["tests_per_second"] > 0
    store = ResultStore.open(tmp_path / "out")
    try:
        outcomes = store.outcomes()
        meta = dict(store.meta_items("grading_figures:"))
    finally:
        store.close()
    assert len(meta) == 1
    by_key = {(o.arm, o.problem_id, o.sample): o for o in outcomes}
    single_add = by_key[("single", "code-0", 0)]
    assert single_add.status == "correct" and single_add.nodes[0].tests == ["passed"] * 5
    assert single_add.nodes[0].pass_rate == 1.0
    bomb = by_key[("single", "code-5", 0)]  # absolute: the fork bomb, graded and the study went on
    assert bomb.status == "wrong" and set(bomb.nodes[0].tests or []) <= {"timeout", "runtime_error"}
    is_even = by_key[("single", "code-4", 1)].nodes[0]
    assert is_even.status == "wrong" and is_even.pass_rate == 0.8 and is_even.tests[0] == "wrong_answer"
    sc = by_key[("sc", "code-1", 0)]
    assert len(sc.nodes) == 3 and sc.status == "correct"  # 2 right vs 1 wrong: by signature
    assert sc.nodes[0].answer == sc.nodes[1].answer != sc.nodes[2].answer

    console = Console(record=True, width=200)
    report = build_report(tmp_path / "out", console=console, plots=False)
    rows = {m.label: m for m in report.metrics}
    assert rows["single"].pass_at.keys() == {"pass@1", "pass@2"}
    assert rows["single"].accuracy == pytest.approx(4 / 6)
    assert rows["sc@3"].accuracy == pytest.approx(4 / 6)
    assert rows["single"].pass_rate == pytest.approx((4 + 0.8 + 0) / 6)  # the bomb passes none
    text = console.export_text()
    assert "code grading (lcb mode, sandbox bwrap" in text and "tests/s" in text
    metrics_csv = (tmp_path / "out" / "report" / "metrics.csv").read_text()
    assert "pass_rate" in metrics_csv.splitlines()[0] and '{""pass@1""' in metrics_csv

    # the synthesis prompt carries each reference's code block unchanged
    assert model.synthesis_prompts
    for prompt in model.synthesis_prompts:
        fn = NAME_RE.search(prompt)
        assert fn is not None
        if fn.group(1) != "is_even":
            code = FORK_BOMB if fn.group(1) == "absolute" else SOLUTIONS[fn.group(1)]
            assert f"```python\n{code}\n```" in prompt
            assert "I will write it." not in prompt  # the reasoning is compacted away


def test_a_missing_bubblewrap_is_refused_before_anything_is_written(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sandbox, "bwrap_path", lambda: None)
    spec = parse_study(SPEC.format(extra=""))
    with pytest.raises(ConfigError, match="bubblewrap") as err:
        anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(CodeModel())))
    assert "\n" not in str(err.value) and 'sandbox = "none"' in str(err.value)
    assert not (tmp_path / "out").exists()


def test_no_sandbox_is_loud_in_the_log_and_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pacore_agents")
    monkeypatch.setattr(_sandbox, "bwrap_path", lambda: None)
    text = SPEC.format(extra='sandbox = "none"').replace("count = 6", "count = 2")
    spec = parse_study(text)
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=FunctionEngine(CodeModel())))
    assert summary.failed == [] and summary.grading["sandbox"] == "none"
    assert "WITHOUT A SANDBOX" in caplog.text
    console = Console(record=True, width=200)
    build_report(tmp_path / "out", console=console, csv_files=False, plots=False)
    assert "NO SANDBOX" in console.export_text()


def test_a_code_spec_dump_validates_again() -> None:
    from pacore_agents.studies import StudySpec

    spec = parse_study(SPEC.format(extra='mode = "judge"'))
    again = StudySpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec and again.grading.code.mode == "judge"
    assert "code" in spec.fingerprint() and parse_study(SPEC.format(extra="")).fingerprint() != spec.fingerprint()


def test_code_specs_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="grader = 'code'"):
        parse_study(SPEC.format(extra="").replace('grader = "code"', 'grader = "math"'))
    with pytest.raises(ConfigError, match="needs a code dataset"):
        parse_study(SPEC.format(extra="").replace('kind = "code-tasks"\ncount = 6', 'name = "gsm8k"'))
    with pytest.raises(ConfigError, match=r"grading\.code\.mode"):
        parse_study(SPEC.format(extra='mode = "strict"'))
    text = SPEC.format(extra="").replace('grader = "code"\n', "")
    with pytest.raises(ConfigError):
        parse_study(text)


def test_the_gpu_livecodebench_example_dry_runs(tmp_path: Path) -> None:
    """The example as shipped, beside a local ``code_generation_lite`` directory of rows
    inside and outside its date window: the dry run loads them and plans every arm."""
    from typer.testing import CliRunner

    from pacore_agents.cli import app

    from .test_execution_units import _lcb_row, _write_jsonl

    example = tmp_path / "study_gpu_livecodebench.toml"
    example.write_text((ROOT / "examples" / "study_gpu_livecodebench.toml").read_text())
    data = tmp_path / "code_generation_lite"
    data.mkdir()
    _write_jsonl(data / "test5.jsonl", [_lcb_row(0, "2024-07-30"), _lcb_row(1, "2024-08-03")])
    _write_jsonl(data / "test6.jsonl", [_lcb_row(2, "2025-05-20", functional=True), _lcb_row(3, "2025-06-02")])
    result = CliRunner().invoke(app, ["study", "run", str(example), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 problems x 4 samples" in result.output and "pacore-k32x4" in result.output
    assert not (tmp_path / "out").exists()
