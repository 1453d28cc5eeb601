"""Priorities and admission tickets of the executor (``_executor``).

``Priority`` says where work stands (round, rounds after it, run order, node order) and orders
it two ways: deeper rounds first while work is being fed, the longest remaining path first once
nothing more will come (see ``Executor``). A ``Ticket`` is one queued piece of work; ``Slots``
are the sequences a started job holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc

PriorityKey = tuple[int, ...]


@dataclass(frozen=True, slots=True)
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


class Ticket:
    """One piece of queued work, started when ``n`` sequences are admitted: ``job`` in the task
    group ``tg`` (``Executor.submit``; dropped if ``tg`` is cancelled first), or ``start(n)``.
    ``owner`` (the submitter's set of queued tickets) holds it until it starts or is dropped.
    Identity-hashed; the executor's heap orders ``(key, seq, ticket)`` entries."""

    __slots__ = ("dead", "job", "n", "owner", "priority", "seq", "start", "started", "tg")

    def __init__(self, seq: int, priority: Priority, n: int,
                 start: Callable[[int], object] | None = None, *, job: Job | None = None,
                 tg: anyio.abc.TaskGroup | None = None, owner: set[Ticket] | None = None) -> None:
        self.seq, self.priority, self.n = seq, priority, n
        self.start, self.job, self.tg, self.owner = start, job, tg, owner
        self.dead = False
        self.started = False

    @property
    def gone(self) -> bool:
        return self.dead or (self.tg is not None and self.tg.cancel_scope.cancel_called)

    def leave(self) -> None:
        """Out of its owner's queued set, and holding no reference to its work."""
        if self.owner is not None:
            self.owner.discard(self)
            self.owner = None
