"""The executor: one per engine, shared by every run, study unit and served request on it.

Contract:
- **Admission by sequences.** At most ``window`` sequences are in flight on the engine (a request
  with ``n=K`` counts K; a request wider than the window takes the whole window). The window is
  the override given to ``executor_for``, else the engine's ``info.max_sequences``, else
  ``DEFAULT_WINDOW``.
- **Priority** (``Priority.key``). While new work is being fed (``feeding``: a study starting
  its units, a server accepting requests), deeper rounds go first, then earlier-started runs:
  started problems finish soon and one problem's tail overlaps another's start (low latency,
  few problems in flight). When no more work will come, the longest remaining path goes first
  (critical-path order), so the last problems do not run their whole chain in a thin batch at
  the end (the makespan). Ties: earlier-started runs, then node order. Switching re-orders what
  waits. The head of the queue is never overtaken by narrower work behind it.
- **Queued work costs no task.** ``submit`` stores a callback; when admitted it is started in the
  caller's own task group, already holding its slots. Cancelling a run cancels its work in
  flight and drops its queued work.
- **Retries** (``generate``): retryable ``EngineError``s and per-attempt timeouts are retried
  under a ``RetryPolicy``; the slots are released during the back-off, and the retry waits for
  admission again at the same priority.
- **Samples** of an ``n > 1`` request free their slots one by one as they end, on engines that
  split samples, and on engines that stream them while other work waits for admission
  (``_samples``); the caller decides the split (``Executor.split``) because it maps samples to
  nodes.
- **Stats.** Time-weighted sequences in flight, peak, busy time, engine requests, and the
  orchestration time the runs report (``add_orchestration``).
"""

from __future__ import annotations

import heapq
import itertools
import random
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ._engine import Completion, Engine, GenerationRequest, SampleCallback, TextCallback
from ._errors import EngineError
from ._logging import get_logger
from ._meter import ExecutorStats, Meter
from ._priority import Job, Priority, PriorityKey, Slots, Ticket
from ._samples import generate_split, generate_streamed
from ._wrappers import ONE_ATTEMPT, RetryPolicy, with_attempts, with_retries

log = get_logger("pacore_agents.executor")

#: the window when neither the caller nor the engine says (a vLLM server's default max_num_seqs)
DEFAULT_WINDOW = 256

class Executor:
    """Admission, priority, retries and statistics for one engine (see the module docstring)."""

    def __init__(self, engine: Engine, *, window: int | None = None) -> None:
        self.engine = engine
        self._override = window
        self._window = window or DEFAULT_WINDOW
        self.in_flight = 0
        self.queued = 0
        self._heap: list[tuple[PriorityKey, int, Ticket]] = []
        self._counter = itertools.count()
        self._runs = itertools.count()
        self._rng = random.Random(0)
        self._room: list[anyio.Event] = []
        self.runs_active = 0
        self._feeders = 0
        self._starting = 0
        self._queued_runs: set[int] = set()
        # ``_job`` takes over work admitted for its own group while it releases (``_dispatch``)
        self._handoff_tg: anyio.abc.TaskGroup | None = None
        self._handoff: tuple[Job, int] | None = None
        self.meter = Meter()

    # ---- configuration -------------------------------------------------------------------
    @property
    def window(self) -> int:
        return self._window

    def refresh(self) -> None:
        """Re-read the engine's capacity (call after ``engine.start()``)."""
        if self._override is None:
            self._window = self.engine.info.max_sequences or DEFAULT_WINDOW
        self._dispatch()

    @property
    def split(self) -> bool:
        """Whether requests with n > 1 go to the engine as n requests of one sample."""
        return bool(getattr(self.engine, "split_samples", False))

    @property
    def feeding(self) -> bool:
        """Whether more work is expected (see the module docstring: it decides the order)."""
        return self._feeders > 0

    @contextmanager
    def feeder(self) -> Iterator[None]:
        """Declare that more work will come while inside (a study feeding units, a server
        accepting requests): deeper rounds go first until the last feeder leaves."""
        self._set_feeders(self._feeders + 1)
        try:
            yield
        finally:
            self._set_feeders(self._feeders - 1)

    def _set_feeders(self, count: int) -> None:
        was = self.feeding
        self._feeders = count
        if was != self.feeding:  # re-order what waits under the new policy
            self._heap = [(w.priority.key(self.feeding), w.seq, w) for _, _, w in self._heap]
            heapq.heapify(self._heap)
            self._dispatch()

    def new_run(self) -> int:
        """A sequence number for work outside ``run`` (baselines): earlier numbers go first."""
        return next(self._runs)

    def begin_run(self) -> int:
        """Register a run that is starting (before it queues anything); returns its sequence
        number. ``runs_active`` counts it until ``end_run``; ``room`` counts it as waiting work
        until ``run_queued`` says its first work is queued."""
        self.runs_active += 1
        self._starting += 1
        return next(self._runs)

    def run_queued(self, seq: int) -> None:
        """The run ``seq`` has queued its first work (or will queue none)."""
        if seq not in self._queued_runs:
            self._queued_runs.add(seq)
            self._starting -= 1
            self._dispatch()

    def end_run(self, seq: int) -> None:
        self.run_queued(seq)
        self._queued_runs.discard(seq)
        self.runs_active -= 1

    # ---- admission -----------------------------------------------------------------------
    def _account(self, delta: int) -> None:
        self.meter.moved(self.in_flight, delta)
        self.in_flight += delta

    def _dispatch(self) -> None:
        heap = self._heap
        while heap:
            head = heap[0][2]
            if head.gone:
                heapq.heappop(heap)
                if not head.dead:
                    self.queued -= head.n
                    head.dead = True
                head.leave()
                continue
            if self.in_flight and self.in_flight + head.n > self._window:
                break
            heapq.heappop(heap)
            self.queued -= head.n
            self._account(head.n)
            head.started = True
            head.leave()
            if head.job is not None:
                assert head.tg is not None
                if head.tg is self._handoff_tg and self._handoff is None:
                    self._handoff = (head.job, head.n)  # the job ending in this group runs it next
                else:
                    head.tg.start_soon(self._job, head.job, head.n, head.tg)
                head.job = head.tg = None
            elif head.start is not None:
                head.start(head.n)
        if self._room and self.queued + self._starting < self._window:
            events, self._room = self._room, []
            for event in events:
                event.set()

    def _enqueue(self, priority: Priority, n: int, start: Callable[[int], object] | None = None, *,
                 job: Job | None = None, tg: anyio.abc.TaskGroup | None = None,
                 owner: set[Ticket] | None = None) -> Ticket:
        n = max(1, min(n, self._window))
        waiter = Ticket(next(self._counter), priority, n, start, job=job, tg=tg, owner=owner)
        if owner is not None:
            owner.add(waiter)
        heapq.heappush(self._heap, (priority.key(self.feeding), waiter.seq, waiter))
        self.queued += n
        self._dispatch()
        return waiter

    def _cancel(self, waiter: Ticket) -> None:
        waiter.leave()
        if not waiter.dead and not waiter.started:
            self.queued -= waiter.n
            waiter.dead = True
            self._dispatch()

    def release(self, n: int) -> None:
        """Give back ``n`` admitted sequences."""
        if n:
            self._account(-n)
            self._dispatch()

    def submit(self, tg: anyio.abc.TaskGroup, priority: Priority, n: int, job: Job,
               queued: set[Ticket]) -> Ticket:
        """Start ``job(slots)`` in ``tg`` once ``n`` sequences are admitted. The job passes
        ``slots`` to ``generate``; whatever it still holds when it ends is released. If ``tg`` is
        cancelled first, the job is dropped and holds nothing. The ticket stays in ``queued``
        until it starts or is dropped; the caller must ``withdraw`` what is
        left there before ``tg`` closes (a closed group cannot start the job)."""
        return self._enqueue(priority, n, job=job, tg=tg, owner=queued)

    def withdraw(self, tickets: Iterable[Ticket]) -> None:
        """Drop queued work that has not started (e.g. its run ended or was cancelled)."""
        for ticket in list(tickets):
            self._cancel(ticket)

    async def _job(self, job: Job, admitted: int, tg: anyio.abc.TaskGroup) -> None:
        """Run ``job``; then, while the release of its slots admits work of the same task group,
        run that in this task too (one task carries on instead of one task per request: the
        same group and cancel scope, so the same structure)."""
        first = True
        while True:
            slots = Slots(admitted)
            try:
                if first:
                    await checkpoint_if_cancelled()  # cancelled while queued: send nothing
                else:
                    await checkpoint()  # let other tasks run between jobs
                await job(slots)
            except BaseException:
                self.release(slots.take())
                raise
            self._handoff_tg = tg
            try:
                self.release(slots.take())
            finally:
                handoff, self._handoff, self._handoff_tg = self._handoff, None, None
            if handoff is None:
                return
            job, admitted = handoff
            first = False

    async def acquire(self, priority: Priority, n: int) -> int:
        """Wait for admission of ``n`` sequences; return how many were admitted (see window)."""
        event = anyio.Event()
        got: list[int] = []

        def start(admitted: int) -> None:
            got.append(admitted)
            event.set()

        waiter = self._enqueue(priority, n, start)
        try:
            await event.wait()
        except BaseException:
            if got:
                self.release(got[0])
            else:
                self._cancel(waiter)
            raise
        return got[0]

    async def room(self) -> None:
        """Return when fewer than a window of sequences (and starting runs) wait for admission:
        the moment to feed new work. Always yields once, so started runs can queue theirs."""
        await checkpoint()
        while self.queued + self._starting >= self._window:
            event = anyio.Event()
            self._room.append(event)
            await event.wait()

    # ---- requests ------------------------------------------------------------------------
    async def generate(
        self,
        request: GenerationRequest,
        *,
        priority: Priority,
        retry: RetryPolicy | None,
        slots: Slots | None = None,
        on_text: TextCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> list[Completion]:
        """Send ``request`` within the window (``slots`` already admitted are used for the first
        attempt), retrying under ``retry``. Completions carry their attempt count; the final
        error carries it too. On success the slots go back into ``slots`` (the job releases them
        after applying the results); without ``slots``, and on failure, they are released here.
        ``n > 1`` on engines that split samples, or stream them while other work waits for
        admission (a slot freed early then has a taker; with none waiting, one whole request is
        the cheapest for a server): each sample is released as it ends, after
        ``on_sample(i, completion)`` is called for it (``_samples``); otherwise ``on_sample`` is
        not called (the caller has every sample when this returns)."""
        if request.n > 1 and (self.split or (self.engine.streams_samples and self.queued > 0)):
            admitted = slots.take() if slots is not None else 0
            if self.split:
                self.release(admitted)
                return await generate_split(self, request, priority=priority, retry=retry, on_sample=on_sample)
            return await generate_streamed(self, request, priority=priority, retry=retry, held=admitted,
                                           on_sample=on_sample)
        policy = retry or ONE_ATTEMPT
        held = [slots.take() if slots is not None else 0]

        async def attempt(n: int) -> list[Completion]:
            # admission is waited for outside the deadline; back-off sleeps hold no slot
            if not held[0]:
                held[0] = await self.acquire(priority, request.n)
            try:
                out = await self._send(request, policy.timeout, on_text)
            except BaseException:
                self.release(held[0])
                held[0] = 0
                raise
            if slots is not None:  # the caller releases after applying the results, so the
                slots.n = held[0]  # work they make ready queues first
                held[0] = 0
            return with_attempts(out, n)

        try:
            return await with_retries(policy, self._rng, attempt, on_retry=self.count_retry,
                                      nodes=[str(n) for n in request.metadata.nodes])
        finally:
            self.release(held[0])

    def count_retry(self) -> None:
        self.meter.retries += 1

    async def _send(self, request: GenerationRequest, seconds: float | None, on_text: TextCallback | None,
                    on_sample: SampleCallback | None = None) -> list[Completion]:
        """One engine call (no admission, no retry): the attempt of ``generate`` and ``_samples``."""
        self.meter.requests += 1
        self.meter.sequences += request.n
        if seconds is None:  # no cancel scope when there is no deadline: the hot path
            out = await self._call(request, on_text, on_sample)
        else:
            with anyio.fail_after(seconds):
                out = await self._call(request, on_text, on_sample)
        if len(out) != request.n:
            raise EngineError(f"engine returned {len(out)} samples for n={request.n}")
        return out

    async def _call(self, request: GenerationRequest, on_text: TextCallback | None,
                    on_sample: SampleCallback | None) -> list[Completion]:
        if on_text is not None and request.n == 1:
            return await self.engine.generate_stream(request, on_text)
        if on_sample is not None:
            return await self.engine.generate_samples(request, on_sample)
        return await self.engine.generate(request)

    # ---- statistics ----------------------------------------------------------------------
    def add_orchestration(self, seconds: float) -> None:
        """Runs report the time they spent planning and applying (orchestration overhead)."""
        self.meter.orchestration += seconds

    def stats(self) -> ExecutorStats:
        self._account(0)
        return self.meter.stats(self._window)


_EXECUTORS: weakref.WeakKeyDictionary[Engine, Executor] = weakref.WeakKeyDictionary()


def executor_for(engine: Engine, *, window: int | None = None) -> Executor:
    """The engine's executor (created on first use). ``window`` overrides the engine's
    capacity; every ``run`` on the same engine object shares this executor."""
    executor = _EXECUTORS.get(engine)
    if executor is None:
        executor = _EXECUTORS[engine] = Executor(engine, window=window)
    elif window is not None and window != executor._override:
        executor._override = window
        executor._window = window
    return executor
