"""``RunObserver``: the progress callbacks a run calls (live displays, studies grading as nodes
finish, the server's streams)."""

from __future__ import annotations

from typing import Protocol

from ._trace import NodeRecord, RoundSummary


class RunObserver(Protocol):
    """Progress callbacks; called on the event loop, must not block. An observer may also define
    ``sink_text(delta: str) -> None`` to receive the sink's text as the engine generates it."""

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        """The round's first node is planned (``requests``: requests planned with it)."""

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        """A request is done (live progress)."""

    def node_finished(self, record: NodeRecord) -> None:
        """A node's record is final."""

    def round_finished(self, summary: RoundSummary) -> None:
        """Every node of the round is final."""


class QuietObserver:
    """A ``RunObserver`` that ignores every callback: subclass it and override what you need."""

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        pass

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        pass

    def node_finished(self, record: NodeRecord) -> None:
        pass

    def round_finished(self, summary: RoundSummary) -> None:
        pass
