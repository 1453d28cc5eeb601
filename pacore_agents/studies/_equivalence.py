"""The task's own answer equivalence for policies (``pacore_agents._answers.AnswerEquivalence``).

Contract: ``task_equivalence(grader, gold)`` compares answers as the study grades them, never on
the event loop:
- math (``Grader``): answers are extracted and normalised (``extract_answer``); equal strings
  are equal; otherwise math-verify decides in the grader's process pool, with ``a`` as the gold
  and ``\\boxed{b}`` as the prediction (its verdicts are cached like grades). A check that
  times out counts as not equivalent (the stop rule then passes less often, never more).
- code (``CodeGrader``): a message's answer is its program's test-outcome signature on the
  problem's tests (what it printed or returned, run in the sandbox pool; never compared with
  the expected outputs); equal signatures are equivalent. ``gold`` (the problem's tests) is
  needed for that; a program that produced no signature states no answer.
"""

from __future__ import annotations

from pacore_agents._answers import AnswerEquivalence, extract_answer

from ._code_grading import CodeGrader
from ._graders import AnswerGrader


class MathEquivalence:
    """math-verify, through the grader's pool."""

    name = "math-verify"

    def __init__(self, grader: AnswerGrader) -> None:
        self.grader = grader

    async def answer(self, text: str | None) -> str | None:
        return extract_answer(text)

    async def equivalent(self, a: str, b: str) -> bool:
        grade = await self.grader.grade(a, f"\\boxed{{{b}}}")
        if grade.status == "error":
            raise RuntimeError(grade.detail or "math-verify reported an error")
        return grade.status == "correct"


class SignatureEquivalence:
    """Programs are equivalent when their test-outcome signatures are equal."""

    name = "test-signature"

    def __init__(self, grader: AnswerGrader, gold: str | None) -> None:
        self.grader, self.gold = grader, gold

    async def answer(self, text: str | None) -> str | None:
        if self.gold is None:
            raise RuntimeError("the problem has no tests to compute a program's signature on")
        if not text:
            return None
        return (await self.grader.grade(self.gold, text)).answer

    async def equivalent(self, a: str, b: str) -> bool:
        return a == b


def task_equivalence(grader: AnswerGrader, gold: str | None) -> AnswerEquivalence:
    """The equivalence of the study's task (module contract)."""
    if isinstance(grader, CodeGrader):
        return SignatureEquivalence(grader, gold)
    return MathEquivalence(grader)
