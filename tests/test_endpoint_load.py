"""Endpoint load is counted in sequences, one way for every path (issue 23, item 8): a whole
n-request, a streamed one and n separate requests all count n, a streamed sample stops counting
when it ends; and a study over a slow and a fast endpoint loads the fast one more."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from pacore_agents.engines._endpoints import EndpointPool
from pacore_agents.engines._openai import OpenAIEngine
from pacore_agents.studies import parse_study, run_study
from tests._fake_servers import FakeServer
from tests.test_openai_engine import req

pytestmark = pytest.mark.anyio


async def test_whole_and_streamed_n_requests_count_the_same() -> None:
    """A holds two whole n=4 requests (8 sequences), B one streamed n=4 request (4): a new
    problem goes to B (counting a whole request as 1 and a streamed one as n sent it to A)."""
    gate = threading.Event()
    with FakeServer(gate=gate) as a, FakeServer(gate=gate) as b:
        async with OpenAIEngine([a.url, b.url], model="m") as engine:
            pool = engine._pool
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(engine.generate, req(problem="P1", n=4))  # all idle: A
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate_samples, req(problem="P2", n=4), lambda i, c: None)  # 4 vs 0: B
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(engine.generate, req(problem="P1", n=4))  # affinity: A again
                    await anyio.wait_all_tasks_blocked()
                    assert pool.outstanding == [8, 4]
                    assert pool.assign("P3") == 1
                    gate.set()
            assert pool.outstanding == [0, 0]
    assert [(r.body or {}).get("stream", False) for r in b.chat_requests] == [True]


def test_a_streamed_sample_that_ended_stops_counting() -> None:
    pool = EndpointPool(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"])
    with pool.in_flight(0, 3) as one_ended:
        assert pool.outstanding == [3, 0]
        one_ended()
        one_ended()
        assert pool.outstanding == [1, 0]
        for _ in range(3):  # never below what it added
            one_ended()
        assert pool.outstanding == [0, 0]
    assert pool.outstanding == [0, 0]


async def test_samples_end_their_count_as_they_are_reported() -> None:
    seen: list[int] = []
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="m") as engine:
            await engine.generate_samples(req(n=3), lambda i, c: seen.append(engine._pool.outstanding[0]))
            assert engine._pool.outstanding == [0]
    assert seen == [2, 1, 0]  # each sample's sequence ended before it was reported


def test_a_study_over_a_slow_and_a_fast_endpoint_loads_the_fast_one(tmp_path: Path) -> None:
    """The slow endpoint answers only once the fast one has served 20 requests (a gate, not a
    delay: a shared machine's load cannot change the outcome). Problems go where the fewest
    sequences are in flight, so the slow one gets only the problems it took before it filled."""
    gate = threading.Event()
    with FakeServer() as fast, FakeServer(gate=gate) as slow:
        def open_when_fast_served() -> None:
            while not gate.is_set() and len(fast.chat_requests) < 20:
                time.sleep(0.01)
            gate.set()

        watcher = threading.Thread(target=open_when_fast_served, daemon=True)
        watcher.start()
        text = f"""
name = "slow-fast"
[dataset]
kind = "arithmetic"
count = 16
[engine]
kind = "openai"
model = "m"
base_urls = ["{fast.url}", "{slow.url}"]
max_sequences_per_endpoint = 4
[sampling]
max_tokens = 8
[[arms]]
name = "w2"
widths = [2]
"""
        try:
            summary = anyio.run(lambda: run_study(parse_study(text), tmp_path / "out"))
        finally:
            gate.set()
            watcher.join(5)
        assert summary.ran == 16 and not summary.failed
        per = Counter({"slow": len(slow.chat_requests), "fast": len(fast.chat_requests)})
    # every problem sends 2 requests (round 1, n=2; the sink) to the endpoint it was given
    assert per["slow"] + per["fast"] == 32
    assert per["fast"] >= 3 * per["slow"] > 0, per
