"""The one place that picks a study's grader: ``make_grader(spec.grading)``.

Contract: ``grader = "math"`` gives the math-verify ``Grader``, ``"code"`` the execution
``CodeGrader``; both satisfy ``AnswerGrader`` (grade a text against a problem's gold; start;
close), so the study runner, and anything else that grades (rewards, equivalence checks),
calls them the same way. A code grader whose sandbox is missing raises ``ConfigError`` here,
before a study writes anything. ``GradeAsFinished`` grades a run's nodes as they finish.
"""

from __future__ import annotations

from typing import Any, Protocol

from anyio.abc import TaskGroup

from pacore_agents._trace import NodeRecord, QuietObserver

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


class GradeAsFinished(QuietObserver):
    """A ``RunObserver`` that starts grading each node in ``tg`` as soon as its record is final;
    the verdict lands in the grader's cache, where ``_grade_nodes`` finds it. The nodes that
    finish in one step (a request's n samples) go to a math grader as one batch."""

    def __init__(self, tg: TaskGroup, grader: AnswerGrader, gold: str | None) -> None:
        self.tg, self.grader, self.gold = tg, grader, gold
        self._pending: list[str] = []

    def node_finished(self, record: NodeRecord) -> None:
        message = record.message
        if self.gold is not None and record.error is None and record.content is not None and message is not None:
            if isinstance(self.grader, Grader):
                self._pending.append(message)
                if len(self._pending) == 1:  # the batch is sent once this step's records are in
                    self.tg.start_soon(self._flush)
            else:
                self.tg.start_soon(self.grader.grade, self.gold, message)

    async def _flush(self) -> None:
        texts, self._pending = self._pending, []
        assert isinstance(self.grader, Grader)
        await self.grader.grade_many(self.gold, texts)
