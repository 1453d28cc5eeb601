"""Priorities and admission tickets of the executor (``_executor``).

``Priority`` says where work stands (round, rounds after it, run order, node order) and orders
it two ways: deeper rounds first while work is being fed, the longest remaining path first once
nothing more will come (see ``Executor``). A ``Ticket`` is one queued piece of work; ``Slots``
are the sequences a started job holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

PriorityKey = tuple[int, ...]


@dataclass(frozen=True)
class Priority:
    """Where work stands: its round, the rounds after it (0 for the sink), its run's start
    order, then node order (``rest``)."""

    round: int
    remaining: int
    run: int
    rest: tuple[int, ...] = ()

    def key(self, feeding: bool) -> PriorityKey:
        """Ascending = sooner. Feeding: deeper rounds first; else: longest remaining path first."""
        return (-self.round if feeding else -self.remaining, self.run, *self.rest)

    def engine_priority(self, feeding: bool) -> int:
        """The key as one int for engines that take one (lower runs sooner)."""
        return (-self.round if feeding else -self.remaining) * 10_000_000 + self.run % 10_000_000

    def sub(self, index: int) -> Priority:
        return Priority(self.round, self.remaining, self.run, (*self.rest, index))


class Slots:
    """Admitted sequences held by a job; ``take`` hands them over (to ``generate``)."""

    __slots__ = ("n",)

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


Job = Callable[[Slots], Awaitable[None]]




@dataclass(order=True)
class Ticket:
    key: PriorityKey
    seq: int
    priority: Priority = field(compare=False)
    n: int = field(compare=False)
    start: Callable[[int], object] = field(compare=False)
    scope: anyio.CancelScope | None = field(default=None, compare=False)
    dead: bool = field(default=False, compare=False)
    started: bool = field(default=False, compare=False)

    @property
    def gone(self) -> bool:
        return self.dead or (self.scope is not None and self.scope.cancel_called)
