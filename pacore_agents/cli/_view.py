"""``pacore view PATH``: the local web viewer of a trace, a server's trace dir or a study.

Serves on 127.0.0.1 (``--port``; 0 picks a free one) and prints the URL on stdout; a
``--host`` beyond loopback needs ``--api-key`` (the data API then wants ``Authorization:
Bearer KEY``). ``--export FILE.html`` writes the same view as one self-contained file instead
(works from ``file://``, no network). Bad input exits 2 with one line; Ctrl-C stops the server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._output import errors, fail


def view_command(
    path: Annotated[Path, typer.Argument(help="a trace JSON file, a `pacore serve --trace-dir`, or a study --out folder")],
    port: Annotated[int, typer.Option(help="port to listen on (0: a free port)")] = 8765,
    host: Annotated[str, typer.Option(help="address to listen on; beyond loopback needs --api-key")] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PACORE_VIEW_API_KEY", show_envvar=False, help="require this key (Authorization: Bearer KEY; default: $PACORE_VIEW_API_KEY)")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="write the view as one self-contained FILE.html and exit")] = None,
) -> None:
    """See a run's graph or a study's results in the browser (read-only; live while they grow)."""
    try:
        import anyio
        from pydantic import SecretStr

        from pacore_agents._errors import ConfigError
        from pacore_agents._logging import register_secret
        from pacore_agents.viewer import ViewSource, check_exposure, export_html, serve_view
    except ImportError as exc:
        fail(f"pacore view needs FastAPI and uvicorn: pip install 'pacore-agents[view]' ({exc})")
    register_secret(api_key)
    key = SecretStr(api_key) if api_key else None
    with errors(interrupted="stopped"):
        if not 0 <= port <= 65535:
            raise ConfigError(f"bad --port {port}: give 0..65535")
        source = ViewSource(path)
        if export is not None:
            written = export_html(source, export)
            print(f"wrote {written} ({written.stat().st_size:,} bytes): open it in a browser", flush=True)
            return
        check_exposure(host, key)

        def ready(url: str) -> None:
            print(f"pacore view: {url}", flush=True)
            print(f"showing {source.kind} {source.path} (Ctrl-C to stop)", file=sys.stderr, flush=True)

        anyio.run(lambda: serve_view(source, host=host, port=port, api_key=key, on_ready=ready))
