"""A rich progress display per round (a ``RunObserver``), drawn on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ._trace import NodeRecord, RoundSummary


class RichRoundProgress:
    """One bar per round: nodes finished out of the round's nodes, with requests and tokens."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )
        self._tasks: dict[int, TaskID] = {}
        self._tokens: dict[int, int] = {}

    def __enter__(self) -> RichRoundProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def round_started(self, round_: int, nodes: int, requests: int) -> None:
        self._tokens[round_] = 0
        self._tasks[round_] = self.progress.add_task(
            f"round {round_}", total=nodes, info=f"{requests} request(s)"
        )

    def request_finished(self, round_: int, nodes: int, completion_tokens: int, failed: bool) -> None:
        self._tokens[round_] += completion_tokens
        self.progress.update(self._tasks[round_], advance=nodes, info=f"{self._tokens[round_]} tokens")

    def node_finished(self, record: NodeRecord) -> None:
        return None

    def round_finished(self, summary: RoundSummary) -> None:
        seconds = summary.ended_at - summary.started_at
        failed = f", {summary.failed} failed" if summary.failed else ""
        self.progress.update(
            self._tasks[summary.round],
            info=f"{summary.completion_tokens} tokens, {summary.requests} request(s){failed}, {seconds:.1f}s",
        )
