"""``pacore serve``: the command that serves topologies as OpenAI-compatible chat models.

The engine flags are ``pacore run``'s (``_engine_flags``), except that ``--api-key`` is the key
clients must send to this server; the engine servers' key is ``--engine-api-key``. Bad flags
(a bad topology, engine or port) exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from pacore_agents._errors import ConfigError

from ._engine_flags import PANEL, EngineFlags, with_engine_flags
from ._output import describe_validation, errors, fail

_SERVER = "Server"


_EngineApiKeyFlag = Annotated[str | None, typer.Option(
    "--engine-api-key", help="API key of the --engine openai servers (default: $OPENAI_API_KEY)",
    rich_help_panel=PANEL)]


@with_engine_flags(api_key=("engine_api_key", _EngineApiKeyFlag))
def serve_command(
    topology: Annotated[list[str] | None, typer.Option("--topology", "-t", help="serve this topology too: a built-in name or a spec path (repeatable); its model id is its name", rich_help_panel=_SERVER)] = None,
    host: Annotated[str, typer.Option(help="address to listen on", rich_help_panel=_SERVER)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: a free port, printed)", rich_help_panel=_SERVER)] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PACORE_API_KEY", show_envvar=False, help="require this key from clients (default: $PACORE_API_KEY; none: open)", rich_help_panel=_SERVER)] = None,
    trace_dir: Annotated[Path | None, typer.Option(help="write each completion's traces as DIR/<id>.json", rich_help_panel=_SERVER)] = None,
    keep_traces: Annotated[int, typer.Option(min=0, help="completions whose traces GET /v1/pacore/traces/<id> keeps in memory", rich_help_panel=_SERVER)] = 256,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="per-trajectory max tokens when a request sets none", rich_help_panel=_SERVER)] = None,
    timeout: Annotated[float | None, typer.Option(help="cancel a chat completion's runs after this many seconds (504)", rich_help_panel=_SERVER)] = None,
    drain_timeout: Annotated[float, typer.Option(min=0, help="on SIGTERM, seconds the runs in flight may take to finish", rich_help_panel=_SERVER)] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    *,
    flags: EngineFlags,
) -> None:
    """Serve PaCoRe topologies as OpenAI-compatible chat models (one engine for all requests)."""
    from pydantic import SecretStr, ValidationError

    from pacore_agents._logging import configure_logging, register_secret

    configure_logging(verbose=verbose)
    register_secret(api_key)
    register_secret(flags.api_key)
    try:
        from pacore_agents.engines import create_engine
        from pacore_agents.serve import ServeSettings, TopologyCatalog, bind, serve
    except ImportError as exc:
        fail(f"pacore serve needs FastAPI and uvicorn: pip install 'pacore-agents[serve]' ({exc})")
    try:
        if not 0 <= port <= 65535:
            raise ConfigError(f"bad --port {port}: give 0..65535")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"bad --timeout {timeout}: give seconds > 0")
        retry = flags.retry()
        settings = ServeSettings(
            topologies=topology or [], api_key=SecretStr(api_key) if api_key else None, trace_dir=trace_dir,
            keep_traces=keep_traces, request_timeout=timeout, default_max_tokens=max_tokens,
            drain_timeout=drain_timeout, retry=retry)
        TopologyCatalog(settings.topologies)  # bad topologies fail before anything starts
        options = flags.options()
        eng = create_engine(options, retry=retry)
        sock = bind(host, port)
    except ValidationError as exc:
        fail(describe_validation(exc, lambda where: "--" + where.replace(".", "-").replace("_", "-")))
    except ConfigError as exc:
        fail(str(exc))

    def ready(url: str) -> None:
        print(f"pacore serve: listening on {url}/v1 (engine {options.kind}: starting)", file=sys.stderr, flush=True)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    with errors():
        anyio.run(serve, eng, settings, sock, ready)
