"""The one place that picks a study's grader: ``make_grader(spec.grading)``.

Contract: ``grader = "math"`` gives the math-verify ``Grader``, ``"code"`` the execution
``CodeGrader``; both satisfy ``AnswerGrader`` (grade a text against a problem's gold; start;
close), so the study runner, and anything else that grades (rewards, equivalence checks),
calls them the same way. A code grader whose sandbox is missing raises ``ConfigError`` here,
before a study writes anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._code_grading import CodeGrader
from ._grading import Grade, Grader
from ._spec import GradingSpec


class AnswerGrader(Protocol):
    """What a study needs of a grader."""

    async def grade(self, gold: str | None, text: str | None) -> Grade: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


def make_grader(grading: GradingSpec) -> Grader | CodeGrader:
    """The grader ``grading`` describes (see the module contract)."""
    if grading.grader == "code":
        return CodeGrader(grading.code, workers=grading.workers)
    return Grader(workers=grading.workers, timeout=grading.timeout)
