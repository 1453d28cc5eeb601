"""Executing a program on its tests: the sandbox job, its verdict, the canaries, a bounded pool.

Contract:
- ``execute(code, tests, settings)`` (blocking) runs every test of one program in ONE sandbox
  process and returns a ``Verdict``; what the program does never raises. The wall budget of
  the sample is ``settings.sample_timeout`` or, unset, ``test_timeout`` x tests + 5 s (as
  LiveCodeBench's ``(timeout + 1) x tests + 5``); tests left without a result when it runs out
  are ``timeout``. A harness that sends no result: ``sandbox_error`` if bubblewrap itself
  failed (nothing ran), else ``runtime_error`` (the program ended its test process).
- Every run carries a known-wrong canary: after the program's tests, the same sandbox runs a
  small program through the same code path against an expected output it cannot produce (a
  fresh random token). Unless it comes back "wrong" (executed, compared, rejected), the
  runner is not executing and the verdict is ``sandbox_error`` on every test. ``check_canaries`` also runs a known-right and a known-wrong program of
  every kind before a study starts.
- ``CodeExecutor`` runs ``execute`` in worker threads, at most ``workers`` at once (an anyio
  ``CapacityLimiter``): the event loop never blocks, and a sandbox holds no engine slot.
  It counts tests and seconds for the throughput figure.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from pacore_agents._errors import PacoreError

from ._harness import digest
from ._sandbox import Isolation, SandboxLimits, run_job
from ._tests import CodeTests, CompareMode, TestCase, TestStatus, Verdict

#: the known-wrong canary's time limit (at least the tests' own): it is trivial, so only an
#: overloaded machine makes it time out, and then nothing proves that the tests executed
CANARY_TIMEOUT = 10.0

_HARNESS_STATUS: dict[str, TestStatus] = {"passed": "passed", "wrong": "wrong_answer", "runtime": "runtime_error",
                                          "timeout": "timeout", "memory": "memory_limit"}


class ExecutionSettings(BaseModel):
    """How programs are executed and compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: CompareMode = Field(default="lcb", description="lcb: LiveCodeBench's testing_util; judge: a "
                              "fresh python process per test, as a judge runs it")
    sandbox: Isolation = Field(default="bwrap", description="bwrap (bubblewrap) or none (NO isolation)")
    test_timeout: float = Field(default=6.0, gt=0, description="seconds per test (LiveCodeBench: 6)")
    sample_timeout: float | None = Field(default=None, gt=0, description="wall seconds for all of a "
                                         "sample's tests (default: test_timeout x tests + 5)")
    limits: SandboxLimits = Field(default_factory=SandboxLimits, description="rlimits and sizes")


def _canary(kind: str) -> dict[str, Any]:
    """A known-wrong program of ``kind`` and its test: its expected output is a fresh token."""
    token = f"canary-{secrets.token_hex(8)}"
    if kind == "stdin":
        return {"kind": kind, "fn_name": None, "code": "print(input())\n",
                "tests": [{"input": "wrong", "output": token}]}
    if kind == "functional":
        return {"kind": kind, "fn_name": "echo", "code": "def echo(x):\n    return x\n",
                "tests": [{"input": '"wrong"', "output": f'"{token}"'}]}
    return {"kind": kind, "fn_name": None, "code": "def echo(x):\n    return x\n",
            "tests": [{"input": f"def check(candidate):\n    assert candidate('{token}') == 'wrong'\n",
                       "output": "echo"}]}


def execute(code: str | None, tests: CodeTests, settings: ExecutionSettings) -> Verdict:
    """The verdict of ``code`` on ``tests`` (see the module contract); blocking."""
    n = len(tests.tests)
    if code is None or not code.strip():
        return Verdict(statuses=["no_code"] * n, details=["no code block"] * n, signature=None)
    job: dict[str, Any] = {
        "mode": settings.mode, "kind": tests.kind, "code": tests.prefix + code, "fn_name": tests.fn_name,
        "tests": [t.model_dump() for t in tests.tests], "timeout": settings.test_timeout,
        "output_cap": settings.limits.output_mb * 1024 * 1024,
        # the canary is trivial: its own time limit keeps a loaded machine from failing it
        "canary": {**_canary(tests.kind), "timeout": max(settings.test_timeout, CANARY_TIMEOUT)}}
    wall = settings.sample_timeout or (settings.test_timeout + 1) * n + 5.0
    raw = run_job(job, isolation=settings.sandbox, limits=settings.limits, wall=wall)
    results = raw.results
    if results is None or len(results) != n + 1:
        if raw.timed_out:
            statuses: list[TestStatus] = ["timeout"] * n
            details = [f"the sample's wall budget of {wall:.0f}s ran out"] * n
        elif raw.stderr.startswith("bwrap:") or raw.returncode is None:
            statuses, details = ["sandbox_error"] * n, [raw.stderr.strip()[:200]] * n
        else:
            statuses = ["runtime_error"] * n
            details = [f"the test process ended without a verdict (exit status {raw.returncode})"] * n
        return Verdict(statuses=statuses, details=details, signature=digest(statuses), seconds=raw.seconds)
    if results[-1].get("status") != "wrong":
        why = ("timed out: execution not proven (an overloaded machine?)" if results[-1].get("status") == "timeout"
               else f"came back {results[-1].get('status')!r}, not 'wrong': the tests were not executed")
        return Verdict(statuses=["sandbox_error"] * n, details=[f"the known-wrong canary {why}"] * n,
                       signature=None, seconds=raw.seconds)
    results = results[:n]
    statuses = [_HARNESS_STATUS.get(str(r.get("status")), "runtime_error") for r in results]
    return Verdict(statuses=statuses, details=[str(r.get("detail") or "")[:200] for r in results],
                   signature=digest([str(r.get("digest")) for r in results]), seconds=raw.seconds)


_RIGHT_WRONG: dict[str, tuple[CodeTests, str, str]] = {
    "stdin": (CodeTests(kind="stdin", tests=[TestCase(input="2 3\n", output="5\n")]),
              "a, b = map(int, input().split())\nprint(a + b)\n", "print(-1)\n"),
    "functional": (CodeTests(kind="functional", fn_name="add", tests=[TestCase(input="2\n3", output="5")]),
                   "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"),
    "check": (CodeTests(kind="check", tests=[TestCase(
        input="def check(candidate):\n    assert candidate(2, 3) == 5\n", output="add")]),
        "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a * b\n"),
}


def check_canaries(settings: ExecutionSettings) -> None:
    """Run a known-right and a known-wrong program of each test kind; raise ``PacoreError``
    unless the right ones pass and the wrong ones fail (blocking)."""
    for kind, (tests, right, wrong) in _RIGHT_WRONG.items():
        good, bad = execute(right, tests, settings), execute(wrong, tests, settings)
        if not good.passed or bad.passed:
            why = good.details[0] if not good.passed else "a known-wrong program passed"
            raise PacoreError(f"the code grader fails its canaries ({kind} tests, {settings.sandbox} "
                              f"sandbox, {settings.mode} mode): {why}")


class CodeExecutor:
    """``execute`` in worker threads, ``workers`` at once; counts tests and busy seconds."""

    def __init__(self, settings: ExecutionSettings, *, workers: int = 1) -> None:
        self.settings, self.workers = settings, workers
        self._limiter = anyio.CapacityLimiter(max(1, workers))
        self.tests_run = 0
        self.samples_run = 0
        self.busy_seconds = 0.0
        self.first: float | None = None
        self.last: float | None = None

    async def run(self, code: str | None, tests: CodeTests) -> Verdict:
        async with self._limiter:
            started = time.monotonic()
            self.first = started if self.first is None else self.first
            verdict = await anyio.to_thread.run_sync(execute, code, tests, self.settings, abandon_on_cancel=True)
            self.last = time.monotonic()
            self.busy_seconds += self.last - started
        if code is not None:
            self.tests_run += len(tests.tests)
            self.samples_run += 1
        return verdict

    async def check_canaries(self) -> None:
        await anyio.to_thread.run_sync(check_canaries, self.settings, abandon_on_cancel=True)

    def figures(self) -> dict[str, Any]:
        """Tests and samples executed, wall seconds from the first to the last, tests/s."""
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {"tests": self.tests_run, "samples": self.samples_run, "span_seconds": round(span, 3),
                "busy_seconds": round(self.busy_seconds, 3), "workers": self.workers,
                "tests_per_second": round(self.tests_run / span, 2) if span > 0 else None,
                "sandbox": self.settings.sandbox, "mode": self.settings.mode}
