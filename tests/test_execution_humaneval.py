"""HumanEval's canonical solutions pass (164/164) and mutated ones fail, graded in the real
sandbox, four programs at once (``CodeExecutor``), so the whole set takes seconds of wall time."""

from __future__ import annotations

import re

import anyio
import pytest

from pacore_agents.execution import CodeExecutor, ExecutionSettings, Verdict, bwrap_path
from pacore_agents.studies._code_datasets import humaneval_problem, humaneval_rows

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
RETURN_RE = re.compile(r"^(\s*)return\b.*$", re.MULTILINE)


def mutate(solution: str) -> str:
    """Every ``return <value>`` becomes ``return None``."""
    return RETURN_RE.sub(r"\1return None", solution)


async def _grade_all(programs: dict[str, str]) -> tuple[dict[str, Verdict], CodeExecutor]:
    executor = CodeExecutor(ExecutionSettings(test_timeout=10.0), workers=4)
    by_id = {row["task_id"]: row for row in humaneval_rows()}
    out: dict[str, Verdict] = {}

    async def one(key: str, code: str) -> None:
        _, _, tests, _ = humaneval_problem(by_id[key.split("#")[0]])
        out[key] = await executor.run(code, tests)

    async with anyio.create_task_group() as tg:
        for key, code in programs.items():
            tg.start_soon(one, key, code)
    return out, executor


def test_canonical_solutions_pass_and_mutants_fail() -> None:
    rows = humaneval_rows()
    assert len(rows) == 164
    programs = {r["task_id"]: r["prompt"] + r["canonical_solution"] for r in rows}
    programs |= {r["task_id"] + "#mutant": r["prompt"] + mutate(r["canonical_solution"]) for r in rows}
    verdicts, executor = anyio.run(_grade_all, programs)
    canonical = {k: v for k, v in verdicts.items() if "#" not in k}
    failed = {k: v.details for k, v in canonical.items() if not v.passed}
    assert failed == {} and len(canonical) == 164
    passing_mutants = sorted(k for k, v in verdicts.items() if "#" in k and v.passed)
    assert passing_mutants == [], passing_mutants
    assert executor.tests_run == 2 * 164
