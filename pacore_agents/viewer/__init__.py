"""``pacore view``: a local, read-only web viewer of traces, a server's trace dir and studies.

``ViewSource(path)`` reads what the viewer shows; ``create_app`` serves it (FastAPI, loopback
by default), ``serve_view`` runs that app on uvicorn, ``export_html`` writes the same view as
one self-contained HTML file. Needs the ``view`` extra (FastAPI and uvicorn).

Public names are imported on first use (``pacore_agents._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacore_agents._lazy import attach

if TYPE_CHECKING:
    from ._app import create_app
    from ._export import embed_json, export_html, render_html
    from ._run import parse_run, run_view
    from ._server import check_exposure, serve_view
    from ._source import ViewSource
    from ._study import study_view

if not TYPE_CHECKING:  # type checkers see the imports above, not a catch-all __getattr__
    __getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "ViewSource",
    "check_exposure",
    "create_app",
    "embed_json",
    "export_html",
    "parse_run",
    "render_html",
    "run_view",
    "serve_view",
    "study_view",
]
