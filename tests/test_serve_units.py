"""``pacore serve`` in-process: disconnects cancel engine requests, the engine's start gates
admission, the trace store is bounded, and the streamed text splits at ``</think>``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pacore_agents import FunctionEngine, GenerationRequest
from pacore_agents._trace import RunTrace
from pacore_agents.serve import ServerState, ServeSettings, TraceStore, bind, create_app, serve
from pacore_agents.serve._stream import StreamObserver, ThinkSplitter

PROBLEM = [{"role": "user", "content": "What is 6 x 7?"}]
BODY = {"model": "pacore-low", "messages": PROBLEM}


class Blocking:
    """A handler that blocks until its request is cancelled, counting the live requests."""

    def __init__(self) -> None:
        self.live = 0
        self.started = 0

    async def __call__(self, request: GenerationRequest) -> list[str]:
        self.live += 1
        self.started += 1
        try:
            await anyio.sleep_forever()
        finally:
            self.live -= 1
        raise AssertionError("unreachable")


@asynccontextmanager
async def running(engine: FunctionEngine, settings: ServeSettings | None = None) -> AsyncIterator[tuple[str, ServerState]]:
    """Serve ``engine`` on a free port in this event loop; drain and stop on exit."""
    settings = settings or ServeSettings()
    app = create_app(engine, settings)
    sock = bind("127.0.0.1", 0)
    stop = anyio.Event()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(engine, settings, sock, stop=stop, app=app))
        await _until(lambda: app.state.pacore.status == "ready")
        yield url, app.state.pacore
        stop.set()


async def _until(predicate: Callable[[], bool], seconds: float = 5) -> None:
    """Poll a condition another party changes (a handler's counter, the server's state)."""
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_disconnect_cancels_the_run_and_its_engine_requests(stream: bool) -> None:
    handler = Blocking()
    async with running(FunctionEngine(handler)) as (url, state):
        async with httpx.AsyncClient(timeout=30) as client:
            async def call() -> None:
                if stream:
                    async with client.stream("POST", f"{url}/v1/chat/completions", json={**BODY, "stream": True}) as r:
                        async for _ in r.aiter_bytes():
                            pass
                else:
                    await client.post(f"{url}/v1/chat/completions", json=BODY)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await _until(lambda: handler.live == 1)  # pacore-low's round 1: one request, n=4
                tg.cancel_scope.cancel()  # the client goes away while the engine is busy
        await _until(lambda: handler.live == 0, seconds=2)
        await _until(lambda: state.runs_in_flight == 0, seconds=2)
        metrics = (await httpx.AsyncClient().get(f"{url}/metrics")).text
    assert handler.started == 1
    assert "pacore_client_disconnects_total 1.0" in metrics
    assert "pacore_engine_sequences_in_flight 0.0" in metrics


@pytest.mark.anyio
async def test_requests_get_503_until_the_engine_has_started() -> None:
    gate = anyio.Event()

    class SlowStart(FunctionEngine):
        async def start(self) -> None:
            await gate.wait()

    engine = SlowStart(lambda r: ["<think>x</think>42"] * r.n)
    settings = ServeSettings()
    app = create_app(engine, settings)
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        tg.start_soon(lambda: serve(engine, settings, sock, stop=stop, app=app))
        await anyio.sleep(0.3)
        starting = await client.post(f"{url}/v1/chat/completions", json=BODY)
        assert starting.status_code == 503
        assert starting.json()["error"]["code"] == "engine_starting"
        assert (await client.get(f"{url}/health")).json()["status"] == "starting"
        gate.set()
        await _until(lambda: app.state.pacore.status == "ready")
        ok = await client.post(f"{url}/v1/chat/completions", json=BODY)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "42"
        stop.set()


@pytest.mark.anyio
async def test_a_dead_engine_is_503_with_the_reason_and_the_server_stays_up() -> None:
    class Dead(FunctionEngine):
        async def start(self) -> None:
            raise RuntimeError("no GPU here")

    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        engine = Dead(lambda r: ["x"] * r.n)
        settings = ServeSettings()
        app = create_app(engine, settings)
        sock = bind("127.0.0.1", 0)
        stop = anyio.Event()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        tg.start_soon(lambda: serve(engine, settings, sock, stop=stop, app=app))
        await _until(lambda: app.state.pacore.status == "dead")
        response = await client.post(f"{url}/v1/chat/completions", json=BODY)
        assert response.status_code == 503 and "no GPU here" in response.json()["error"]["message"]
        assert (await client.get(f"{url}/health")).status_code == 503
        stop.set()


def _trace(answer: str) -> RunTrace:
    return RunTrace(answer=answer, sink="r2.a0", effective_ttc=1, problem=[], problem_id="p", config={},
                    engine={"name": "x"}, topology={}, topology_name="t", nodes=[], started_at=0, ended_at=0)


@pytest.mark.anyio
async def test_the_trace_store_keeps_the_last_n_and_writes_whole_files(tmp_path: Path) -> None:
    store = TraceStore(2, tmp_path / "traces")
    for i in range(3):
        await store.put(f"c{i}", [_trace(str(i))])
    assert store.get("c0") is None and store.get("c2") is not None
    assert json.loads((tmp_path / "traces" / "c0.json").read_text())["answer"] == "0"
    await store.put("many", [_trace("a"), _trace("b")])
    assert [t["answer"] for t in json.loads((tmp_path / "traces" / "many.json").read_text())["data"]] == ["a", "b"]
    assert not list((tmp_path / "traces").glob("*.tmp"))


def _split(text: str, sizes: int) -> tuple[str, str]:
    splitter, reasoning, content = ThinkSplitter(), "", ""
    for i in range(0, len(text), sizes):
        r, c = splitter.feed(text[i:i + sizes])
        reasoning, content = reasoning + r, content + c
    return reasoning + splitter.flush(), content


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_the_stream_splitter_separates_reasoning_whatever_the_chunking(size: int) -> None:
    assert _split("<think>a < b</think>The answer is 4.", size) == ("a < b", "The answer is 4.")
    assert _split("  <think>x</thi", size) == ("x</thi", "")
    assert _split("No thinking, just <b>4</b>.", size) == ("", "No thinking, just <b>4</b>.")


def test_closing_deltas_complete_the_content_to_the_sink_message() -> None:
    sent: list[Any] = []

    class Sink:
        def send_nowait(self, item: Any) -> None:
            sent.append(item)

    observer = StreamObserver(0, Sink())  # type: ignore[arg-type]
    observer.sink_text("<think>hmm</think>The ans")
    assert observer.closing_deltas("The answer") [0].content == "wer"
    replaced = StreamObserver(0, Sink())  # type: ignore[arg-type]
    replaced.sink_text("thinking without a start tag</think>42")
    reset = replaced.closing_deltas("42")
    assert reset[-1].progress == {"event": "content_reset", "content": "42"}


@pytest.mark.anyio
async def test_an_engine_that_dies_makes_the_server_answer_503() -> None:
    from pacore_agents import EngineError

    def dies(request: GenerationRequest) -> list[str]:
        raise EngineError("the vLLM engine died (pacore-1): EngineDeadError: core gone")

    async with running(FunctionEngine(dies)) as (url, _), httpx.AsyncClient() as client:
        first = await client.post(f"{url}/v1/chat/completions", json=BODY)
        assert first.status_code == 503 and first.json()["error"]["code"] == "engine_dead"
        assert (await client.get(f"{url}/health")).json()["status"] == "dead"
        again = await client.post(f"{url}/v1/chat/completions", json=BODY)
        assert again.status_code == 503 and "core gone" in again.json()["error"]["message"]
