"""Grading: math-verify in a process pool with per-check timeouts; answer extraction."""

from __future__ import annotations

import signal
import time

import anyio
import psutil
import pytest

from pacore_agents import PacoreError
from pacore_agents.studies import Grader, extract_answer, gold_latex, normalize_answer


def sleepy_check(gold: str, prediction: str) -> bool:
    """Runs in a worker process: longer than any budget in these tests."""
    time.sleep(60)
    return True


def deaf_check(gold: str, prediction: str) -> bool:
    """Ignores the worker's alarm (blocks SIGALRM): only the parent's kill can stop it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
    return True


def test_extract_answer() -> None:
    assert extract_answer("so \\boxed{1} and finally \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_answer("\\boxed{\\text{(C)}}") == "\\text{(C)}"
    assert extract_answer("nested \\boxed{\\sqrt{x^{2}}} ok") == "\\sqrt{x^{2}}"
    assert extract_answer("work...\n#### 1,234") == "1234"
    assert extract_answer("I got 12 then 13.0") == "13"
    assert extract_answer("\\boxed{ 18. }") == "18"
    assert extract_answer("no digits here") is None
    assert extract_answer(None) is None
    assert normalize_answer("$\\left( 3, \\dfrac{\\pi}{2} \\right)$") == "(3,\\frac{\\pi}{2})"


def test_gold_latex() -> None:
    assert gold_latex("#### 42") == "\\boxed{42}"
    assert gold_latex("6*7 = 42\n#### 42") == "\\boxed{42}"
    assert gold_latex("\\frac{1}{2}") == "\\boxed{\\frac{1}{2}}"
    assert gold_latex("$x=2$") == "$x=2$"


def test_math_verify_grades() -> None:
    async def main() -> list[str]:
        async with Grader(workers=1, timeout=10) as grader:
            cases = [
                ("#### 42", "Adding up, the total is \\boxed{42}."),  # GSM8K-style gold
                ("42", "The answer: 42"),
                ("42", "\\boxed{41}"),
                ("\\left( 3, \\frac{\\pi}{2} \\right)", "so \\boxed{(3, \\frac{\\pi}{2})}"),
                ("\\frac{1}{2}", "\\boxed{0.5}"),
                ("42", ""),
            ]
            return [(await grader.grade(g, t)).status for g, t in cases]

    assert anyio.run(main) == ["correct", "correct", "wrong", "correct", "correct", "wrong"]


def test_no_gold_is_an_error_not_wrong() -> None:
    async def main() -> str:
        async with Grader() as grader:
            return (await grader.grade(None, "\\boxed{1}")).status

    assert anyio.run(main) == "error"


def test_timeout_is_recorded_as_timeout() -> None:
    async def main() -> tuple[str, str | None, float]:
        async with Grader(workers=1, timeout=1, grace=20, check=sleepy_check) as grader:
            start = time.monotonic()
            grade = await grader.grade("42", "\\boxed{42}")
            return grade.status, grade.answer, time.monotonic() - start

    status, answer, elapsed = anyio.run(main)
    assert status == "timeout"
    assert answer == "42"  # the extracted answer is kept for votes
    assert elapsed < 15  # the worker's alarm fired, not the parent's 21 s guard


def test_hung_worker_is_killed_and_pool_recovers() -> None:
    async def main() -> tuple[str, str | None, str]:
        async with Grader(workers=1, timeout=1, grace=2, check=deaf_check) as grader:
            hung = await grader.grade("42", "\\boxed{42}")
            grader.check = sleepy_check  # a fresh pool still enforces budgets
            after = await grader.grade("42", "\\boxed{43}")
            return hung.status, hung.detail, after.status

    status, detail, after = anyio.run(main)
    assert status == "timeout" and detail is not None and "killed" in detail
    assert after == "timeout"


@pytest.mark.parametrize("text", ["\\boxed{7}", "7"])
def test_cache_returns_same_verdict(text: str) -> None:
    async def main() -> tuple[str, str]:
        async with Grader() as grader:
            a = await grader.grade("7", text)
            b = await grader.grade("7", text)
            return a.status, b.status

    assert anyio.run(main) == ("correct", "correct")


def _grading_workers() -> list[psutil.Process]:
    """Live grading workers among our children (zombies and processes gone meanwhile are not:
    the suite's subreaper adopts other tests' orphans, which may be exiting right now)."""
    found = []
    for proc in psutil.Process().children():
        try:
            if "spawn_main" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_cancelled_grader_still_stops_its_workers() -> None:
    """Cancelled mid-check (Ctrl-C, a timeout): ``aclose`` still runs, kills the busy worker,
    and a check abandoned in its thread cannot start a new pool afterwards."""
    grader = Grader(workers=1, timeout=30, grace=30, check=deaf_check)
    seen: list[psutil.Process] = []

    async def main() -> None:
        with anyio.CancelScope() as outer:  # the caller's scope: aclose runs cancelled
            async with grader, anyio.create_task_group() as tg:
                tg.start_soon(grader.grade, "42", "\\boxed{42}")
                with anyio.fail_after(20):
                    while not seen:  # the worker is up and busy with the check
                        await anyio.sleep(0.1)
                        seen.extend(_grading_workers())
                await anyio.sleep(1)
                outer.cancel()

    start = time.monotonic()
    anyio.run(main)
    assert time.monotonic() - start < 15
    _, alive = psutil.wait_procs(seen, timeout=5)
    assert alive == []
    with pytest.raises(PacoreError, match="closed"):
        anyio.run(grader.grade, "1", "\\boxed{1}")
    assert _grading_workers() == []


def test_start_readies_a_worker_and_aclose_stops_it() -> None:
    """``start`` returns with one worker up (math-verify loaded); checks then use it, and
    ``aclose`` leaves no worker behind."""
    async def main() -> tuple[list[psutil.Process], str, list[psutil.Process]]:
        async with Grader(workers=1) as grader:
            await grader.start()
            up = _grading_workers()
            status = (await grader.grade("7", "so \\boxed{7}")).status
            assert _grading_workers() == up  # the check ran on the started worker
        return up, status, _grading_workers()

    up, status, after = anyio.run(main)
    assert len(up) == 1 and status == "correct"
    assert after == [] and not up[0].is_running()


def test_start_after_aclose_starts_nothing() -> None:
    async def main() -> list[psutil.Process]:
        grader = Grader()
        await grader.aclose()
        await grader.start()  # a closed grader: nothing to start, and no error either
        return _grading_workers()

    assert anyio.run(main) == []


def hangs_on_marker(gold: str, prediction: str) -> bool:
    """math-verify's verdict, except that a prediction saying HANG ignores every alarm."""
    from pacore_agents.studies._grading_worker import math_verify_check

    if "HANG" in prediction:
        deaf_check(gold, prediction)
    return math_verify_check(gold, prediction)


def test_grade_many_gives_grade_verdicts_in_order() -> None:
    texts = ["so \\boxed{42}", "\\boxed{41}", "", "so \\boxed{42}", "The answer: 42", None, "  "]

    async def main() -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]], list[str]]:
        async with Grader(workers=1, timeout=10) as one_by_one, Grader(workers=1, timeout=10) as batched:
            singles = [await one_by_one.grade("#### 42", t) for t in texts]
            many = await batched.grade_many("#### 42", texts)
            no_gold = await batched.grade_many(None, ["\\boxed{1}", "\\boxed{2}"])
            cached = await batched.grade_many("#### 42", texts[:2])  # served from the cache
            assert [g.status for g in cached] == [g.status for g in many[:2]]
            return ([(g.status, g.answer) for g in singles], [(g.status, g.answer) for g in many],
                    [g.status for g in no_gold])

    singles, many, no_gold = anyio.run(main)
    assert many == singles
    assert [s for s, _ in many] == ["correct", "wrong", "wrong", "correct", "correct", "wrong", "wrong"]
    assert no_gold == ["error", "error"]


def test_grade_many_times_out_only_the_hung_text() -> None:
    async def main() -> list[tuple[str, str | None]]:
        async with Grader(workers=1, timeout=3, grace=0.5, check=hangs_on_marker) as grader:
            grades = await grader.grade_many("42", ["\\boxed{42}", "HANG \\boxed{42}", "\\boxed{7}"])
            return [(g.status, g.detail) for g in grades]

    (first, _), (hung, detail), (third, _) = anyio.run(main)
    assert (first, hung, third) == ("correct", "timeout", "wrong")
    assert detail is not None and "killed" in detail
