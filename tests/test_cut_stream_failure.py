"""A cut stream whose retried sample fails for good (issue 23, item 9): the trace, the
``node failed`` log line and the progress observer say the same thing: only the failed node
failed, and its sibling's sample (reported before the cut) stands with its tokens."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from pacore_agents import (
    Completion,
    EngineError,
    FunctionEngine,
    GenerationRequest,
    NodeRecord,
    RetryPolicy,
    Role,
    RoundSummary,
    RunConfig,
    Usage,
    all_to_all,
    executor_for,
    run,
)
from pacore_agents._ids import NodeId
from pacore_agents._logging import configure_logging
from pacore_agents._messages import ChatMessage


class CutStream(FunctionEngine):
    """Streams samples; an n=2 stream reports sample 1 and is cut; sample 0 resent alone fails
    for good."""

    streams_samples = True

    def __init__(self) -> None:
        super().__init__(self._answer, name="cut")

    @staticmethod
    def _answer(request: GenerationRequest) -> list[Completion]:
        if request.metadata.nodes == (NodeId.of(1, 0),):
            raise EngineError("sample 0 failed again", retryable=False)
        return [Completion(content="fine", usage=Usage(completion_tokens=3)) for _ in range(request.n)]

    async def generate_samples(self, request, on_sample):  # type: ignore[no-untyped-def]
        on_sample(1, Completion(content="sibling", finish_reason="stop", usage=Usage(completion_tokens=11)))
        raise EngineError("stream cut", retryable=True)


class Progress:
    def __init__(self) -> None:
        self.requests: list[tuple[int, int, int, bool]] = []

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        return None

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        self.requests.append((round_, nodes, completion_tokens, failed))

    def node_finished(self, record: NodeRecord) -> None:
        return None

    def round_finished(self, summary: RoundSummary) -> None:
        return None


def test_the_log_and_the_progress_agree_with_the_trace(tmp_path: Path) -> None:
    log_path = tmp_path / "log.jsonl"
    configure_logging(json_path=log_path)
    engine = CutStream()
    executor_for(engine, window=2)  # the n=2 request fills it: the other waits, so it streams
    # agents 0 and 1 share a prompt (one n=2 request); agent 2 has its own (it waits)
    topo = all_to_all([3]).with_roles({NodeId.of(1, 2): "other"})
    progress = Progress()
    config = RunConfig(on_failure="continue", retry=RetryPolicy(max_attempts=2, initial_backoff=0), seed=1)
    trace = anyio.run(lambda: run([ChatMessage(role="user", content="Q?")], topo, engine, config=config,
                                  roles=[Role("other", system="Other.")], observer=progress)).trace
    status = {n.id: n.status for n in trace.nodes}
    assert status == {"r1.a0": "failed", "r1.a1": "ok", "r1.a2": "ok", "r2.a0": "ok"}
    sibling = next(n for n in trace.nodes if n.id == "r1.a1")
    assert sibling.content == "sibling" and sibling.usage.completion_tokens == 11

    failed_lines = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["event"] == "node failed"]
    assert [r["nodes"] for r in failed_lines] == [["r1.a0"]]  # not the sibling that succeeded

    round1 = [r for r in progress.requests if r[0] == 1]
    assert sorted(round1) == [(1, 1, 3, False), (1, 2, 11, True)]  # the sibling's tokens kept
    assert sum(r[2] for r in progress.requests) == trace.effective_ttc
