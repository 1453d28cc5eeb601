"""Grading code answers by execution: the study's side of ``pacore_agents.execution``.

Contract: ``CodeGrader`` has the interface of the math ``Grader`` (``grade(gold, text)``,
``start``, ``aclose``, async context manager), so the study runner grades nodes the same way
and as they finish. ``gold`` is a ``CodeTests`` JSON (``Problem.answer`` of a code dataset);
the program is taken from the message as LiveCodeBench does (``extract_code``). Verdicts:
``correct`` if every test passed, ``wrong`` otherwise (no code, a wrong answer, a crash, a
timeout or a memory limit are the program's), ``error`` if the sandbox itself failed (not
counted as graded). ``answer`` is the program's output signature (votes), None without code.
``start`` runs the canaries (a known-right and a known-wrong program of each test kind) and
raises ``PacoreError`` if they do not come out as they must: a grader that stopped executing
can not grade a study. Verdicts are cached per (tests, program).
``parse_tests``, ``code_grade`` and ``grade_code_blocking`` are the same steps for a synchronous
caller (a trainer's reward function): one verdict, one mapping, wherever code is graded.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import ValidationError

from pacore_agents._errors import ConfigError
from pacore_agents._logging import get_logger
from pacore_agents.execution import (
    CodeExecutor,
    CodeTests,
    ExecutionSettings,
    Verdict,
    execute,
    extract_code,
    require_bwrap,
)

from ._grading import Grade

log = get_logger("pacore_agents.studies")


def parse_tests(gold: str) -> CodeTests:
    """The tests in a code problem's gold; ``ConfigError`` if it is not a ``CodeTests`` JSON."""
    try:
        return CodeTests.model_validate_json(gold)
    except ValidationError as exc:
        raise ConfigError("a code problem's answer is not a CodeTests JSON: grade it with "
                          "[grading] grader = 'math' or give a code dataset") from exc


def code_grade(verdict: Verdict, code: str | None) -> Grade:
    """The study's grade of a verdict (see the module contract)."""
    status = "error" if verdict.sandbox_failed else "correct" if verdict.passed else "wrong"
    first = next((d for s, d in zip(verdict.statuses, verdict.details, strict=False) if s != "passed"), None)
    return Grade(status=status, answer=verdict.signature if code is not None else None,  # type: ignore[arg-type]
                 detail=first, tests=list(verdict.statuses), pass_rate=verdict.pass_rate)


def grade_code_blocking(tests: CodeTests, text: str | None, settings: ExecutionSettings) -> Grade:
    """``CodeGrader.grade`` for a synchronous caller, uncached: blocks the calling thread for
    one sandbox run (never call it from an event loop's thread). Thread-safe."""
    code = extract_code(text)
    return code_grade(execute(code, tests, settings), code)


class CodeGrader:
    """Grades programs against their tests in the sandbox, ``workers`` sandboxes at once."""

    def __init__(self, settings: ExecutionSettings, *, workers: int = 1) -> None:
        if settings.sandbox == "bwrap":
            require_bwrap()  # ConfigError naming the package, before anything is written
        else:
            log.warning("code grading WITHOUT A SANDBOX (grading.code.sandbox = 'none'): model-written "
                        "programs run as this user, with this user's files, network and processes")
        self.settings = settings
        self.executor = CodeExecutor(settings, workers=workers)
        self._tests: dict[str, tuple[CodeTests, str]] = {}
        self._cache: dict[tuple[str, str | None], Grade] = {}
        self._closed = False

    async def _parse(self, gold: str) -> tuple[CodeTests, str]:
        """The tests in ``gold`` and their key, parsed once per gold in a worker thread (a
        LiveCodeBench problem's tests can be tens of megabytes)."""
        parsed = self._tests.get(gold)
        if parsed is None:
            tests = await anyio.to_thread.run_sync(parse_tests, gold)
            parsed = self._tests[gold] = (tests, await anyio.to_thread.run_sync(tests.key))
        return parsed

    async def start(self) -> None:
        """Run the canaries; raises ``PacoreError`` if the grader does not execute right."""
        await self.executor.check_canaries()

    async def grade(self, gold: str | None, text: str | None) -> Grade:
        """Grade the program in ``text`` against the tests in ``gold``."""
        if gold is None:
            return Grade(status="error", detail="the problem has no tests")
        tests, tests_key = await self._parse(gold)
        code = extract_code(text)
        key = (tests_key, code)
        if key in self._cache:
            return self._cache[key]
        grade = code_grade(await self.executor.run(code, tests), code)
        self._cache[key] = grade
        return grade

    def figures(self) -> dict[str, Any]:
        """Grading throughput (tests/s) and time of this grader's run."""
        return self.executor.figures()

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> CodeGrader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
