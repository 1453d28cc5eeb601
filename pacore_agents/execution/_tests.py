"""What a code task's tests are, and what running them gave.

Contract: ``CodeTests`` is the gold of a code problem, serialized as JSON in ``Problem.answer``
(``CodeTests.model_validate_json``): the test kind, the tests in order, the function name of
functional tests and a prefix prepended to the program (HumanEval's imports). A ``Verdict``
has one ``TestStatus`` per test in the same order; ``passed`` is True only if every test
passed; ``pass_rate`` is passed tests / tests (the paper's code reward); ``signature`` is a
hash of what the program produced on every test (its outputs or error kinds, never the
expected outputs), so programs that behave alike on the tests vote together.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

TestKind = Literal["stdin", "functional", "check"]
CompareMode = Literal["lcb", "judge"]
TestStatus = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory_limit", "no_code",
                     "sandbox_error"]
#: LiveCodeBench's result codes: True (1) passed, -2 wrong answer, -3 time limit, -4 runtime
#: error; -1 is its global timeout (here: the sample's wall budget ran out before the test).
LCB_CODES: dict[TestStatus, int] = {"passed": 1, "wrong_answer": -2, "timeout": -3, "runtime_error": -4,
                                    "memory_limit": -4, "no_code": -2, "sandbox_error": -1}


class TestCase(BaseModel):
    """One test. stdin: the input text and the expected stdout. functional: one JSON value
    per input line (the arguments) and the JSON of the expected return value. check: the test
    code (defining ``check``) as input and the entry point's name as output."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__: ClassVar[bool] = False  # not a pytest class

    input: str
    output: str


class CodeTests(BaseModel):
    """The gold of a code problem (see the module contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TestKind
    tests: list[TestCase] = Field(min_length=1)
    fn_name: str | None = None
    prefix: str = ""

    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode("utf-8")).hexdigest()


class Verdict(BaseModel):
    """The outcome of one program on its tests (see the module contract)."""

    statuses: list[TestStatus]
    details: list[str] = Field(default_factory=list)
    signature: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.statuses) and all(s == "passed" for s in self.statuses)

    @property
    def pass_rate(self) -> float:
        return sum(s == "passed" for s in self.statuses) / max(len(self.statuses), 1)

    @property
    def sandbox_failed(self) -> bool:
        """True if the grader itself failed (not the program): the verdict is unknown."""
        return "sandbox_error" in self.statuses

    def lcb_codes(self) -> list[int]:
        return [LCB_CODES[s] for s in self.statuses]
