"""Reward throughput: ``compute_score`` one call at a time (verl's reward manager) versus
``score_batch`` (TRL and OpenRLHF adapters), with 1 and 2 grading workers, in one run.

    python benchmarks/bench_rewards.py --n 400
    python benchmarks/bench_rewards.py --domain code --n 40

Math solutions are synthetic GSM8K-style texts (a think block, then a boxed answer; half
right). Code solutions are programs for the generated code tasks (add, subtract, multiply,
square; 5 functional tests each) after a think block, half right, graded in the bubblewrap
sandbox (the grader start is the canaries).
Prints checks per second and the ratios to the sequential baseline. Each mode grades the same
texts with a freshly started grader (its start-up is timed separately and excluded).
"""

from __future__ import annotations

import argparse
import random
import time

from pacore_agents.studies import close_rewards, compute_score, configure_rewards, score_batch


def _texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    golds, texts = [], []
    for i in range(n):
        gold = rng.randint(1, 10_000)
        answer = gold if i % 2 == 0 else gold + rng.randint(1, 9)
        golds.append(str(gold))
        texts.append(f"<think>step {i}: the reference says \\boxed{{{gold + 1}}}</think>"
                     f"So the total is \\boxed{{{answer}}}.")
    return texts, golds


_CODE = {"add": ("a, b", "a + b"), "subtract": ("a, b", "a - b"), "multiply": ("a, b", "a * b"),
         "square": ("n", "n * n")}


def _code_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    from pacore_agents.studies._code_datasets import code_task_problems

    problems = [p for p in code_task_problems(3 * n, seed) if p[3]["task"] in _CODE][:n]
    golds, texts = [], []
    for i, (_, _, tests, info) in enumerate(problems):
        params, body = _CODE[info["task"]]
        body = body if i % 2 == 0 else "12345"
        golds.append(tests.model_dump_json())
        texts.append(f"<think>try {i}</think>Here it is:\n```python\ndef {info['task']}({params}):\n"
                     f"    return {body}\n```\n")
    return texts, golds


def _timed(mode: str, workers: int, texts: list[str], golds: list[str], source: str) -> tuple[float, float, list[float]]:
    configure_rewards(workers=workers)
    t0 = time.perf_counter()
    compute_score(source, texts[0], golds[0])  # starts the worker(s) / runs the canaries: excluded
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    if mode == "sequential":
        scores = [compute_score(source, t, g) for t, g in zip(texts, golds, strict=True)]
    else:
        scores = score_batch([source] * len(texts), texts, golds)
    elapsed = time.perf_counter() - t0
    close_rewards()
    return start, elapsed, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domain", choices=["math", "code"], default="math")
    args = parser.parse_args()
    texts, golds = (_texts if args.domain == "math" else _code_texts)(args.n, args.seed)
    source = f"pacore/{args.domain}/bench"
    base: float | None = None
    reference: list[float] | None = None
    print(f"{len(texts)} {args.domain} solutions; | mode | workers | start s | grading s | checks/s | vs sequential |")
    for mode, workers in (("sequential", 1), ("batch", 1), ("batch", 2)):
        start, elapsed, scores = _timed(mode, workers, texts, golds, source)
        reference = reference or scores
        assert scores == reference, "a mode graded differently"
        base = base or elapsed
        print(f"| {mode} | {workers} | {start:.2f} | {elapsed:.2f} | {args.n / elapsed:.0f} | {base / elapsed:.2f}x |")
    assert reference is not None
    print(f"reward sum: {sum(reference):.1f} of {len(texts)} (half right by construction)")


if __name__ == "__main__":
    main()
