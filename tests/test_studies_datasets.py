"""Study datasets: vendored GSM8K / MATH-500, local JSONL with field mappings, PaCoRe format."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pacore_agents import ConfigError
from pacore_agents.studies import DatasetSpec, gsm8k_gold, load_problems


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_vendored_gsm8k_full_and_gold_extracted() -> None:
    problems = load_problems(DatasetSpec(name="gsm8k"))
    assert len(problems) == 1319
    first = problems[0]
    assert first.id == "gsm8k-0"
    assert first.answer == "18"  # "... #### 18"
    assert first.statement.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.statement.endswith("put your final answer within \\boxed{}.")
    assert all(p.answer and "####" not in p.answer and "," not in p.answer for p in problems)


def test_vendored_math500_with_selection() -> None:
    problems = load_problems(DatasetSpec(name="math500", offset=1, limit=2))
    everything = load_problems(DatasetSpec(name="math500"))
    assert len(everything) == 500
    assert everything[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert [p.id for p in problems] == [p.id for p in everything[1:3]]


def test_gsm8k_gold() -> None:
    assert gsm8k_gold("so 6*7=42\n#### 42") == "42"
    assert gsm8k_gold("#### 1,234") == "1234"
    assert gsm8k_gold(" 7 ") == "7"


def test_jsonl_field_mapping_dotted_and_selection(tmp_path: Path) -> None:
    rows = [{"meta": {"uid": f"q{i}"}, "text": f"What is {i}+{i}?", "sol": {"final": str(2 * i)}} for i in range(6)]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    spec = DatasetSpec(path=path, problem_field="text", answer_field="sol.final", id_field="meta.uid",
                       offset=1, limit=3, system_prompt="Be brief.")
    problems = load_problems(spec)
    assert [p.id for p in problems] == ["q1", "q2", "q3"]
    assert [p.answer for p in problems] == ["2", "4", "6"]
    assert problems[0].messages[0].role == "system" and problems[0].statement == "What is 1+1?"
    picked = load_problems(DatasetSpec(path=path, problem_field="text", answer_field="sol.final",
                                       id_field="meta.uid", ids=["q5", "q0"]))
    assert [p.id for p in picked] == ["q5", "q0"]


def test_missing_fields_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"problem": "1+1?", "answer": "2"}),
        json.dumps({"problem": "2+2?"}),  # line 2: no answer
        "",  # blank lines are not rows
        json.dumps({"answer": "6"}),  # line 4: no problem
        json.dumps({"problem": "4+4?", "answer": None}),  # line 5: null answer
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_problems(DatasetSpec(path=path))
    msg = str(info.value)
    assert "3 rows cannot be used" in msg
    assert "line 2 (missing 'answer')" in msg
    assert "line 4 (missing 'problem')" in msg
    assert "line 5 (missing 'answer')" in msg
    assert "line 1 " not in msg


def test_bad_json_line_and_unknown_ids(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2 is not valid JSON"):
        load_problems(DatasetSpec(path=path))
    good = _write_jsonl(tmp_path / "g.jsonl", [{"problem": "a", "answer": "1"}])
    with pytest.raises(ConfigError, match="unknown problems"):
        load_problems(DatasetSpec(path=good, ids=["7"]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_problems(DatasetSpec(path=tmp_path / "nope.jsonl"))


def test_pacore_format(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Solve x+1=3."}],
             "ground_truth": {"answer": "2"}},
            {"messages": [{"role": "user", "content": "Solve 2x=8."}], "ground_truth": {"answer": "4"}}]
    problems = load_problems(DatasetSpec(path=_write_jsonl(tmp_path / "p.jsonl", rows), format="pacore"))
    assert [p.id for p in problems] == ["0", "1"]
    assert problems[0].messages[0].content == "sys" and problems[0].statement == "Solve x+1=3."
    assert [p.answer for p in problems] == ["2", "4"]
    rows[1]["ground_truth"] = {}
    with pytest.raises(ConfigError, match=r"line 2 \(missing 'ground_truth.answer'\)"):
        load_problems(DatasetSpec(path=_write_jsonl(tmp_path / "q.jsonl", rows), format="pacore"))


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        path.write_bytes(b"PAR1")
        with pytest.raises(ConfigError, match="pip install pyarrow"):
            load_problems(DatasetSpec(path=path))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "answer": ["2", None]}), path)
    with pytest.raises(ConfigError, match=r"row 2 \(missing 'answer'\)"):
        load_problems(DatasetSpec(path=path))


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        DatasetSpec()
    with pytest.raises(ValueError, match="exactly one of"):
        DatasetSpec(name="gsm8k", path=Path("x.jsonl"))
    with pytest.raises(ValueError, match=r"\{problem\}"):
        DatasetSpec(name="gsm8k", prompt_template="no placeholder")


@pytest.mark.parametrize(("template", "message"), [
    ("{problem}\nPut it in \\boxed{}.", r"write literal braces twice \(\\boxed\{\{\}\} for \\boxed\{\}\); it has \{\}"),
    ("{problem} in \\boxed{answer}", r"literal braces twice.*it has \{answer\}"),
    ("{problem} }", "Single '}' encountered"),
    ("no field", r"must contain \{problem\}"),
])
def test_prompt_template_checked_when_the_spec_loads(template: str, message: str) -> None:
    from pacore_agents.studies import parse_study

    text = f'[dataset]\nname = "gsm8k"\nprompt_template = {json.dumps(template)}\n[[arms]]\nname = "s"\nbaseline = "single"\n'
    with pytest.raises(ConfigError, match=message) as info:
        parse_study(text)
    assert "\n" not in str(info.value)


def test_prompt_template_with_doubled_braces_works() -> None:
    (p,) = load_problems(DatasetSpec(name="gsm8k", limit=1, prompt_template="{problem}\nAnswer in \\boxed{{}}."))
    assert p.statement.endswith("\nAnswer in \\boxed{}.") and p.statement.startswith("Janet")


def test_arithmetic_is_seeded_exact_and_pinned() -> None:
    spec = DatasetSpec(kind="arithmetic", digits=2, terms=3, count=4, seed=1)
    problems = load_problems(spec)
    assert [p.metadata["expression"] for p in problems] == ["27 - 82 + 18", "73 * 67 - 70", "36 + 22 - 72",
                                                            problems[3].metadata["expression"]]
    assert [p.answer for p in problems[:3]] == ["-37", "4821", "-14"]
    assert [p.id for p in problems] == ["arith-0", "arith-1", "arith-2", "arith-3"]
    assert problems[1].statement == ("What is 73 * 67 - 70?\n\nPlease reason step by step, and put your final "
                                     "answer within \\boxed{}.")
    again = load_problems(spec)
    assert [p.statement for p in again] == [p.statement for p in problems]
    other = load_problems(spec.model_copy(update={"seed": 2}))
    assert [p.statement for p in other] != [p.statement for p in problems]
    for p in load_problems(DatasetSpec(kind="arithmetic", digits=3, terms=4, count=200, seed=5)):
        expr = p.metadata["expression"]
        assert int(p.answer) == eval(expr)  # our own digits and operators only
        assert all(len(tok) == 3 for tok in expr.split() if tok.isdigit())
    ones = load_problems(DatasetSpec(kind="arithmetic", operations=["*"], count=100, limit=10, offset=5))
    assert len(ones) == 10 and all(" * " in p.metadata["expression"] for p in ones)
    assert all(1 <= int(t) <= 9 for p in ones for t in p.metadata["expression"].split(" * "))


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "gsm8k", "digits": 2}, "dataset.digits is for kind = 'arithmetic'"),
    ({"kind": "arithmetic", "name": "gsm8k"}, "remove dataset.name"),
    ({"kind": "arithmetic", "operations": ["/"]}, "operations"),
    ({"kind": "arithmetic", "terms": 1}, "terms"),
])
def test_arithmetic_spec_errors(fields: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DatasetSpec.model_validate(fields)
