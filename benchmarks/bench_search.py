"""The search's own overhead: ``run_search`` against ``run_study`` of the same arms, side by side.

A zero-latency FunctionEngine (each request answered at once), so the wall time is the
library's work: in the search, Optuna's ask/tell on the journal file, the claims, the cache
and one study runner per trial; in the study, the same arms' units in one runner. Both grade
with math-verify in the same pool size and run the same units (the search's arms, on the same
problems). Printed: wall and CPU seconds of each, their ratio, and the overhead per trial.

    python benchmarks/bench_search.py [--problems 20] [--out search_bench.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from pacore_agents import FunctionEngine, GenerationRequest
from pacore_agents.studies import StudySpec, load_search, run_search, run_study

SEARCH = """
seed = 0
seeded = false
trajectory_pool = true
[engine]
kind = "function"
function = "unused:handler"
[dataset]
kind = "arithmetic"
count = {count}
[search]
trials = 18
search_problems = {problems}
heldout_problems = 1
patience = 500
[[search.dimension]]
path = "widths"
choices = [[2], [4], [8]]
[[search.dimension]]
path = "roles.sink.sampling.temperature"
choices = [1.0, 0.6, 0.3]
[[search.dimension]]
path = "compaction"
choices = ["pacore", "boxed"]
"""


def handler(request: GenerationRequest) -> list[str]:
    found = re.search(r"(\d+) ([-+*]) (\d+)", request.messages[-1].content)
    assert found is not None
    a, op, b = found.groups()
    value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    return [f"so \\boxed{{{value}}}"] * request.n


async def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - wall, time.process_time() - cpu


async def main(problems: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "search.toml"
        path.write_text(SEARCH.format(count=problems + 1, problems=problems))
        spec = load_search(path)
        search_out = Path(tmp) / "search"
        search_wall, search_cpu = await _timed(lambda: run_search(spec, search_out, engine=FunctionEngine(
            handler, keep_requests=False), heldout=False))
        from pacore_agents.studies._store import ResultStore

        store = ResultStore.open_readonly(search_out / "search")
        arms = [{**json.loads(v), "name": k.removeprefix("search_arm:")} for k, v in store.meta_items("search_arm:")]
        ids = sorted({o.problem_id for o in store.outcomes()})
        store.close()
        study = StudySpec.model_validate({**{k: v for k, v in spec.base.items()},
                                          "dataset": {**spec.base["dataset"], "ids": ids}, "arms": arms})
        study_wall, study_cpu = await _timed(lambda: run_study(study, Path(tmp) / "study", engine=FunctionEngine(
            handler, keep_requests=False)))
    trials = len(arms)
    return {"trials": trials, "problems": problems, "units": trials * problems,
            "search_wall_s": round(search_wall, 2), "search_cpu_s": round(search_cpu, 2),
            "study_wall_s": round(study_wall, 2), "study_cpu_s": round(study_cpu, 2),
            "wall_ratio": round(search_wall / study_wall, 2), "cpu_ratio": round(search_cpu / study_cpu, 2),
            "overhead_per_trial_wall_s": round((search_wall - study_wall) / trials, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = anyio.run(main, args.problems)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0)
