"""The code sandbox's cost, measured side by side in one run (not a timed test).

1. Overhead per test: the same one-test program graded by ``execute`` in the bubblewrap
   sandbox and with ``sandbox = "none"`` (the same harness in a bare subprocess with the same
   rlimits), interleaved, ``--repeats`` times each; and the bare floor: ``python3 -c pass``
   directly vs inside the same bwrap command line. Medians and their ratio.
2. Grading throughput on HumanEval's 164 canonical solutions, ``--workers`` sandboxes at once
   (``CodeExecutor``, lcb mode): wall seconds and tests/s.

    PYTHONPATH=$PWD python benchmarks/bench_sandbox.py --repeats 40 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import anyio

from pacore_agents.execution import (
    CodeExecutor,
    CodeTests,
    ExecutionSettings,
    SandboxLimits,
    TestCase,
    execute,
)
from pacore_agents.execution._sandbox import bwrap_command, require_bwrap, sandbox_python
from pacore_agents.studies._code_datasets import humaneval_problem, humaneval_rows

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = CodeTests(kind="stdin", tests=[TestCase(input="2 3\n", output="5\n")])


def _median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def overhead(repeats: int, mode: str) -> dict[str, float]:
    boxed, bare = ExecutionSettings(mode=mode), ExecutionSettings(mode=mode, sandbox="none")  # type: ignore[arg-type]
    python = sandbox_python()
    cmd = bwrap_command(require_bwrap(), python, SandboxLimits())
    floor_box = [*cmd[:cmd.index("--")], "--", python, "-I", "-S", "-c", "pass"]
    floor_bare = [python, "-I", "-S", "-c", "pass"]
    times: dict[str, list[float]] = {"sandbox": [], "none": [], "floor_bwrap": [], "floor_bare": []}
    for _ in range(repeats):
        for key, run in (("sandbox", lambda: execute(PROGRAM, TESTS, boxed)),
                         ("none", lambda: execute(PROGRAM, TESTS, bare)),
                         ("floor_bwrap", lambda: subprocess.run(floor_box, check=True)),
                         ("floor_bare", lambda: subprocess.run(floor_bare, check=True))):
            started = time.perf_counter()
            result = run()
            times[key].append(time.perf_counter() - started)
            if key in ("sandbox", "none"):
                assert result.passed, result  # type: ignore[union-attr]
    return {k: _median_ms(v) for k, v in times.items()}


async def throughput(workers: int) -> dict[str, float]:
    executor = CodeExecutor(ExecutionSettings(test_timeout=10.0), workers=workers)
    rows = humaneval_rows()
    passed: list[bool] = []

    async def one(row: dict[str, str]) -> None:
        _, _, tests, _ = humaneval_problem(row)
        passed.append((await executor.run(row["prompt"] + row["canonical_solution"], tests)).passed)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for row in rows:
            tg.start_soon(one, row)
    wall = time.monotonic() - started
    return {"programs": len(rows), "passed": sum(passed), "wall_s": wall, "tests_per_s": executor.tests_run / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for mode in ("lcb", "judge"):
        o = overhead(args.repeats, mode)
        print(f"[{mode}] one-test program, median of {args.repeats}: sandbox {o['sandbox']:.1f} ms, no sandbox "
              f"{o['none']:.1f} ms, ratio {o['sandbox'] / o['none']:.2f}, overhead {o['sandbox'] - o['none']:.1f} ms")
        print(f"[floor] python3 -c pass: in bwrap {o['floor_bwrap']:.1f} ms, bare {o['floor_bare']:.1f} ms, "
              f"ratio {o['floor_bwrap'] / o['floor_bare']:.2f}")
    t = anyio.run(throughput, args.workers)
    print(f"HumanEval canonical, {args.workers} sandboxes at once: {t['passed']}/{t['programs']} passed in "
          f"{t['wall_s']:.1f} s, {t['tests_per_s']:.1f} tests/s")


if __name__ == "__main__":
    main()
