"""Grading with math-verify in a process pool (answers are extracted by ``pacore_agents._answers``).

math-verify times its checks out with SIGALRM, which only works in a process's main thread, so
checks run in worker processes (``spawn``: never fork a process that holds engine threads).
Each check has a time budget enforced in the worker by our own SIGALRM (math-verify's own
alarms are switched off so they cannot cancel ours); a worker that does not come back within
the budget plus a grace period (a hang that signals cannot break) is killed and the pool
replaced. Either way the check is recorded with status ``"timeout"``, never as wrong.

Workers never outlive the process that graded with them (``_grading_worker``: the worker's
side, which imports only the standard library). Workers ignore SIGINT: on Ctrl-C the parent
closes the pool (``aclose`` stops it, killing what is busy).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
from pydantic import BaseModel

from pacore_agents._answers import extract_answer as extract_answer  # re-exported
from pacore_agents._answers import normalize_answer as normalize_answer  # re-exported
from pacore_agents._errors import PacoreError
from pacore_agents._main_guard import check_main_guard

from ._datasets import gsm8k_gold
from ._grading_worker import (
    CheckFn,
    block_sigint,
    math_verify_check,
    worker_check,
    worker_check_many,
    worker_init,
    worker_ready,
)

GradeStatus = Literal["correct", "wrong", "timeout", "error"]
_P = ParamSpec("_P")
_R = TypeVar("_R")


class Grade(BaseModel):
    """The verdict on one text: ``status`` and the answer extracted from it (for votes). Code
    grading also gives each test's outcome (``tests``, in the tests' order) and the share that
    passed (``pass_rate``); ``answer`` is then the program's output signature."""

    status: GradeStatus
    answer: str | None = None
    detail: str | None = None
    tests: list[str] | None = None
    pass_rate: float | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def graded(self) -> bool:
        """True if the checker reached a verdict (correct or wrong)."""
        return self.status in ("correct", "wrong")


def gold_latex(answer: str) -> str:
    """The gold answer as math-verify expects it: GSM8K's ``#### N`` reduced to N, then
    wrapped in ``\\boxed{}`` unless it already is boxed or in ``$...$``."""
    gold = gsm8k_gold(answer)
    if "\\boxed" in gold or gold.startswith("$"):
        return gold
    return f"\\boxed{{{gold}}}"


class Grader:
    """Grades texts against gold answers in a process pool. Use as an async context manager.

    ``timeout`` is the per-check budget in seconds; ``grace`` the extra time after which a
    worker that ignores its alarm is killed. Verdicts are cached per (gold, text) unless
    ``cache`` is False (a long-lived reward grader). ``aclose`` ends it for good (a closed
    grader refuses to start workers again).
    """

    def __init__(self, *, workers: int = 1, timeout: float = 5.0, grace: float = 10.0,
                 check: CheckFn = math_verify_check, cache: bool = True) -> None:
        self.workers, self.timeout, self.grace, self.check = workers, timeout, grace, check
        self.cache = cache
        self._pool: cf.ProcessPoolExecutor | None = None
        self._spawner: cf.ThreadPoolExecutor | None = None  # the one thread that starts workers
        self._closed = False
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(max(1, workers) * 2)
        self._cache: dict[tuple[str, str], Grade] = {}

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        check_main_guard("the grader")
        return cf.ProcessPoolExecutor(max_workers=self.workers, initializer=worker_init,
                                      initargs=(os.getpid(),),
                                      mp_context=multiprocessing.get_context("spawn"))

    def _get_pool(self) -> tuple[cf.ProcessPoolExecutor, cf.ThreadPoolExecutor]:
        with self._lock:
            if self._closed:  # an abandoned check must not start a pool after aclose
                raise PacoreError("the grader is closed")
            if self._spawner is None:
                self._spawner = cf.ThreadPoolExecutor(1, thread_name_prefix="pacore-grading-spawner",
                                                      initializer=block_sigint)
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool, self._spawner

    def _kill_pool(self, pool: cf.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _stop_pool(pool, grace=0.0)

    def _blocking_check(self, gold: str, prediction: str) -> tuple[str, str | None]:
        for _ in range(3):  # a pool killed under a sibling check is retried on a new one
            pool, spawner = self._get_pool()
            try:
                fut = _submit(pool, spawner, worker_check, self.check, gold, prediction, self.timeout)
                return fut.result(timeout=self.timeout + self.grace)
            except cf.TimeoutError:
                self._kill_pool(pool)
                return "timeout", f"worker hung past {self.timeout + self.grace}s and was killed"
            except (BrokenProcessPool, cf.CancelledError, RuntimeError):
                self._kill_pool(pool)
        raise PacoreError(
            "the grading process pool broke three times in a row (a worker died at start-up); "
            "a script that runs a study must guard its entry point with if __name__ == '__main__'")

    async def start(self) -> None:
        """Start a worker now (it loads math-verify) instead of at the first check, so that
        cost falls where the caller chooses; returns when it is ready. A worker that cannot
        start is left for the first check to report."""
        await anyio.to_thread.run_sync(self._blocking_start, abandon_on_cancel=True)

    def _blocking_start(self) -> None:
        with contextlib.suppress(PacoreError, BrokenProcessPool, cf.CancelledError, RuntimeError,
                                 cf.TimeoutError):
            pool, spawner = self._get_pool()
            _submit(pool, spawner, worker_ready).result(timeout=60)

    def _known(self, gold: str | None, text: str | None) -> Grade | None:
        """The verdict without a check: no gold -> error, no text -> wrong, else the cache's."""
        if gold is None:
            return Grade(status="error", answer=extract_answer(text), detail="the problem has no gold answer")
        if not text or not text.strip():
            return Grade(status="wrong", answer=None, detail="empty")
        return self._cache.get((gold, text))  # a study asks twice per node: as it finishes, and for its unit

    async def grade(self, gold: str | None, text: str | None) -> Grade:
        """Grade ``text`` against ``gold``; no text -> wrong, no gold -> error."""
        known = self._known(gold, text)
        if known is not None:
            return known
        async with self._limiter:
            return await anyio.to_thread.run_sync(self.grade_blocking, gold, text, abandon_on_cancel=True)

    async def grade_many(self, gold: str | None, texts: Sequence[str | None]) -> list[Grade]:
        """``grade`` of each text, in order, with the same verdicts, in one round trip to a
        worker for the texts not already known (fewer thread and process wake-ups: on a machine
        whose cores a local inference server uses, each one stalls it). A batch that hangs a
        worker past its budgets is graded again text by text, so only the hung text times out."""
        known = [self._known(gold, text) for text in texts]
        todo = list(dict.fromkeys(t for t, k in zip(texts, known, strict=True) if k is None and t))
        graded: dict[str, Grade] = {}
        if todo:
            assert gold is not None  # no gold is known (an error)
            async with self._limiter:
                graded = await anyio.to_thread.run_sync(self._grade_batch_blocking, gold, todo,
                                                        abandon_on_cancel=True)
        out: list[Grade] = []
        for text, grade in zip(texts, known, strict=True):
            out.append(grade if grade is not None else graded[text or ""])  # unknown: a text
        return out

    def _grade_batch_blocking(self, gold: str, texts: list[str]) -> dict[str, Grade]:
        """Check ``texts`` (distinct) in one worker call; cache the verdicts as ``grade`` does."""
        if len(texts) > 1:
            pool, spawner = self._get_pool()
            results: list[tuple[str, str | None]] | None = None
            try:
                fut = _submit(pool, spawner, worker_check_many, self.check, gold_latex(gold), texts,
                              self.timeout)
                results = fut.result(timeout=self.timeout * len(texts) + self.grace)
            except (cf.TimeoutError, BrokenProcessPool, cf.CancelledError, RuntimeError):
                self._kill_pool(pool)  # a hang no alarm broke, or a dead worker: text by text
            if results is not None:
                return {text: self._verdict(gold, text, status, detail)
                        for text, (status, detail) in zip(texts, results, strict=True)}
        return {text: self.grade_blocking(gold, text) for text in texts}

    def grade_blocking(self, gold: str | None, text: str | None) -> Grade:
        """``grade`` for synchronous callers (a trainer's reward function): the same verdict,
        blocking the calling thread (never call it from an event loop). Thread-safe."""
        known = self._known(gold, text)
        if known is not None:
            return known
        assert gold is not None and text is not None
        status, detail = self._blocking_check(gold_latex(gold), text)
        return self._verdict(gold, text, status, detail)

    def _verdict(self, gold: str, text: str, status: str, detail: str | None) -> Grade:
        """A checked text's ``Grade`` (its extracted answer kept for votes), cached if caching."""
        grade = Grade(status=status, answer=extract_answer(text), detail=detail)  # type: ignore[arg-type]
        if self.cache:
            self._cache[(gold, text)] = grade
        return grade

    async def aclose(self) -> None:
        """Stop the workers at once (killed and reaped: a worker holds nothing to flush, and a
        graceful exit tears down sympy for ~0.3 s of CPU), even when the caller is being
        cancelled; no check can start a new pool afterwards."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            spawner, self._spawner = self._spawner, None

        def stop() -> None:
            if pool is not None:
                _stop_pool(pool, grace=0.0)
            if spawner is not None:
                spawner.shutdown(wait=True, cancel_futures=True)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stop)

    async def __aenter__(self) -> Grader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _submit(pool: cf.ProcessPoolExecutor, spawner: cf.ThreadPoolExecutor,
            fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> cf.Future[_R]:
    """``pool.submit(fn, *args)``, called from the spawner thread: a worker that submission
    starts dies with that thread (``PR_SET_PDEATHSIG``), never with a passing worker thread."""
    return spawner.submit(pool.submit, fn, *args, **kwargs).result()


def _stop_pool(pool: cf.ProcessPoolExecutor, grace: float) -> None:
    """Shut ``pool`` down: give its workers ``grace`` seconds to exit, kill the rest, reap
    them all and let the pool's manager thread end (blocking: call from a worker thread)."""
    procs: list[Any] = list((getattr(pool, "_processes", None) or {}).values())
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    if manager is not None:
        manager.join(5)
