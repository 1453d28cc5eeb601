"""``pacore run`` (one problem, one topology, the sink's answer on stdout) and ``pacore
topologies``. Bad input exits 2 with one line on stderr; a failed run exits 1 (its trace is
still written with ``--trace``)."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.markup import escape

from pacore_agents._errors import RunFailedError

from ._engine_flags import EngineFlags, with_engine_flags
from ._engines_file import load_engines_file
from ._output import dim, err, errors, fail, note

if TYPE_CHECKING:  # the commands import what they run: a process that imports this module
    from pacore_agents._messages import (
        Problem,  # (a grading worker re-imports the entry script) stays light
    )
    from pacore_agents._references import OrderPolicy
    from pacore_agents._trace import RunTrace

def parse_widths(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        fail(f"bad --widths {text!r}: give positive integers separated by commas, e.g. 32,4")
    if not widths or any(w <= 0 for w in widths):
        fail(f"bad --widths {text!r}: every width must be a positive integer")
    return widths


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON when they can be (``4``, ``[4,4]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"bad --param {item!r}: write key=value, e.g. --param width=8")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_problem(problem: str) -> Problem:
    """The problem text, ``-`` for stdin, or ``@file.json`` holding chat messages."""
    from pacore_agents._messages import Problem

    if problem == "-":
        problem = sys.stdin.read()
    if problem.startswith("@"):
        path = Path(problem[1:])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            fail(f"cannot read problem file {path}: {exc}")
        messages = data.get("messages", data) if isinstance(data, dict) else data
        return Problem.coerce(messages)
    return Problem.coerce(problem)


@with_engine_flags()
def run_command(
    problem: Annotated[str, typer.Argument(help="the problem text; '-' reads stdin; @file.json holds chat messages")],
    topology: Annotated[str, typer.Option("--topology", "-t", help="built-in name or spec path")] = "pacore-low",
    widths: Annotated[str | None, typer.Option(help="all-to-all widths, e.g. 32,4 (a sink round is appended)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="override a topology parameter: key=value")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max generated tokens per trajectory")] = None,
    temperature: Annotated[float, typer.Option()] = 1.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[int, typer.Option(help="run seed: per-request seeds derive from it")] = 0,
    order: Annotated[str, typer.Option(help="reference order: pacore | graph | seeded")] = "pacore",
    on_failure: Annotated[str, typer.Option(help="fail | continue")] = "fail",
    mode: Annotated[str, typer.Option(help="dataflow (a node starts when its inputs are ready) | rounds "
                                      "(a barrier per round); same results")] = "dataflow",
    max_message_tokens: Annotated[int | None, typer.Option(help="cut each message to this many tokens")] = None,
    no_merge: Annotated[bool, typer.Option("--no-merge", help="send identical prompts as separate requests")] = False,
    trace: Annotated[Path | None, typer.Option(help="write the full trace as JSON")] = None,
    log_json: Annotated[Path | None, typer.Option(help="write structured logs as JSON lines")] = None,
    log_transport: Annotated[bool, typer.Option("--log-transport", help="also log other libraries' "
                                                "debug lines (HTTP transport), redacted")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    engines_file: Annotated[Path | None, typer.Option("--engines", help="a TOML file of more engines "
                            "([engines.NAME]) bound to roles ([roles] sink = \"NAME\"); see docs/engines.md")] = None,
    *,
    flags: EngineFlags,
) -> None:
    """Run PaCoRe on one problem and print the sink's answer."""
    from pacore_agents._config import RunConfig
    from pacore_agents._engine import SamplingParams
    from pacore_agents._logging import configure_logging
    from pacore_agents._progress import RichRoundProgress
    from pacore_agents._run import run
    from pacore_agents._specs import load_topology
    from pacore_agents._topology import all_to_all
    from pacore_agents.engines import create_engine

    configure_logging(verbose=verbose, json_path=log_json, transport=log_transport)
    with errors():
        prob = read_problem(problem)
        overrides = parse_params(param or [])
        topo = load_topology(topology, overrides)
        if widths:
            if topo.params.get("widths") is None:
                fail(f"--widths applies to all-to-all topologies, not {topology!r}: use --param key=value")
            topo = all_to_all(parse_widths(widths), name=f"all-to-all {widths.replace(' ', '')}")
        if order not in ("pacore", "graph", "seeded"):
            fail(f"bad --order {order!r}: use pacore, graph or seeded")
        if on_failure not in ("fail", "continue"):
            fail(f"bad --on-failure {on_failure!r}: use fail or continue")
        if mode not in ("dataflow", "rounds"):
            fail(f"bad --mode {mode!r}: use dataflow or rounds")
        config = RunConfig(
            sampling=SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            seed=seed, order=order_policy(order), on_failure="fail" if on_failure == "fail" else "continue",
            max_message_tokens=max_message_tokens, merge_identical=not no_merge, retry=flags.retry(),
            mode="rounds" if mode == "rounds" else "dataflow",
        )
        options = flags.options()
        named, bindings = load_engines_file(engines_file) if engines_file is not None else ({}, {})
        eng = create_engine(options, retry=config.retry)
        others = {name: create_engine(o, retry=config.retry) for name, o in named.items()}

    async def main() -> RunTrace:
        async with eng, AsyncExitStack() as stack:
            for other in others.values():
                await stack.enter_async_context(other)
            with err.status(f"starting the {escape(options.kind)} engine ...") if not quiet else nullcontext():
                await eng.start()
            with RichRoundProgress(err) if not quiet else nullcontext() as progress:
                result = await run(prob, topo, eng, engines=others, config=config, observer=progress,
                                   roles=bindings)
        return result.trace

    def keep_failed_trace(leaf: BaseException) -> None:
        if isinstance(leaf, RunFailedError) and trace is not None and leaf.trace is not None:
            write_trace(trace, leaf.trace)

    with errors(on_library_error=keep_failed_trace):
        result_trace = anyio.run(main)
    if trace is not None:
        write_trace(trace, result_trace)
    typer.echo(result_trace.answer)
    seconds = result_trace.ended_at - result_trace.started_at
    dim(f"{result_trace.topology_name}: {len(result_trace.nodes)} trajectories, "
        f"effective TTC {result_trace.effective_ttc} tokens, {seconds:.1f}s")
    if len(result_trace.engines) > 1:  # tokens per engine and role
        for name, by_role in result_trace.tokens.items():
            spent = ", ".join(f"{role} {u.completion_tokens}" for role, u in by_role.items())
            dim(f"engine {name} ({result_trace.engines[name].model or result_trace.engines[name].name}): "
                f"completion tokens {spent}")
    for event in result_trace.policy_events:  # what a policy did, in one line each
        saved = [f"{len(event.skipped)} not launched"] if event.skipped else []
        saved += [f"{len(event.cancelled)} cancelled ({event.cancelled_tokens} tokens counted)"] if event.cancelled else []
        dim(f"policy {event.policy}, round {event.round}: {event.detail}"
            + (f"; {', '.join(saved)}" if saved else "")
            + (f"; answered from {event.answered_from}" if event.answered_from else ""))
    if result_trace.degraded:  # exit 0: there is an answer, but say what it lacks
        failed = [n.id for n in result_trace.nodes if n.status == "failed"]
        note("degraded", f"{len(failed)} of {len(result_trace.nodes)} trajectories failed "
             f"({', '.join(failed[:8])}{', ...' if len(failed) > 8 else ''}); the answer was synthesized "
             "without their messages (see the trace's nodes[].error)")


def order_policy(order: str) -> OrderPolicy:
    return "pacore" if order == "pacore" else "graph" if order == "graph" else "seeded"


def write_trace(path: Path, trace: RunTrace) -> None:
    """Write atomically: a temp file renamed over the target, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(trace.model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(path)


def topologies_command() -> None:
    """List the built-in topologies, one line each."""
    from pacore_agents._specs import builtin_topologies, load_topology

    specs = builtin_topologies()
    widths = {name: str(load_topology(name).widths).replace(" ", "") for name in specs}
    pad, wpad = max(map(len, specs)), max(map(len, widths.values()))
    for name, spec in specs.items():
        typer.echo(f"{name:<{pad}}  {widths[name]:<{wpad}}  {spec.description}")
