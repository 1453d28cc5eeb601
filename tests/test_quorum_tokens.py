"""A quorum's cancelled stragglers count the tokens they generated: the engines say how many
(``Engine.tokens_so_far``) for requests marked ``cancellable``, and only those change shape.

The OpenAI engine against the fake server (a straggler that streams a few chunks and stalls);
the scheduler's marking on the FunctionEngine; ``CancelledTokens`` on its own. The in-process
vLLM counterpart is in tests/test_vllm_quorum.py (real engine)."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest

from pacore_agents import (
    ChatMessage,
    FunctionEngine,
    GenerationRequest,
    Policies,
    Quorum,
    RequestMetadata,
    RunTrace,
    all_to_all,
    run,
)
from pacore_agents._engine import CancelledTokens
from pacore_agents.engines._openai import OpenAIEngine
from tests._fake_servers import FakeServer

PROBLEM = "What is the sum of all integers from one to one hundred, please?"


def _request(**metadata: Any) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content="hi"),),
                             metadata=RequestMetadata(**metadata))


# -- CancelledTokens --------------------------------------------------------------------------


def test_a_cancelled_attempt_keeps_its_count_once_and_other_endings_keep_none() -> None:
    tokens = CancelledTokens()
    request, other = _request(cancellable=True), _request(cancellable=True)

    async def main() -> None:
        with anyio.CancelScope() as scope, tokens.watch(request, 0) as tally:
            tally.tokens = 7
            scope.cancel()
            await anyio.sleep(1)
        assert tokens.take(other) is None  # keyed by the request object
        assert tokens.take(request) == 7 and tokens.take(request) is None  # once
        with pytest.raises(RuntimeError), tokens.watch(other, None) as tally:
            tally.tokens = 5
            raise RuntimeError("an engine error is not a cancellation")
        assert tokens.take(other) is None
        with anyio.CancelScope() as scope, tokens.watch(other, None):
            scope.cancel()
            await anyio.sleep(1)
        assert tokens.take(other) is None  # cancelled before it knew anything: unknown, not 0
        with anyio.CancelScope() as scope, tokens.watch(other, 0) as tally:
            tally.tokens = 3
            scope.cancel()
            await anyio.sleep(1)
        with tokens.watch(other, 0):  # a new attempt of the same request starts afresh
            pass
        assert tokens.take(other) is None

    anyio.run(main)


def test_kept_counts_go_with_their_request() -> None:
    tokens = CancelledTokens()

    async def main() -> None:
        request = _request()
        with anyio.CancelScope() as scope, tokens.watch(request, 4):
            scope.cancel()
            await anyio.sleep(1)
        assert len(tokens._kept) == 1
        del request
        gc.collect()
        assert tokens._kept == {}

    anyio.run(main)


# -- the scheduler marks what a quorum may cancel -----------------------------------------------


def _handler(request: GenerationRequest) -> list[str]:
    return [f"</think> \\boxed{{{n.agent}}}" for n in request.metadata.nodes]


@pytest.mark.parametrize(("policies", "marked"), [
    (None, []), (Policies(quorum=Quorum(q=3, stragglers="finish")), []),
    (Policies(quorum=Quorum(q=3)), [1] * 4)])
def test_only_a_cancelling_quorum_marks_requests_cancellable(policies: Policies | None, marked: list[int]) -> None:
    engine = FunctionEngine(_handler)
    anyio.run(lambda: run(PROBLEM, all_to_all([4]), engine, policies=policies))
    assert [r.metadata.round for r in engine.requests if r.metadata.cancellable] == marked
    assert all(r.n == 1 for r in engine.requests if r.metadata.cancellable)


# -- the OpenAI engine ------------------------------------------------------------------------


def _quorum_run(server: FakeServer, q: int = 3, **policy: Any) -> RunTrace:
    async def main() -> RunTrace:
        async with OpenAIEngine(server.url, model="m") as engine:
            with anyio.fail_after(30):
                result = await run(PROBLEM, all_to_all([4]), engine,
                                   policies=Policies(quorum=Quorum(q=q, **policy)))
        return result.trace

    return anyio.run(main)


def _bodies(server: FakeServer) -> list[dict[str, Any]]:
    return [r.body for r in server.chat_requests if r.body is not None]


def test_openai_straggler_tokens_count_in_the_event_and_in_effective_ttc() -> None:
    with FakeServer(stall_first=3) as server:
        trace = _quorum_run(server)
        bodies = _bodies(server)
    (event,) = trace.policy_events
    (straggler,) = event.cancelled
    node = trace.node(straggler)
    assert node.status == "cancelled" and node.usage.completion_tokens == 3
    assert node.notes["tokens_reported"] is True
    assert event.cancelled_tokens == 3 and event.tokens_unknown == 0
    assert trace.effective_ttc == sum(n.usage.completion_tokens for n in trace.nodes)
    finished = [n for n in trace.nodes if n.round == 1 and n.status == "ok"]
    assert len(finished) == 3 and all(n.usage.completion_tokens > 3 for n in finished)
    assert trace.effective_ttc == 3 + sum(n.usage.completion_tokens for n in trace.nodes if n.status == "ok")
    # round 1 (a quorum that cancels) streamed with per-chunk usage; the sink sent whole, as ever
    round1, sink = bodies[:4], bodies[4:]
    assert all(b.get("stream") is True and b["stream_options"] == {"include_usage": True,
                                                                   "continuous_usage_stats": True}
               for b in round1)
    assert len(sink) == 1 and "stream" not in sink[0] and "stream_options" not in sink[0]


def test_openai_straggler_with_no_chunk_yet_is_zero_once_the_endpoint_counts() -> None:
    with FakeServer(stall_first=0) as server:
        trace = _quorum_run(server)
    (event,) = trace.policy_events
    assert len(event.cancelled) == 1 and event.cancelled_tokens == 0 and event.tokens_unknown == 0
    assert trace.node(event.cancelled[0]).notes["tokens_reported"] is True


def test_openai_server_without_per_chunk_counts_leaves_the_straggler_unknown() -> None:
    with FakeServer(stall_first=3, continuous_usage=False, token_ids=False) as server:
        trace = _quorum_run(server)
    (event,) = trace.policy_events
    (straggler,) = event.cancelled
    assert event.tokens_unknown == 1 and event.cancelled_tokens == 0
    node = trace.node(straggler)
    assert node.usage.completion_tokens == 0 and node.notes["tokens_reported"] is False


def test_openai_requests_without_a_cancelling_quorum_keep_their_shape() -> None:
    async def main(policies: Policies | None) -> None:
        async with OpenAIEngine(server.url, model="m") as engine:
            await run(PROBLEM, all_to_all([4]), engine, policies=policies)

    with FakeServer() as server:
        anyio.run(main, None)
        anyio.run(main, Policies(quorum=Quorum(q=3, stragglers="finish")))
        bodies = _bodies(server)
    assert [b["n"] for b in bodies] == [4, 1] + [1] * 5  # merged n=4 + sink; per sample + sink
    assert all("stream" not in b and "stream_options" not in b for b in bodies)
