"""Datasets of a study: the vendored GSM8K and MATH-500 test sets, local JSONL/Parquet files with
a field mapping, the PaCoRe sample format (``messages`` + ``ground_truth.answer``), generated
arithmetic (``kind = "arithmetic"``, see ``_generated``), and code: vendored HumanEval,
LiveCodeBench (``kind = "livecodebench"``) and generated code tasks (``kind = "code-tasks"``),
see ``_code_datasets``.

Contract: ``load_problems(spec)`` returns ``Problem``s in file order after the selection
(``ids``, then ``offset``, then ``limit``). Every row must have its problem and answer fields
(and its id field if one is named); otherwise ``ConfigError`` lists the offending lines. Field
names are dotted paths into the row (``ground_truth.answer``).
"""

from __future__ import annotations

import gzip
import importlib
import json
import string
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pacore_agents._errors import ConfigError
from pacore_agents._ids import ProblemId
from pacore_agents._messages import ChatMessage, Problem
from pacore_agents.execution import CodeTests

from ._code_datasets import (
    LCB_SYSTEM,
    code_rows,
    code_task_problems,
    humaneval_problem,
    humaneval_rows,
    lcb_problem,
    lcb_rows_from_dir,
    lcb_rows_from_hub,
)
from ._generated import OPERATIONS, Operation, arithmetic_problems

BOXED_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."

BuiltinName = Literal["gsm8k", "math500", "humaneval"]
DatasetKind = Literal["arithmetic", "code-tasks", "livecodebench"]
_BUILTIN: dict[str, tuple[str, str, str, str]] = {
    # name: (file, problem field, answer field, id field)
    "gsm8k": ("gsm8k_test.jsonl.gz", "question", "answer", "idx"),
    "math500": ("math500_test.jsonl.gz", "problem", "answer", "unique_id"),
}
_MAX_LISTED = 20
_GENERATOR_KEYS = {"digits", "terms", "operations", "count", "seed"}
_ARITHMETIC_KEYS = {"digits", "terms", "operations"}
_LCB_KEYS = {"hub", "version_tag", "start_date", "end_date", "difficulties"}
ARITHMETIC_QUESTION = "What is {expression}?"


class DatasetSpec(BaseModel):
    """Where a study's problems come from: ``name`` (a vendored set), ``path`` (a local file)
    or ``kind = "arithmetic"`` (generated; see below)."""

    model_config = ConfigDict(extra="forbid")

    kind: DatasetKind | None = Field(
        default=None, description="arithmetic or code-tasks (generated, instead of name/path), or "
        "livecodebench (rows from path or hub)")
    name: BuiltinName | None = Field(default=None, description="gsm8k (1319 test problems), math500 or "
                                     "humaneval (164, code)")
    path: Path | None = Field(default=None, description="a .jsonl, .jsonl.gz or .parquet file (livecodebench: "
                              "also a directory holding code_generation_lite's test*.jsonl)")
    hub: str | None = Field(default=None, description="livecodebench: a hub dataset read with `datasets`, "
                            "e.g. livecodebench/code_generation_lite")
    version_tag: str | None = Field(default=None, description="livecodebench (directory or hub): release_v1 .. "
                                    "release_v6, release_latest (default), v1 .. v6, v<i>_v<j>")
    start_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}(-\d{2})?$",
                                   description="livecodebench: first contest date kept (YYYY-MM[-DD])")
    end_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}(-\d{2})?$",
                                 description="livecodebench: last contest date kept (YYYY-MM[-DD], inclusive)")
    difficulties: list[str] | None = Field(default=None, description="livecodebench: keep these (easy, medium, hard)")
    format: Literal["auto", "jsonl", "parquet", "pacore"] = Field(
        default="auto", description="auto: by the file's suffix; pacore: the PaCoRe sample format")
    problem_field: str | None = Field(default=None, description="dotted path; text or chat messages")
    answer_field: str | None = Field(default=None, description="dotted path of the gold answer")
    id_field: str | None = Field(default=None, description="default: the row's 0-based index")
    ids: list[str] | None = Field(default=None, description="keep only these problem ids")
    offset: int = Field(default=0, ge=0, description="skip this many problems (after ids)")
    limit: int | None = Field(default=None, ge=1, description="keep at most this many problems")
    prompt_template: str | None = Field(
        default=None,
        description="Python format string with {problem} (literal braces doubled: \\boxed{{}}); default: a 'put your final answer "
        "within \\boxed{}' instruction for gsm8k/math500, the text unchanged for files",
    )
    system_prompt: str | None = Field(default=None, description="prepended unless the row has one")
    # kind = "arithmetic"
    digits: int = Field(default=1, ge=1, le=18, description="arithmetic: digits per operand")
    terms: int = Field(default=2, ge=2, le=20, description="arithmetic: operands per expression")
    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS), min_length=1, description="arithmetic: operators drawn from")
    count: int = Field(default=50, ge=1, description="arithmetic: problems generated")
    seed: int = Field(default=0, description="arithmetic: generator seed (random.Random)")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = self.model_fields_set
        if self.kind in ("arithmetic", "code-tasks"):
            stray = [k for k in ("name", "path", "hub") if getattr(self, k) is not None]
            if stray:
                raise ValueError(f"dataset.kind = {self.kind!r} is generated: remove dataset.{stray[0]}")
            changed = sorted(k for k in _ARITHMETIC_KEYS if k in given and getattr(self, k) !=
                             type(self).model_fields[k].get_default(call_default_factory=True))
            if self.kind == "code-tasks" and changed:  # set to a default: a dump, fine
                raise ValueError(f"dataset.{changed[0]} is for kind = 'arithmetic'")
        else:
            stray = sorted(_GENERATOR_KEYS & given)
            if stray:
                raise ValueError(f"dataset.{stray[0]} is for kind = 'arithmetic' or 'code-tasks'")
            if self.kind == "livecodebench":
                if self.name is not None or (self.path is None) == (self.hub is None):
                    raise ValueError("dataset.kind = 'livecodebench' reads dataset.path (a file or a "
                                     "directory) or dataset.hub (a hub name): give exactly one")
            elif (self.name is None) == (self.path is None):
                raise ValueError("give exactly one of dataset.name (gsm8k, math500, humaneval), dataset.path "
                                 "or dataset.kind = 'arithmetic', 'code-tasks' or 'livecodebench'")
        lcb_set = sorted(k for k in _LCB_KEYS if getattr(self, k) is not None)
        if self.kind != "livecodebench" and lcb_set:
            raise ValueError(f"dataset.{lcb_set[0]} is for kind = 'livecodebench'")
        if self.prompt_template is not None:
            check_prompt_template(self.prompt_template)
        return self

    def is_code(self) -> bool:
        """True if the answers are programs graded by execution."""
        return self.name == "humaneval" or self.kind in ("code-tasks", "livecodebench")


def check_prompt_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` is a format string whose only field is
    ``{problem}`` (literal braces doubled: ``\\boxed{{}}``)."""
    hint = ("dataset.prompt_template is a Python format string: only {problem} is replaced, so write "
            "literal braces twice (\\boxed{{}} for \\boxed{})")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:  # a lone { or }
        raise ValueError(f"{hint}: {exc}") from exc
    others = sorted({f for f in fields if f != "problem"})
    if others:
        raise ValueError(f"{hint}; it has {{{others[0]}}}")
    if "problem" not in fields:
        raise ValueError("dataset.prompt_template must contain {problem}")


def _lookup(row: Any, dotted: str) -> Any:
    """The value at ``dotted`` in ``row``, or raise KeyError."""
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            raise KeyError(dotted)
        value = value[part]
    return value


def gsm8k_gold(answer: str) -> str:
    """The number after GSM8K's ``#### `` marker (commas removed), or the text unchanged."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    return answer.strip()


def _iter_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc


def _read_rows(path: Path, fmt: str) -> list[tuple[int, Any]]:
    """(line number, row) pairs; Parquet rows are numbered from 1."""
    if not path.exists():
        raise ConfigError(f"dataset file {path} does not exist: fix dataset.path")
    if fmt == "parquet" or (fmt == "auto" and path.suffix == ".parquet"):
        try:
            pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:
            raise ConfigError(f"reading {path} needs pyarrow: pip install pyarrow") from exc
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow's many error types: map at the boundary
            raise ConfigError(f"cannot read parquet file {path}: {exc}") from exc
        return list(enumerate(table.to_pylist(), start=1))
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: give a JSONL or Parquet file") from exc
    return list(_iter_jsonl(path, text))


def _messages_of(value: Any, template: str, system: str | None) -> tuple[ChatMessage, ...]:
    if isinstance(value, str):
        msgs = [ChatMessage(role="user", content=template.format(problem=value))]
    elif isinstance(value, list):
        msgs = [ChatMessage.model_validate(m) for m in value]
        if template != "{problem}":  # apply an explicit template to the last user message
            idx = max(i for i, m in enumerate(msgs) if m.role == "user")
            msgs[idx] = ChatMessage(role="user", content=template.format(problem=msgs[idx].content))
    else:
        raise ValueError(f"the problem field holds {type(value).__name__}, not text or chat messages")
    if system is not None and not any(m.role == "system" for m in msgs):
        msgs.insert(0, ChatMessage(role="system", content=system))
    return tuple(msgs)


def load_problems(spec: DatasetSpec, *, base_dir: Path | None = None) -> list[Problem]:
    """The problems ``spec`` selects (see the module contract). ``base_dir`` resolves a
    relative ``path`` (the study file's folder)."""
    if spec.kind == "arithmetic":
        template = spec.prompt_template or BOXED_PROMPT
        generated = [Problem(id=ProblemId(pid), answer=answer,
                             messages=_messages_of(ARITHMETIC_QUESTION.format(expression=text), template,
                                                   spec.system_prompt),
                             metadata={"source": "arithmetic", "expression": text})
                     for pid, text, answer in arithmetic_problems(spec.digits, spec.terms, spec.operations,
                                                                  spec.count, spec.seed)]
        return _select(generated, spec, "arithmetic")
    if spec.is_code():
        return _load_code(spec, base_dir)
    if spec.name is not None:
        file, pf, af, idf = _BUILTIN[spec.name]
        data = resources.files("pacore_agents.studies") / "data" / file
        text = gzip.decompress(data.read_bytes()).decode("utf-8")
        rows = list(_iter_jsonl(Path(file), text))
        source: str = spec.name
        problem_field, answer_field = spec.problem_field or pf, spec.answer_field or af
        id_field: str | None = spec.id_field or idf
        template = spec.prompt_template or BOXED_PROMPT
    else:
        assert spec.path is not None
        path = spec.path if spec.path.is_absolute() or base_dir is None else base_dir / spec.path
        rows = _read_rows(path, spec.format)
        source = str(path)
        pacore = spec.format == "pacore"
        problem_field = spec.problem_field or ("messages" if pacore else "problem")
        answer_field = spec.answer_field or ("ground_truth.answer" if pacore else "answer")
        id_field = spec.id_field
        template = spec.prompt_template or "{problem}"
    unit = "row" if source.endswith(".parquet") else "line"

    problems: list[Problem] = []
    bad: list[str] = []
    for index, (lineno, row) in enumerate(rows):
        fields = [problem_field, answer_field] + ([id_field] if id_field else [])
        missing = []
        for f in fields:
            try:
                _lookup(row, f)
            except KeyError:
                missing.append(f)
        if missing:
            bad.append(f"{unit} {lineno} (missing {', '.join(repr(m) for m in missing)})")
            continue
        pid = str(_lookup(row, id_field)) if id_field else str(index)
        answer = str(_lookup(row, answer_field))
        if spec.name == "gsm8k":
            pid, answer = f"gsm8k-{pid}", gsm8k_gold(answer)
        try:
            messages = _messages_of(_lookup(row, problem_field), template, spec.system_prompt)
            problems.append(Problem(id=ProblemId(pid), messages=messages, answer=answer,
                                    metadata={"source": source, "line": lineno}))
        except (ValueError, KeyError, IndexError) as exc:
            bad.append(f"{unit} {lineno} ({exc})")
    if bad:
        listed = "; ".join(bad[:_MAX_LISTED]) + (f"; ... {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else "")
        raise ConfigError(f"{source}: {len(bad)} rows cannot be used (fields: problem={problem_field!r}, "
                          f"answer={answer_field!r}, id={id_field!r}): {listed}")
    return _select(problems, spec, source)


def _load_code(spec: DatasetSpec, base_dir: Path | None) -> list[Problem]:
    """HumanEval, LiveCodeBench or generated code tasks as ``Problem``s (gold: ``CodeTests``)."""
    system = spec.system_prompt
    if spec.kind == "code-tasks":
        built, source = code_task_problems(spec.count, spec.seed), "code-tasks"
        bad: list[str] = []
    elif spec.name == "humaneval":
        built, bad = code_rows(enumerate(humaneval_rows(), start=1), humaneval_problem)
        source = "humaneval"
    else:
        system = system if system is not None else LCB_SYSTEM
        if spec.hub is not None:
            rows, source = list(enumerate(lcb_rows_from_hub(spec.hub, spec.version_tag), start=1)), spec.hub
        else:
            assert spec.path is not None
            path = spec.path if spec.path.is_absolute() or base_dir is None else base_dir / spec.path
            source = str(path)
            if path.is_dir():
                rows = list(enumerate(lcb_rows_from_dir(path, spec.version_tag), start=1))
            else:
                rows = _read_rows(path, spec.format)
        built, bad = code_rows(rows, lcb_problem, (spec.start_date, spec.end_date), spec.difficulties)
    if bad:
        listed = "; ".join(bad[:_MAX_LISTED]) + (f"; ... {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else "")
        raise ConfigError(f"{source}: {len(bad)} rows cannot be used as code problems: {listed}")
    template = spec.prompt_template or "{problem}"
    problems = [Problem(id=ProblemId(pid), answer=tests.model_dump_json(), metadata=meta,
                        messages=_messages_of(prompt, template, system))
                for pid, prompt, tests, meta in built]
    if not problems:
        raise ConfigError(f"{source}: no problem in the date window {spec.start_date} .. {spec.end_date}")
    return _select(problems, spec, source)


def code_tests_of(problem: Problem) -> CodeTests:
    """The tests of a code problem (its ``answer``)."""
    if problem.answer is None:
        raise ConfigError(f"problem {problem.id} has no tests")
    return CodeTests.model_validate_json(problem.answer)


def _select(problems: list[Problem], spec: DatasetSpec, source: str) -> list[Problem]:
    counts = Counter(p.id for p in problems)
    dups = sorted(i for i, c in counts.items() if c > 1)
    if dups:
        raise ConfigError(f"{source}: duplicate problem ids {dups[:10]}: name a unique dataset.id_field")
    if spec.ids is not None:
        by_id: dict[str, Problem] = {str(p.id): p for p in problems}
        unknown = [i for i in spec.ids if i not in by_id]
        if unknown:
            raise ConfigError(f"{source}: dataset.ids names unknown problems {unknown[:10]}")
        problems = [by_id[i] for i in spec.ids]
    end = None if spec.limit is None else spec.offset + spec.limit
    selected = problems[spec.offset : end]
    if not selected:
        raise ConfigError(f"{source}: the selection (offset={spec.offset}, limit={spec.limit}) is empty")
    return selected
