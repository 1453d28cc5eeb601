"""Code datasets: HumanEval (vendored), LiveCodeBench's code-generation rows (local files, a
local ``datasets`` directory or the hub), and generated easy code tasks.

Contract: every problem's ``answer`` is a ``CodeTests`` JSON (the grader's gold) and its
messages are the prompt LiveCodeBench uses for the problem's kind (stdin programs; functional
with starter code), or HumanEval's / the generated task's. Order: file order (HumanEval,
LiveCodeBench) or generation order. LiveCodeBench's private tests (base64 of zlib of a pickle
of JSON) are decoded by ``decode_private_tests``: the pickle goes through an unpickler that
admits no global, class or persistent id, so a hostile pickle cannot run code here; only a
``str``/``bytes`` result is accepted. A date window keeps rows whose ``contest_date`` falls in
``[start_date, end_date]`` (``YYYY-MM`` or ``YYYY-MM-DD``; the end month is inclusive).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import pickle
import random
import zlib
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pacore_agents._errors import ConfigError
from pacore_agents.execution import CodeTests, TestCase

LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and "
              "will generate a correct Python program that matches the specification and passes all tests.")
LCB_WITH_STARTER = ("You will use the following starter code to write the solution to the problem and enclose "
                    "your code within delimiters.")
LCB_WITHOUT_STARTER = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                       "directly test on the sample inputs). Enclose your code within delimiters as follows. "
                       "Ensure that when the python program runs, it reads the inputs, runs the algorithm and "
                       "writes output to STDOUT.")
HUMANEVAL_PROMPT = ("Complete the following Python function. Reply with the complete function (its signature "
                    "and body, with any imports it needs) in one ```python code block.\n\n```python\n{prompt}```")
CODE_TASK_PROMPT = "{statement}\n\nWrite the function in Python and put it in one ```python code block."
#: A private-test blob larger than this once decompressed is refused (a zlib bomb).
MAX_PRIVATE_BYTES = 1 << 30
#: LiveCodeBench's ``version_tag``s: the files of ``code_generation_lite`` each one reads.
_LCB_FILES = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]
LCB_VERSIONS: dict[str, list[str]] = {
    **{f"release_v{i}": _LCB_FILES[:i] for i in range(1, 7)},
    "release_latest": _LCB_FILES,
    **{f"v{i}": [_LCB_FILES[i - 1]] for i in range(1, 7)},
    **{f"v{i}_v{j}": _LCB_FILES[i - 1 : j] for i in range(1, 7) for j in range(i + 1, 7)},
}


def lcb_prompt(question: str, starter_code: str) -> str:
    """LiveCodeBench's generic code-generation prompt (``get_generic_question_template_answer``)."""
    prompt = f"### Question:\n{question}\n\n"
    if starter_code:
        prompt += f"### Format: {LCB_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        prompt += f"### Format: {LCB_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return prompt + "### Answer: (use the provided format with backticks)\n\n"


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Admits no global (so no class, function or ``REDUCE`` target) and no persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}: private tests are a pickled str")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def decode_private_tests(text: str) -> list[dict[str, Any]]:
    """LiveCodeBench's ``private_test_cases``: JSON, or base64(zlib(pickle(JSON str))). Raises
    ``ValueError`` for anything else (see the module contract)."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
            inflater = zlib.decompressobj()
            data = inflater.decompress(raw, MAX_PRIVATE_BYTES)
            if inflater.unconsumed_tail:
                raise ValueError(f"private tests larger than {MAX_PRIVATE_BYTES} bytes")
            obj = _NoGlobalsUnpickler(io.BytesIO(data)).load()
        except (binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, UnicodeEncodeError) as exc:
            raise ValueError(f"private tests are neither JSON nor base64(zlib(pickle)): {exc}") from exc
        if isinstance(obj, bytes):
            obj = obj.decode("utf-8")
        if not isinstance(obj, str):
            raise ValueError(f"private tests unpickled to {type(obj).__name__}, not str") from None
        value = json.loads(obj)
    if not isinstance(value, list):
        raise ValueError("private tests are not a JSON list")
    return value


def _json_field(row: dict[str, Any], name: str, default: Any) -> Any:
    value = row.get(name, default)
    return json.loads(value) if isinstance(value, str) and value.strip() else (value or default)


def lcb_problem(row: dict[str, Any]) -> tuple[str, str, CodeTests, dict[str, Any]]:
    """(id, user prompt, tests, metadata) of one LiveCodeBench row; ``ValueError`` if unusable."""
    missing = [k for k in ("question_content", "public_test_cases") if not row.get(k)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    public = _json_field(row, "public_test_cases", [])
    private = decode_private_tests(row["private_test_cases"]) if row.get("private_test_cases") else []
    metadata = _json_field(row, "metadata", {})
    cases = [*public, *private]
    if not cases:
        raise ValueError("no test cases")
    functional = any(c.get("testtype") == "functional" for c in cases)
    fn_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    if functional and not fn_name:
        raise ValueError("functional tests but no metadata.func_name")
    tests = CodeTests(kind="functional" if functional else "stdin", fn_name=fn_name if functional else None,
                      tests=[TestCase(input=str(c["input"]), output=str(c["output"])) for c in cases])
    pid = str(row.get("question_id") or row.get("question_title") or "")
    if not pid:
        raise ValueError("no question_id")
    meta = {"source": "livecodebench", "platform": row.get("platform"), "difficulty": row.get("difficulty"),
            "contest_date": str(row.get("contest_date") or ""), "tests": len(cases)}
    return pid, lcb_prompt(row["question_content"], row.get("starter_code") or ""), tests, meta


def in_window(date: str, start: str | None, end: str | None) -> bool:
    """True if ``date`` (ISO) is within ``[start, end]`` compared at their own precision."""
    day = date[:10]
    return (start is None or day[: len(start)] >= start) and (end is None or day[: len(end)] <= end)


def lcb_rows_from_dir(directory: Path, version_tag: str | None) -> list[dict[str, Any]]:
    """Rows of a local copy of ``livecodebench/code_generation_lite`` (its ``test*.jsonl``
    files, selected by ``version_tag``) read with the ``datasets`` library."""
    return _load_with_datasets([str(directory / f) for f in _version_files(version_tag)
                                if (directory / f).exists()], str(directory))


def lcb_rows_from_hub(name: str, version_tag: str | None) -> list[dict[str, Any]]:
    """Rows of the hub dataset ``name`` for ``version_tag`` (needs the hub)."""
    return _load_with_datasets([f"hf://datasets/{name}/{f}" for f in _version_files(version_tag)], name)


def _version_files(version_tag: str | None) -> list[str]:
    tag = version_tag or "release_latest"
    if tag not in LCB_VERSIONS:
        raise ConfigError(f"dataset.version_tag {tag!r} is not one of LiveCodeBench's: release_v1 .. release_v6, "
                          "release_latest, v1 .. v6, v<i>_v<j>")
    return LCB_VERSIONS[tag]


def _load_with_datasets(files: Sequence[str], source: str) -> list[dict[str, Any]]:
    if not files:
        raise ConfigError(f"{source}: no LiveCodeBench test*.jsonl files for this version_tag")
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("reading LiveCodeBench by name or directory needs the `datasets` library: "
                          "pip install 'pacore-agents[code]'") from exc
    try:
        table = datasets.load_dataset("json", data_files=list(files), split="train")
    except Exception as exc:  # datasets' many error types (offline hub, bad files): one line
        raise ConfigError(f"cannot load LiveCodeBench from {source}: {type(exc).__name__}: {exc}") from exc
    return [dict(r) for r in table]


def humaneval_rows() -> list[dict[str, Any]]:
    data = resources.files("pacore_agents.studies") / "data" / "humaneval.jsonl.gz"
    return [json.loads(line) for line in gzip.decompress(data.read_bytes()).decode("utf-8").splitlines() if line]


def humaneval_problem(row: dict[str, Any]) -> tuple[str, str, CodeTests, dict[str, Any]]:
    """(id, user prompt, tests, metadata): the test is HumanEval's ``check(entry_point)``; the
    prompt's code (with ``pass`` as the body) heads the program, so helpers and imports it
    defines exist when the model's function replaces the stub."""
    tests = CodeTests(kind="check", prefix=row["prompt"] + "    pass\n\n\n",
                      tests=[TestCase(input=row["test"], output=row["entry_point"])])
    return row["task_id"], HUMANEVAL_PROMPT.format(prompt=row["prompt"]), tests, {"source": "humaneval"}


# --- generated easy tasks ---------------------------------------------------------------------

_Gen = Callable[[random.Random], list[Any]]
_TASKS: list[tuple[str, str, str, _Gen, Callable[..., Any]]] = [
    ("add", "a, b", "returns the sum of the integers a and b", lambda r: [r.randint(-50, 50), r.randint(-50, 50)],
     lambda a, b: a + b),
    ("subtract", "a, b", "returns a minus b", lambda r: [r.randint(-50, 50), r.randint(-50, 50)], lambda a, b: a - b),
    ("multiply", "a, b", "returns the product of a and b", lambda r: [r.randint(-12, 12), r.randint(-12, 12)],
     lambda a, b: a * b),
    ("square", "n", "returns n squared", lambda r: [r.randint(-30, 30)], lambda n: n * n),
    ("is_even", "n", "returns True if n is even and False otherwise", lambda r: [r.randint(-99, 99)],
     lambda n: n % 2 == 0),
    ("absolute", "n", "returns the absolute value of n", lambda r: [r.randint(-99, 99)], abs),
    ("maximum", "a, b", "returns the larger of a and b", lambda r: [r.randint(-50, 50), r.randint(-50, 50)], max),
    ("sum_list", "numbers", "returns the sum of the list of integers numbers",
     lambda r: [[r.randint(-9, 9) for _ in range(r.randint(0, 6))]], sum),
    ("max_list", "numbers", "returns the largest integer in the non-empty list numbers",
     lambda r: [[r.randint(-9, 9) for _ in range(r.randint(1, 6))]], max),
    ("reverse_string", "s", "returns the string s reversed",
     lambda r: ["".join(r.choice("abcdefgh") for _ in range(r.randint(0, 7)))], lambda s: s[::-1]),
    ("string_length", "s", "returns the number of characters in the string s",
     lambda r: ["".join(r.choice("abcxyz ") for _ in range(r.randint(0, 9)))], len),
    ("count_vowels", "s", "returns how many characters of the string s are vowels (a, e, i, o, u)",
     lambda r: ["".join(r.choice("abeiouxyz") for _ in range(r.randint(0, 9)))],
     lambda s: sum(c in "aeiou" for c in s)),
]


def code_task_problems(count: int, seed: int, tests: int = 5) -> list[tuple[str, str, CodeTests, dict[str, Any]]]:
    """``count`` easy functional tasks, cycling through ``_TASKS``, ``tests`` random tests each
    (``random.Random(seed)``: the same arguments give the same tasks). Ids ``code-<index>``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name, params, what, gen, ref = _TASKS[i % len(_TASKS)]
        cases = []
        for _ in range(tests):
            args = gen(rng)
            cases.append(TestCase(input="\n".join(json.dumps(a) for a in args), output=json.dumps(ref(*args))))
        statement = f"Write a Python function `{name}({params})` that {what}."
        out.append((f"code-{i}", CODE_TASK_PROMPT.format(statement=statement),
                    CodeTests(kind="functional", fn_name=name, tests=cases), {"source": "code-tasks", "task": name}))
    return out


def code_rows(rows: Iterable[tuple[int, dict[str, Any]]], build: Callable[[dict[str, Any]], tuple[str, str, CodeTests,
              dict[str, Any]]], window: tuple[str | None, str | None] = (None, None),
              difficulties: Sequence[str] | None = None) -> tuple[list[tuple[str, str, CodeTests, dict[str, Any]]],
                                                                  list[str]]:
    """``build`` applied to every row in the window (LiveCodeBench rows also by difficulty):
    (problems, a description of each unusable row)."""
    out, bad = [], []
    for lineno, row in rows:
        if not isinstance(row, dict):
            bad.append(f"line {lineno} (not an object)")
            continue
        if (window != (None, None) and not in_window(str(row.get("contest_date") or ""), *window)) or (
                difficulties is not None and row.get("difficulty") not in difficulties):
            continue
        try:
            out.append(build(row))
        except (ValueError, KeyError, TypeError) as exc:
            bad.append(f"line {lineno} ({exc})")
    return out, bad
