"""What an executor saw: sequences in flight over time, and its counters (``ExecutorStats``)."""

from __future__ import annotations

import time

from pydantic import BaseModel


class ExecutorStats(BaseModel):
    """What the executor saw; ``mean_in_flight`` is time-weighted over ``busy_seconds``."""

    window: int
    mean_in_flight: float
    peak_in_flight: int
    busy_seconds: float
    requests: int
    sequences: int
    retries: int
    orchestration_seconds: float
    timeline: list[tuple[float, int]]


class Meter:
    """The executor's statistics: ``moved`` is told every change of the sequences in flight
    (time-weighted mean, peak, busy time, a timeline of at most 20,000 points, one every 50 ms
    at most); the counters are incremented by the executor."""

    def __init__(self) -> None:
        self._t0 = self._t_last = time.monotonic()
        self._in_flight = 0
        self._area = 0.0
        self._busy = 0.0
        self._peak = 0
        self._timeline: list[tuple[float, int]] = []
        self.requests = 0
        self.sequences = 0
        self.retries = 0
        self.orchestration = 0.0

    def moved(self, in_flight: int, delta: int) -> None:
        """``in_flight`` sequences were in flight until now; ``delta`` more from now."""
        now = time.monotonic()
        span = now - self._t_last
        self._area += in_flight * span
        if in_flight:
            self._busy += span
        self._t_last = now
        self._in_flight = in_flight + delta
        self._peak = max(self._peak, self._in_flight)
        if not self._timeline or now - self._t0 - self._timeline[-1][0] >= 0.05:
            self._timeline.append((round(now - self._t0, 3), self._in_flight))
            if len(self._timeline) > 20_000:  # bounded: keep every other point
                self._timeline = self._timeline[::2]

    def stats(self, window: int) -> ExecutorStats:
        return ExecutorStats(
            window=window,
            mean_in_flight=self._area / self._busy if self._busy else 0.0,
            peak_in_flight=self._peak,
            busy_seconds=self._busy,
            requests=self.requests,
            sequences=self.sequences,
            retries=self.retries,
            orchestration_seconds=self.orchestration,
            timeline=list(self._timeline),
        )
