"""``pacore serve``: the command that serves topologies as OpenAI-compatible chat models.

Bad flags (a bad topology, engine or port) exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from pydantic import SecretStr, ValidationError

from ._errors import ConfigError
from ._logging import configure_logging, register_secret


def serve_command(
    topology: Annotated[list[str] | None, typer.Option("--topology", "-t", help="serve this topology too (built-in name or spec path; repeatable); its model id is its name")] = None,
    engine: Annotated[str, typer.Option(help="vllm | openai | function:MODULE:CALLABLE")] = "vllm",
    model: Annotated[str | None, typer.Option(help="model name or local path (default: embedded SmolLM2-135M)")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="OpenAI-compatible base URL of the engine (repeatable)")] = None,
    engine_api_key: Annotated[str | None, typer.Option("--engine-api-key", envvar="OPENAI_API_KEY", show_envvar=False, help="the engine servers' API key (default: $OPENAI_API_KEY)")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="vLLM context length")] = None,
    dtype: Annotated[str, typer.Option(help="vLLM dtype")] = "auto",
    kv_cache_gb: Annotated[float | None, typer.Option(help="vLLM CPU KV cache space, GiB")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallel size")] = 1,
    eager: Annotated[bool | None, typer.Option("--eager/--no-eager", help="vLLM enforce_eager")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: a free port, printed)")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="PACORE_API_KEY", show_envvar=False, help="require this key from clients (default: $PACORE_API_KEY; none = open)")] = None,
    trace_dir: Annotated[Path | None, typer.Option(help="write each completion's traces as DIR/<id>.json")] = None,
    keep_traces: Annotated[int, typer.Option(help="completions whose traces GET /v1/pacore/traces/<id> keeps in memory")] = 256,
    max_tokens: Annotated[int | None, typer.Option(help="per-trajectory max tokens when a request sets none")] = None,
    request_timeout: Annotated[float | None, typer.Option(help="cancel a request's runs after this many seconds (504)")] = None,
    drain_timeout: Annotated[float, typer.Option(help="on SIGTERM, seconds runs in flight may take to finish")] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve PaCoRe topologies as OpenAI-compatible chat models (one engine for all requests)."""
    from .cli import fail

    configure_logging(verbose=verbose)
    register_secret(api_key)
    register_secret(engine_api_key)
    try:
        from .engines import create_engine
        from .serve import ServeSettings, TopologyCatalog, bind, serve
    except ImportError as exc:
        fail(f"pacore serve needs FastAPI, uvicorn and prometheus-client: pip install 'pacore-agents[serve]' ({exc})")
    try:
        settings = ServeSettings(
            topologies=topology or [], api_key=SecretStr(api_key) if api_key else None, trace_dir=trace_dir,
            keep_traces=keep_traces, request_timeout=request_timeout, default_max_tokens=max_tokens,
            drain_timeout=drain_timeout)
        TopologyCatalog(settings.topologies)  # bad topologies fail before anything starts
        options = engine_mapping(engine, model, base_url or [], engine_api_key, max_model_len, dtype,
                                 kv_cache_gb, tensor_parallel_size, eager)
        eng = create_engine(options)
        if not 0 <= port <= 65535:
            fail(f"bad --port {port}: give 0..65535")
        sock = bind(host, port)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except ConfigError as exc:
        fail(str(exc))

    def ready(url: str) -> None:
        print(f"pacore serve: listening on {url}/v1 (engine {options['kind']}: starting)", file=sys.stderr, flush=True)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    anyio.run(serve, eng, settings, sock, ready)


def engine_mapping(engine: str, model: str | None, base_url: list[str], api_key: str | None,
                   max_model_len: int | None, dtype: str, kv_cache_gb: float | None,
                   tensor_parallel_size: int, eager: bool | None) -> dict[str, Any]:
    """The engine flags as an options mapping for ``create_engine`` (which validates it)."""
    kind, _, rest = engine.partition(":")
    if kind == "function":
        return {"kind": "function", "function": rest}
    if kind == "openai":
        if not base_url:
            raise ConfigError("the openai engine needs --base-url (e.g. http://127.0.0.1:8001/v1)")
        out: dict[str, Any] = {"kind": "openai", "model": model, "base_urls": base_url}
        if api_key:
            out["api_key"] = api_key
        return out
    if kind != "vllm" or rest:
        raise ConfigError(f"unknown engine {engine!r}: use vllm, openai or function:MODULE:CALLABLE")
    return {"kind": "vllm", "model": model, "max_model_len": max_model_len, "dtype": dtype,
            "kv_cache_space_gb": kv_cache_gb, "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": eager}
