"""Serving the viewer on uvicorn, loopback only unless asked.

Contract of ``serve_view``: binds first (a port in use is a ``ConfigError``), calls
``on_ready(url)`` once the socket serves, and serves until ``stop`` is set or uvicorn gets
SIGINT/SIGTERM; it then returns, with nothing it started left running. A non-loopback
``host`` requires an API key (``check_exposure``): the data API then wants
``Authorization: Bearer KEY``, as ``pacore serve``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import anyio
import uvicorn
from pydantic import SecretStr

from pacore_agents._errors import ConfigError
from pacore_agents.serve._server import bind

from ._app import create_app
from ._source import ViewSource


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: SecretStr | None) -> None:
    """Raise ``ConfigError`` for a host beyond loopback without a key."""
    if not is_loopback(host) and (api_key is None or not api_key.get_secret_value()):
        raise ConfigError(f"--host {host} opens the viewer beyond this machine: also give --api-key KEY "
                          "(or the PACORE_VIEW_API_KEY environment variable); browsers then ask for it")


async def serve_view(source: ViewSource, *, host: str = "127.0.0.1", port: int = 0,
                     api_key: SecretStr | None = None, on_ready: Callable[[str], None] | None = None,
                     stop: anyio.Event | None = None) -> None:
    """Serve ``source`` (see the module)."""
    check_exposure(host, api_key)
    sock = bind(host, port)
    config = uvicorn.Config(create_app(source, api_key), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    try:
        async with anyio.create_task_group() as tg:
            if stop is not None:
                async def stop_on_event() -> None:
                    await stop.wait()
                    server.should_exit = True

                tg.start_soon(stop_on_event)
            if on_ready is not None:
                on_ready(f"http://{shown}:{bound_port}/")
            await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()
    finally:
        sock.close()
