"""Running the app on uvicorn with a drain on SIGTERM / SIGINT.

Contract of ``serve``: binds the socket first (a port in use is a ``ConfigError``), then serves
at once while the engine starts (requests get 503 until it is ready). The first SIGTERM or
SIGINT stops admitting runs (new requests get 503 at once, the socket stays open), lets the
runs in flight finish for ``drain_timeout`` seconds, aborts the rest, stops uvicorn and closes
the engine (its processes included). A second signal aborts the runs at once. ``serve``
returns normally after a signal: nothing it started outlives it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from types import FrameType

import anyio
import uvicorn
from fastapi import FastAPI

from pacore_agents._engine import Engine
from pacore_agents._errors import ConfigError
from pacore_agents._executor import executor_for
from pacore_agents._logging import get_logger
from pacore_agents._role_merge import RoleOverride

from ._app import ServeSettings, create_app
from ._state import ServerState

log = get_logger("pacore_agents.serve")


class _Server(uvicorn.Server):
    """uvicorn's server, with its signal handling replaced by ``on_signal`` (our drain)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal(sig)  # not re-raised after serve(): we shut down ourselves


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ``port=0`` picks a free port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"bad --host {host!r}: {exc}") from exc
    family, kind, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it
    # each response waits ~40 ms for a delayed ACK (headers and body are separate writes)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(engine: Engine, settings: ServeSettings, sock: socket.socket,
                on_ready: Callable[[str], None] | None = None, *, stop: anyio.Event | None = None,
                app: FastAPI | None = None, engines: Mapping[str, Engine] | None = None,
                bindings: Mapping[str, RoleOverride] | None = None) -> None:
    """Serve ``engine`` on ``sock`` until a signal or ``stop`` is set (then drain, as for a
    signal); close the engine. ``on_ready(url)`` is called once the socket serves (before the
    engine is ready). ``app``: one made by ``create_app(engine, settings)``, to reach its state."""
    app = app or create_app(engine, settings, engines=engines, bindings=bindings)
    state: ServerState = app.state.pacore
    stop = stop or anyio.Event()
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def signalled(sig: int) -> None:  # on the loop
        signals.append(sig)
        log.warning("signal received: draining" if len(signals) == 1 else "second signal: aborting runs",
                    signal=sig, runs_in_flight=state.runs_in_flight)
        if len(signals) > 1:
            state.abort()
        stop.set()

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, timeout_keep_alive=5)

    def on_signal(sig: int) -> None:  # in the signal handler: hand over to the loop
        loop.call_soon_threadsafe(signalled, sig)

    server = _Server(config, on_signal)

    async def drain_on_signal() -> None:
        await stop.wait()
        await state.drain(settings.drain_timeout)
        server.should_exit = True

    host, port = sock.getsockname()[:2]
    try:
        # requests keep coming: the executor admits deeper rounds first, so each client's run
        # finishes soon (latency) instead of every run's round 1 going first
        with ExitStack() as feeders:
            for feeding in (state.engine, *state.engines.values()):  # every engine's executor
                feeders.enter_context(executor_for(feeding).feeder())
            async with anyio.create_task_group() as tg:
                tg.start_soon(state.start_engine)
                tg.start_soon(drain_on_signal)
                if on_ready is not None:
                    on_ready(f"http://{host}:{port}")
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for closing in (state.engine, *state.engines.values()):
                await closing.aclose()
        sock.close()
        log.info("server stopped")
