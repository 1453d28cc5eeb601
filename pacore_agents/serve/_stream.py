"""Server-Sent Events in the OpenAI ``chat.completion.chunk`` format, and the run observer
that feeds them.

Order per request: a role chunk per choice; progress chunks (an empty ``delta`` and the
progress under the ``pacore`` extension field, never in ``content``); the sink's text as the
engine generates it (``delta.reasoning_content`` inside a leading ``<think>...</think>``,
``delta.content`` after it); a chunk per choice with ``finish_reason``; a usage chunk
(``choices: []``, sent even without ``stream_options``); ``data: [DONE]``.

The concatenated ``content`` deltas equal the non-streamed ``content``: whatever the sink's
compaction keeps that was not streamed live is sent before the finish chunk. If the live
stream already sent text the compaction drops (a sink that thinks without an opening
``<think>``), a ``pacore.event = "content_reset"`` chunk carries the whole final content.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from anyio import BrokenResourceError, ClosedResourceError
from anyio.streams.memory import MemoryObjectSendStream

from pacore_agents._logging import get_logger
from pacore_agents._roles import THINK_END
from pacore_agents._trace import NodeRecord, RoundSummary

log = get_logger("pacore_agents.serve")

THINK_START = "<think>"


@dataclass
class Delta:
    """One thing to stream for choice ``index``: text (``content`` / ``reasoning_content``) or
    a progress event."""

    index: int
    content: str | None = None
    reasoning: str | None = None
    progress: dict[str, Any] | None = None


@dataclass
class ThinkSplitter:
    """Splits the sink's raw text as it streams: reasoning inside a leading ``<think>`` block,
    content after it. Holds back a tail that may be the start of a tag."""

    mode: str = "start"  # start -> think | content
    pending: str = ""
    content: str = field(default="")

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) to send now."""
        self.pending += text
        reasoning = content = ""
        if self.mode == "start":
            stripped = self.pending.lstrip()
            if stripped.startswith(THINK_START):
                self.mode, self.pending = "think", stripped[len(THINK_START):]
            elif not THINK_START.startswith(stripped):  # not a (prefix of a) <think>: plain answer
                self.mode = "content"
            else:
                return "", ""
        if self.mode == "think":
            idx = self.pending.find(THINK_END)
            if idx < 0:
                keep = _partial_suffix(self.pending, THINK_END)
                reasoning, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
                return reasoning, ""
            reasoning, self.pending = self.pending[:idx], self.pending[idx + len(THINK_END):]
            self.mode = "content"
        if self.mode == "content":
            content, self.pending = self.pending, ""
            self.content += content
        return reasoning, content

    def flush(self) -> str:
        """Reasoning still held back when the generation ended."""
        rest, self.pending = (self.pending if self.mode != "content" else ""), ""
        return rest


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class StreamObserver:
    """A ``RunObserver`` for run ``index`` of a streamed request: progress and the sink's text
    go to ``sink`` as ``Delta``s (never blocks: the stream's buffer is unbounded)."""

    def __init__(self, index: int, sink: MemoryObjectSendStream[Delta]) -> None:
        self.index = index
        self.sink = sink
        self.splitter = ThinkSplitter()

    def _put(self, delta: Delta) -> None:
        with contextlib.suppress(BrokenResourceError, ClosedResourceError):  # the response has ended
            self.sink.send_nowait(delta)

    def _progress(self, **fields: Any) -> None:
        self._put(Delta(self.index, progress=fields))

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        self._progress(event="round_started", round=round_, nodes=nodes, requests=requests)

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        self._progress(event="request_finished", round=round_, nodes=nodes,
                       completion_tokens=completion_tokens, failed=failed)

    def node_finished(self, record: NodeRecord) -> None:
        self._progress(event="node_finished", node=record.id, round=record.round,
                       completion_tokens=record.usage.completion_tokens,
                       finish_reason=record.finish_reason, error=record.error)

    def round_finished(self, summary: RoundSummary) -> None:
        self._progress(event="round_finished", round=summary.round, nodes=summary.nodes,
                       requests=summary.requests, failed=summary.failed,
                       completion_tokens=summary.completion_tokens,
                       seconds=round(summary.ended_at - summary.started_at, 3))

    def sink_text(self, delta: str) -> None:
        reasoning, content = self.splitter.feed(delta)
        if reasoning or content:
            self._put(Delta(self.index, content=content or None, reasoning=reasoning or None))

    def closing_deltas(self, answer: str | None) -> list[Delta]:
        """What to send after the run so the content deltas add up to ``answer``."""
        out: list[Delta] = []
        held = self.splitter.flush()
        if held:
            out.append(Delta(self.index, reasoning=held))
        final, sent = answer or "", self.splitter.content
        if final.startswith(sent):
            if final[len(sent):]:
                out.append(Delta(self.index, content=final[len(sent):]))
        else:
            log.info("streamed content replaced by the sink's message", choice=self.index)
            out.append(Delta(self.index, progress={"event": "content_reset", "content": final}))
        return out


class ChunkWriter:
    """Formats chunks of one completion as SSE ``data:`` lines."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "system_fingerprint": None}

    @staticmethod
    def sse(payload: dict[str, Any] | str) -> bytes:
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        return f"data: {text}\n\n".encode()

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return self.sse({**self.base, "choices": choices, **extra})

    def role(self, index: int) -> bytes:
        return self.chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}])

    def delta(self, d: Delta) -> bytes:
        body: dict[str, Any] = {}
        if d.content is not None:
            body["content"] = d.content
        if d.reasoning is not None:
            body["reasoning_content"] = d.reasoning
        choice = {"index": d.index, "delta": body, "logprobs": None, "finish_reason": None}
        if d.progress is not None:
            return self.chunk([choice], pacore={"choice": d.index, **d.progress})
        return self.chunk([choice])

    def finish(self, index: int, reason: str) -> bytes:
        return self.chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self.chunk([], usage=usage)
