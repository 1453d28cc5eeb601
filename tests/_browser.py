"""Debian's chromium driven by Playwright, for the viewer's tests and benchmark; and the viewer
served in a background thread. Both are context managers that stop what they started."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        return "no chromium (scripts/setup.sh installs Debian's chromium with apt-get when root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright (pip install -e '.[dev]')"
    return None


@contextmanager
def browser_context(**options: Any) -> Iterator[Any]:
    """A fresh headless chromium context (its own --user-data-dir), closed on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="pacore-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium") or CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000}, **options)
        try:
            yield context
        finally:
            context.close()


@contextmanager
def viewer_server(path: Path, api_key: str | None = None) -> Iterator[str]:
    """``pacore view path`` on a free loopback port, in a thread; yields its URL; stopped on exit."""
    from pydantic import SecretStr

    from pacore_agents.viewer import ViewSource, serve_view

    source = ViewSource(path)
    ready = threading.Event()
    urls: list[str] = []
    errors: list[BaseException] = []
    token: list[Any] = []

    async def main() -> None:
        stop = anyio.Event()
        token.append((anyio.lowlevel.current_token(), stop))

        def on_ready(url: str) -> None:
            urls.append(url)
            ready.set()

        await serve_view(source, port=0, api_key=SecretStr(api_key) if api_key else None, on_ready=on_ready, stop=stop)

    def run() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="pacore-view", daemon=True)
    thread.start()
    ready.wait(30)
    if errors or not urls:
        raise RuntimeError(f"the viewer did not start: {errors}")
    try:
        yield urls[0]
    finally:
        loop_token, stop = token[0]
        anyio.from_thread.run_sync(stop.set, token=loop_token)
        thread.join(15)
        assert not thread.is_alive(), "the viewer's server did not stop"
