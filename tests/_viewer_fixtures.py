"""Real data for the viewer's tests: a study and a trace made with the library's FunctionEngine,
whose texts are hostile (markup of every kind) and whose answers are right or wrong by a fixed
rule, so that flips, emergent answers and failed nodes all occur."""

from __future__ import annotations

import zlib
from pathlib import Path

import anyio

from pacore_agents import EngineError, FunctionEngine, GenerationRequest

#: markup that must render as text (a browser executing any of it sets window.__pwned)
HOSTILE = ('<script>window.__pwned=1</script></textarea></script><img src=x onerror="window.__pwned=1">'
           ' **bold** [red]rich[/red] <b>html</b> {{ jinja }} &amp; ')


def _gold(request: GenerationRequest) -> int:
    text = request.messages[-1].content if request.messages else ""
    for msg in request.messages:
        if "What is" in (msg.content or ""):
            text = msg.content or ""
            break
    expr = text.split("What is", 1)[1].split("?", 1)[0]
    return sum(int(term) for term in expr.split("+"))  # the dataset's operations are ["+"]


def hostile_engine(request: GenerationRequest) -> list[str]:
    """Right or wrong by a hash of (problem, node); one node in 7 of round 1 fails."""
    gold = _gold(request)
    out = []
    for node in request.metadata.nodes:
        h = zlib.crc32(f"{request.metadata.unit}|{node}".encode())
        if node.round == 1 and h % 7 == 0 and "|w" in (request.metadata.unit or ""):
            raise EngineError(f"scripted failure of {node} {HOSTILE}")
        answer = gold if h % 3 else gold + 1
        out.append(f"{HOSTILE} step {node} \\boxed{{{answer}}}")
    return out


STUDY = """
name = "viewer-fixture </script>"
samples = 1
seed = 0
seeded = false
[dataset]
kind = "arithmetic"
count = {count}
operations = ["+"]
[engine]
kind = "function"
function = "x:y"
[sampling]
max_tokens = 64
[grading]
timeout = 60
[[arms]]
name = "single"
baseline = "single"
[[arms]]
name = "sc"
baseline = "self-consistency"
match = ["w"]
[[sweep]]
name = "w{{widths}}"
label = "w"
widths = {widths}
"""


def study_text(count: int, widths: str = "[[2], [4]]") -> str:
    """The fixture study: ``count`` generated sums; single, self-consistency and a sweep of widths."""
    return STUDY.format(count=count, widths=widths)


def make_study(out: Path, count: int = 6) -> Path:
    from pacore_agents.studies import parse_study, run_study

    spec = parse_study(study_text(count))
    anyio.run(lambda: run_study(spec, out, engine=FunctionEngine(hostile_engine)))
    return out


def make_trace(path: Path, widths: tuple[int, ...] = (4, 3)) -> Path:
    from pacore_agents import all_to_all, run_sync

    def engine(request: GenerationRequest) -> list[str]:
        return [f"{HOSTILE} node {n} says \\boxed{{{7 + n.agent % 2}}}" for n in request.metadata.nodes]

    trace = run_sync(f"What is 3 + 4? {HOSTILE}", all_to_all(list(widths)), FunctionEngine(engine)).trace
    path.write_text(trace.model_dump_json(), encoding="utf-8")
    return path
