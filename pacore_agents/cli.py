"""The ``pacore`` command line. Bad input exits with code 2 and one line on stderr."""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console

from ._config import RunConfig
from ._engine import SamplingParams
from ._errors import ConfigError, PacoreError, RunFailedError
from ._logging import configure_logging
from ._messages import Problem
from ._progress import RichRoundProgress
from ._references import OrderPolicy
from ._run import run
from ._specs import builtin_topologies, load_topology
from ._topology import all_to_all
from ._trace import RunTrace
from .engines import EngineOptions, create_engine

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="PaCoRe: parallel coordinated reasoning where every trajectory is an agent.")
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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


def engine_options(engine: str, model: str | None, base_url: list[str], api_key: str | None,
                   max_model_len: int | None, dtype: str, kv_cache_gb: float | None,
                   tensor_parallel_size: int, enforce_eager: bool | None) -> EngineOptions:
    kind, _, rest = engine.partition(":")
    if kind not in {"vllm", "openai", "function"}:
        fail(f"unknown engine {engine!r}: use vllm, openai or function:MODULE:CALLABLE")
    if kind == "openai" and not base_url:
        fail("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    try:
        return EngineOptions(
            kind=kind,  # type: ignore[arg-type]
            model=model, base_urls=base_url, api_key=SecretStr(api_key) if api_key else None,
            max_model_len=max_model_len, dtype=dtype, kv_cache_space_gb=kv_cache_gb,
            tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
            function=rest or None,
        )
    except ValidationError as exc:
        fail(f"bad engine options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")


def read_problem(problem: str) -> Problem:
    """The problem text, ``-`` for stdin, or ``@file.json`` holding chat messages."""
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


@app.command("run")
def run_command(
    problem: Annotated[str, typer.Argument(help="the problem text; '-' reads stdin; @file.json holds chat messages")],
    topology: Annotated[str, typer.Option("--topology", "-t", help="built-in name or spec path")] = "pacore-low",
    widths: Annotated[str | None, typer.Option(help="all-to-all widths, e.g. 32,4 (a sink round is appended)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="override a topology parameter: key=value")] = None,
    engine: Annotated[str, typer.Option(help="vllm | openai | function:MODULE:CALLABLE")] = "vllm",
    model: Annotated[str | None, typer.Option(help="model name or local path (default: embedded SmolLM2-135M)")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="OpenAI-compatible base URL (repeatable)")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", show_envvar=False, help="API key (default: $OPENAI_API_KEY)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max generated tokens per trajectory")] = None,
    temperature: Annotated[float, typer.Option()] = 1.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[int, typer.Option(help="run seed: per-request seeds derive from it")] = 0,
    order: Annotated[str, typer.Option(help="reference order: pacore | graph | seeded")] = "pacore",
    on_failure: Annotated[str, typer.Option(help="fail | continue")] = "fail",
    max_in_flight: Annotated[int, typer.Option(help="cap on engine requests in flight")] = 64,
    max_message_tokens: Annotated[int | None, typer.Option(help="cut each message to this many tokens")] = None,
    no_merge: Annotated[bool, typer.Option("--no-merge", help="send identical prompts as separate requests")] = False,
    max_model_len: Annotated[int | None, typer.Option(help="vLLM context length")] = None,
    dtype: Annotated[str, typer.Option(help="vLLM dtype")] = "auto",
    kv_cache_gb: Annotated[float | None, typer.Option(help="vLLM CPU KV cache space, GiB")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallel size")] = 1,
    eager: Annotated[bool | None, typer.Option("--eager/--no-eager", help="vLLM enforce_eager")] = None,
    trace: Annotated[Path | None, typer.Option(help="write the full trace as JSON")] = None,
    log_json: Annotated[Path | None, typer.Option(help="write structured logs as JSON lines")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Run PaCoRe on one problem and print the sink's answer."""
    configure_logging(verbose=verbose, json_path=log_json)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    try:
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
        config = RunConfig(
            sampling=SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            seed=seed, order=order_policy(order), on_failure="fail" if on_failure == "fail" else "continue",
            max_in_flight=max_in_flight, max_message_tokens=max_message_tokens, merge_identical=not no_merge,
        )
        options = engine_options(engine, model, base_url or [], api_key, max_model_len, dtype, kv_cache_gb,
                                 tensor_parallel_size, eager)
        eng = create_engine(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except ConfigError as exc:
        fail(str(exc))

    async def main() -> RunTrace:
        async with eng:
            with err.status(f"starting the {options.kind} engine ...") if not quiet else nullcontext():
                await eng.start()
            with RichRoundProgress(err) if not quiet else nullcontext() as progress:
                result = await run(prob, topo, eng, config=config, observer=progress)
        return result.trace

    try:
        result_trace = anyio.run(main)
    except RunFailedError as exc:
        if trace is not None and exc.trace is not None:
            write_trace(trace, exc.trace)
        fail(str(exc), code=1)
    except ConfigError as exc:
        fail(str(exc))
    except PacoreError as exc:
        fail(str(exc), code=1)
    if trace is not None:
        write_trace(trace, result_trace)
    typer.echo(result_trace.answer)
    seconds = result_trace.ended_at - result_trace.started_at
    err.print(f"[dim]{result_trace.topology_name}: {len(result_trace.nodes)} trajectories, "
              f"effective TTC {result_trace.effective_ttc} tokens, {seconds:.1f}s[/dim]")


def order_policy(order: str) -> OrderPolicy:
    return "pacore" if order == "pacore" else "graph" if order == "graph" else "seeded"


def write_trace(path: Path, trace: RunTrace) -> None:
    """Write atomically: a temp file renamed over the target, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(trace.model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(path)


@app.command("topologies")
def topologies_command() -> None:
    """List the built-in topologies, one line each."""
    specs = builtin_topologies()
    widths = {name: str(load_topology(name).widths).replace(" ", "") for name in specs}
    pad, wpad = max(map(len, specs)), max(map(len, widths.values()))
    for name, spec in specs.items():
        typer.echo(f"{name:<{pad}}  {widths[name]:<{wpad}}  {spec.description}")


def _mount_study() -> None:
    try:
        from .cli_study import study_app
    except ImportError:  # the studies sub-app is optional while it is being built
        return
    app.add_typer(study_app, name="study", help="Run and report studies: sweeps over datasets.")


_mount_study()


def main() -> None:
    """Console-script entry point."""
    app()
