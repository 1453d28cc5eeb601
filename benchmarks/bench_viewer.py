"""``pacore view`` on large inputs: time to first render of a 10,000-node trace and a 5,000-row
study in headless chromium (Playwright), served and exported.

Inputs are synthetic, built with the library's own models (``RunTrace``/``NodeRecord``;
``SampleOutcome`` rows in a real ``ResultStore``): the trace has 9 rounds of 1,111 trajectories
and a sink, each trajectory of rounds 2.. seeing 4 references of the round before (40k edges:
over the viewer's edge limit, so edges are drawn for the selected node only); the study has
1,000 problems x 5 arms (single, self-consistency, 3 PaCoRe widths: the tests' fixture spec). Measured per input:
the Python side (building the view's JSON), then in the browser the time from navigation to
the first painted frame after the view is built (``#app[data-ready]`` plus two animation
frames), and for the trace the time from a click on the sink to its references highlighted.

    python benchmarks/bench_viewer.py [--repeats 3] [--out /tmp/pacore-bench-viewer]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pacore_agents._engine import EngineInfo, Usage  # noqa: E402
from pacore_agents._messages import ChatMessage  # noqa: E402
from pacore_agents._trace import NodeRecord, RoundSummary, RunTrace  # noqa: E402
from pacore_agents.studies import NodeOutcome, ResultStore, SampleOutcome, parse_study  # noqa: E402
from pacore_agents.viewer import ViewSource, export_html  # noqa: E402
from tests._browser import browser_context, browser_missing, viewer_server  # noqa: E402
from tests._viewer_fixtures import study_text  # noqa: E402

FRAMES = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def big_trace(path: Path, rounds: int = 9, width: int = 1111, refs: int = 4, seed: int = 0) -> int:
    rng = random.Random(seed)
    nodes: list[NodeRecord] = []
    summaries = []
    t = 1000.0
    for r in range(1, rounds + 2):
        n = width if r <= rounds else 1
        for a in range(n):
            inputs = [] if r == 1 else [f"r{r - 1}.a{i}" for i in rng.sample(range(width), refs)]
            msg = f"step {r}.{a}: " + " ".join(rng.choice("abcdefgh") * 3 for _ in range(30)) + f" \\boxed{{{rng.randint(0, 9)}}}"
            prompt = "Problem: what is 3 + 4?\n" + "".join(f"Reference {i + 1}: ...\n" for i in range(len(inputs)))
            nodes.append(NodeRecord(id=f"r{r}.a{a}", round=r, agent=a, role="sink" if r > rounds else "explorer",
                                    inputs=inputs, prompt=[ChatMessage(role="user", content=prompt)], content=msg,
                                    message=msg, finish_reason="stop", usage=Usage(prompt_tokens=50, completion_tokens=40),
                                    status="ok", attempts=1, request=len(nodes), seed=len(nodes)))
        summaries.append(RoundSummary(round=r, nodes=n, requests=n, failed=0, completion_tokens=40 * n,
                                      started_at=t, ended_at=t + 1))
        t += 1
    trace = RunTrace(version=2, answer=nodes[-1].message, sink=nodes[-1].id, effective_ttc=40 * len(nodes),
                     problem=[ChatMessage(role="user", content="what is 3 + 4?")], problem_id="big", config={},
                     engine=EngineInfo(name="synthetic"), topology={}, topology_name=f"synthetic[{width}]x{rounds}",
                     nodes=sorted(nodes, key=lambda nd: (nd.round, nd.agent)), rounds=summaries, started_at=1000.0, ended_at=t)
    path.write_text(trace.model_dump_json(), encoding="utf-8")
    return len(nodes)


def big_study(out: Path, problems: int = 1000, seed: int = 0) -> int:
    rng = random.Random(seed)
    text = study_text(problems, widths="[[2], [4], [8]]")
    store = ResultStore.open(out, parse_study(text), text)
    store.set_meta_once("sc_sizes:sc", json.dumps({"w2": 3, "w4": 5, "w8": 9}))
    rows = 0
    try:
        for p in range(problems):
            pid = f"arith-{p}"
            for arm, width in (("single", 0), ("sc", 9), ("w2", 2), ("w4", 4), ("w8", 8)):
                r1 = [NodeRecord(id=f"r1.a{i}", round=1, agent=i, role="explorer", message=f"\\boxed{{{rng.randint(0, 2)}}}",
                                 content="x", usage=Usage(completion_tokens=30), status="ok", attempts=1)
                      for i in range(max(width, 1))]
                graded = [NodeOutcome(id=n.id, round=1, agent=n.agent, tokens=30,
                                      status="correct" if rng.random() < 0.5 else "wrong", answer="1") for n in r1]
                sink = None
                if arm.startswith("w"):
                    ids = [n.id for n in r1]
                    sink_rec = NodeRecord(id="r2.a0", round=2, agent=0, role="sink", inputs=ids, message="\\boxed{1}",
                                          content="y", usage=Usage(completion_tokens=30), status="ok", attempts=1)
                    graded.append(NodeOutcome(id="r2.a0", round=2, agent=0, inputs=ids, tokens=30,
                                              status="correct" if rng.random() < 0.6 else "wrong", answer="1"))
                    trace: dict[str, Any] = RunTrace(
                        version=2, answer="\\boxed{1}", sink="r2.a0", effective_ttc=30 * len(graded),
                        problem=[ChatMessage(role="user", content=f"What is {p}?")], problem_id=pid, config={},
                        engine=EngineInfo(name="synthetic"), topology={}, topology_name=arm, nodes=[*r1, sink_rec],
                        started_at=0.0, ended_at=1.0).model_dump(mode="json")
                    sink = "r2.a0"
                else:
                    trace = {"kind": "single" if arm == "single" else "self-consistency", "problem_id": pid,
                             "problem": [{"role": "user", "content": f"What is {p}?"}], "sizes": {},
                             "nodes": [n.model_dump(mode="json") for n in r1]}
                status = graded[-1].status
                outcome = SampleOutcome(arm=arm, problem_id=pid, sample=0,
                                        kind="topology" if sink else ("single" if arm == "single" else "self-consistency"),
                                        status=status, answer="1", effective_ttc=30 * len(graded), sink=sink, nodes=graded)
                store.put(outcome, json.dumps(trace))
                rows += 1
    finally:
        store.close()
    return rows


def first_render(ctx: Any, url: str, parts: dict[str, list[float]] | None = None) -> float:
    page = ctx.new_page()
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#app[data-ready='1']", timeout=120_000)
    page.evaluate(FRAMES)
    took = time.perf_counter() - started
    timings = page.evaluate("window.pacoreView.timings || null")
    if parts is not None and timings:  # the run view's own marks: DOM, then the graph library's init
        parts.setdefault("  of which: page built", []).append(timings["page_ms"] / 1000)
        parts.setdefault("  of which: cytoscape init, 10,000 nodes", []).append(timings["graph_ms"] / 1000)
    page.close()
    return took


def click_sink(ctx: Any, url: str) -> float:
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#app[data-ready='1']", timeout=120_000)
    started = time.perf_counter()
    page.click("#select-sink")
    page.wait_for_selector("#refs li")
    page.evaluate(FRAMES)
    took = time.perf_counter() - started
    page.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/pacore-bench-viewer"))
    args = ap.parse_args()
    if (why := browser_missing()) is not None:
        sys.exit(f"bench_viewer: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    trace_path, study_path = args.out / "trace10k.json", args.out / "study5k"
    t0 = time.perf_counter()
    nodes = big_trace(trace_path)
    print(f"trace: {nodes} nodes, {trace_path.stat().st_size / 1e6:.1f} MB, made in {time.perf_counter() - t0:.1f} s")
    if not (study_path / "results.sqlite").exists():
        t0 = time.perf_counter()
        rows = big_study(study_path)
        print(f"study: {rows} rows, made in {time.perf_counter() - t0:.1f} s")
    results: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    ViewSource(trace_path).trace(trace_path.name)
    print(f"python: trace view JSON {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    ViewSource(study_path).study()
    print(f"python: study view JSON (metrics, pairs with bootstrap) {time.perf_counter() - t0:.2f} s")
    exports = {}
    for name, path in (("trace", trace_path), ("study", study_path)):
        t0 = time.perf_counter()
        exports[name] = export_html(ViewSource(path), args.out / f"{name}.html")
        print(f"export {name}: {exports[name].stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    with browser_context() as ctx:
        for name, path in (("trace", trace_path), ("study", study_path)):
            with viewer_server(path) as url:
                for _ in range(args.repeats):
                    results.setdefault(f"{name}: served, first render", []).append(first_render(ctx, url, results))
                    if name == "trace":
                        results.setdefault("trace: click the sink -> references shown", []).append(click_sink(ctx, url))
            for _ in range(args.repeats):
                results.setdefault(f"{name}: exported file, first render", []).append(first_render(ctx, exports[name].as_uri()))
    print(f"\n{'measure':48} {'median s':>9} {'min s':>7} {'max s':>7}  (n={args.repeats})")
    for key, vals in results.items():
        print(f"{key:48} {statistics.median(vals):9.2f} {min(vals):7.2f} {max(vals):7.2f}")


if __name__ == "__main__":
    main()
