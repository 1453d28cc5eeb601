"""``pacore serve``: PaCoRe topologies served as OpenAI-compatible chat models.

Needs the ``serve`` extra (FastAPI, uvicorn; vLLM installs them too).
"""

from ._app import ServeSettings, create_app
from ._errors import APIError
from ._runs import TopologyCatalog, plan_request
from ._server import bind, serve
from ._state import ServerState, TraceStore

__all__ = ["APIError", "ServeSettings", "ServerState", "TopologyCatalog", "TraceStore", "bind",
           "create_app", "plan_request", "serve"]
