"""Code extraction, LiveCodeBench's comparisons, pass@k, and LiveCodeBench's private tests
(decoded without the standard unpickler: a hostile pickle runs nothing). No sandbox here."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import zlib
from pathlib import Path

import pytest

from pacore_agents._errors import ConfigError
from pacore_agents.execution import CodeTests, extract_code
from pacore_agents.execution._harness import clean_if_name, lines_match, make_function, values_match
from pacore_agents.studies import DatasetSpec, load_problems
from pacore_agents.studies._code_datasets import (
    LCB_SYSTEM,
    decode_private_tests,
    in_window,
    lcb_prompt,
)
from pacore_agents.studies._stats import mean_pass_at_k, pass_at_k


def test_code_is_between_the_last_two_fence_lines_after_think() -> None:
    text = "<think>```python\nprint('thinking')\n```</think>Here:\n```python\nprint(1)\n```\nand\n```py\nprint(2)\n```\n"
    assert extract_code(text) == "print(2)"
    assert extract_code("<think>\n```python\nprint(1)\n```\n</think> no code at all") is None
    assert extract_code("```python\nx = 1") is None
    assert extract_code(None) is None and extract_code("```\n\n```") is None
    assert extract_code("text ```python\na = 1\nb = 2\n```") == "a = 1\nb = 2"  # "```" in line
    assert extract_code("a\n```python\na = 1\nb = 2\n  ```  \n") == "a = 1\nb = 2"


def test_lcb_line_comparison() -> None:
    assert lines_match("3\n", "3")[0]
    assert lines_match("  1 2  \n3   \n\n", "1 2\n3")[0]  # stripped lines, trailing blank lines
    assert not lines_match("1\n2", "1 2")[0]  # line counts differ
    assert lines_match("0.50 1e2", "0.5 100")[0]  # Decimal element-wise
    assert not lines_match("0.5000001", "0.5")[0]  # exact decimals: no tolerance
    assert not lines_match("yes", "YES")[0]
    assert not lines_match("1  2", "1 2 3")[0]


def test_lcb_functional_comparison_and_rewriting() -> None:
    assert values_match((1, 2), [1, 2]) and not values_match([1, 2], [2, 1])
    assert values_match(1.0, 1) and not values_match("1", 1)
    wrapped = make_function("import sys\nx = int(input())\nprint(x)\n")
    assert "def wrapped_function():" in wrapped and "import sys\n" in wrapped
    assert clean_if_name("def f():\n    pass\nif __name__ == '__main__':\n    f()\n").endswith("f()")
    assert make_function("def broken(:") == "def broken(:"  # not Python: left as is


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong: every k-subset has a pass
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    got = mean_pass_at_k({"a": [True, False, False, False], "b": [True, True, False, True]})
    assert set(got) == {"pass@1", "pass@2", "pass@4"}
    assert got["pass@1"] == pytest.approx((0.25 + 0.75) / 2)


def _blob(obj: object) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/pacore-pickle-ran",))


def test_private_tests_decode_and_a_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_private_tests(_blob(json.dumps(tests))) == tests
    assert decode_private_tests(_blob(json.dumps(tests).encode())) == tests
    assert decode_private_tests(json.dumps(tests)) == tests
    marker = Path("/tmp/pacore-pickle-ran")
    marker.unlink(missing_ok=True)
    for evil in (_Evil(), [_Evil()], {"x": _Evil()}):
        with pytest.raises(ValueError, match="refused global"):
            decode_private_tests(_blob(evil))
    assert not marker.exists()
    with pytest.raises(ValueError, match="not str"):
        decode_private_tests(_blob([1, 2]))  # no global needed, but not the JSON text
    with pytest.raises(ValueError):
        decode_private_tests("not base64 at all!")


def _lcb_row(i: int, date: str, functional: bool = False) -> dict[str, object]:
    test = ({"input": "3\n4", "output": "7", "testtype": "functional"} if functional
            else {"input": "3 4\n", "output": "7\n", "testtype": "stdin"})
    return {"question_title": f"t{i}", "question_content": f"Add two numbers ({i}).", "platform": "atcoder",
            "question_id": f"q{i}", "contest_id": "c", "contest_date": f"{date}T00:00:00",
            "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        " if functional else "",
            "difficulty": "easy", "public_test_cases": json.dumps([test]),
            "private_test_cases": _blob(json.dumps([test, test])),
            "metadata": json.dumps({"func_name": "add"} if functional else {})}


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_livecodebench_local_file_window_and_prompts(tmp_path: Path) -> None:
    rows = [_lcb_row(0, "2024-07-31"), _lcb_row(1, "2024-08-01", functional=True), _lcb_row(2, "2025-05-31"),
            _lcb_row(3, "2025-06-01")]
    path = _write_jsonl(tmp_path / "lcb.jsonl", rows)
    spec = DatasetSpec(kind="livecodebench", path=path, start_date="2024-08", end_date="2025-05")
    problems = load_problems(spec)
    assert [p.id for p in problems] == ["q1", "q2"]
    functional, stdin = (CodeTests.model_validate_json(p.answer or "") for p in problems)
    assert functional.kind == "functional" and functional.fn_name == "add" and len(functional.tests) == 3
    assert stdin.kind == "stdin" and stdin.fn_name is None
    assert problems[0].messages[0].content == LCB_SYSTEM
    assert problems[0].messages[-1].content == lcb_prompt("Add two numbers (1).", str(rows[1]["starter_code"]))
    assert "### Format: You will use the following starter code" in problems[0].messages[-1].content
    assert "# YOUR CODE HERE" in problems[1].messages[-1].content
    assert in_window("2025-05-31T23:00:00", "2024-08", "2025-05") and not in_window("2025-06-01", None, "2025-05")
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{**_lcb_row(5, "2024-09-01"), "private_test_cases": _blob(_Evil())}])
    with pytest.raises(ConfigError, match="refused global"):
        load_problems(DatasetSpec(kind="livecodebench", path=bad))


def test_livecodebench_through_datasets_offline_on_a_local_directory(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    _write_jsonl(tmp_path / "test.jsonl", [_lcb_row(0, "2024-08-02"), _lcb_row(1, "2024-09-01")])
    _write_jsonl(tmp_path / "test2.jsonl", [_lcb_row(2, "2024-10-02", functional=True)])
    v1 = load_problems(DatasetSpec(kind="livecodebench", path=tmp_path, version_tag="release_v1"))
    assert [p.id for p in v1] == ["q0", "q1"]
    v2 = load_problems(DatasetSpec(kind="livecodebench", path=tmp_path, version_tag="release_v2"))
    assert [p.id for p in v2] == ["q0", "q1", "q2"]
    only2 = load_problems(DatasetSpec(kind="livecodebench", path=tmp_path, version_tag="v2"))
    assert [p.id for p in only2] == ["q2"]
    with pytest.raises(ConfigError, match="version_tag"):
        load_problems(DatasetSpec(kind="livecodebench", path=tmp_path, version_tag="v9"))


def test_code_dataset_specs_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DatasetSpec(kind="livecodebench")
    with pytest.raises(ValueError, match="is for kind = 'livecodebench'"):
        DatasetSpec(name="humaneval", start_date="2024-08")
    with pytest.raises(ValueError, match="is for kind = 'arithmetic'"):
        DatasetSpec(kind="code-tasks", digits=2)
    tasks = load_problems(DatasetSpec(kind="code-tasks", count=14, seed=3))
    again = load_problems(DatasetSpec(kind="code-tasks", count=14, seed=3))
    assert [p.answer for p in tasks] == [p.answer for p in again] and len(tasks) == 14
    assert len({CodeTests.model_validate_json(p.answer or "").fn_name for p in tasks}) == 12
    humaneval = load_problems(DatasetSpec(name="humaneval"))
    assert len(humaneval) == 164 and humaneval[0].id == "HumanEval/0"
