"""What runs in a grading worker process: the check under a SIGALRM budget, and the worker's
start (follow the parent's death, ignore Ctrl-C, load math-verify).

Contract: this module imports nothing but the standard library at import time (math-verify
is loaded by ``_worker_init``), and the packages above it import lazily, so a worker costs
its interpreter, math-verify and sympy, not the whole of ``pacore_agents``.

Workers never outlive the process that graded with them: each one asks Linux for SIGKILL when
its parent goes (``PR_SET_PDEATHSIG``; the ``Grader`` starts workers from one long-lived
thread, because that signal follows the thread that started the process) and also polls its
parent pid (the portable fallback), so a ``kill -9`` of a study leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

CheckFn = Callable[[str, str], bool]


def math_verify_check(gold: str, prediction: str) -> bool:
    """math-verify's verdict (gold first: the comparison is not symmetric). No own timeouts."""
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    try:
        pred_parsed = parse(prediction, parsing_timeout=None, raise_on_error=True)
    except Exception:  # an unparsable prediction is a wrong one
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=False))


@functools.lru_cache(maxsize=256)
def _parse_gold(gold: str) -> list[Any]:
    """math-verify's parse of a gold answer, cached per worker (a problem's gold is checked
    against every node's message; ``verify`` only reads it). An unparsable gold raises each time."""
    from math_verify import parse

    gold_parsed: list[Any] = parse(gold, parsing_timeout=None, raise_on_error=True)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    return gold_parsed


class _CheckTimeout(BaseException):  # BaseException: math-verify catches Exception
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _CheckTimeout


_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int, *, pdeathsig: bool = True, watch: bool = True,
                      poll: float = 0.5) -> None:
    """Make this process exit when ``parent_pid`` (the process that started it) dies: Linux's
    parent-death signal (SIGKILL, sent when the *thread* that started us ends) and a daemon
    thread that exits the process once ``os.getppid()`` is no longer ``parent_pid``."""
    if pdeathsig and sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the watcher still works
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before we could ask to follow it
        os._exit(1)
    if watch:
        def watcher() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})  # main's
            while os.getppid() == parent_pid:
                time.sleep(poll)
            os._exit(1)

        threading.Thread(target=watcher, name="pacore-parent-watch", daemon=True).start()


def block_sigint() -> None:
    """In the spawner thread: the processes it starts inherit SIGINT blocked, so a Ctrl-C that
    reaches the whole process group cannot interrupt a worker before its initializer runs."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def worker_init(parent_pid: int | None = None) -> None:
    """Follow the parent's death; load math-verify (and the parts of sympy it loads on first
    use, by checking one answer) up front: loading must not eat a check's budget."""
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings
    math_verify_check("\\boxed{1}", "1")
    signal.signal(signal.SIGALRM, _on_alarm)


def worker_ready() -> bool:
    return True


def worker_check(check: CheckFn, gold: str, prediction: str, budget: float) -> tuple[str, str | None]:
    """Runs in a worker process (main thread): the check under a SIGALRM budget."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        return ("correct" if check(gold, prediction) else "wrong"), None
    except _CheckTimeout:
        return "timeout", f"check exceeded {budget}s"
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def worker_check_many(check: CheckFn, gold: str, predictions: list[str],
                      budget: float) -> list[tuple[str, str | None]]:
    """``worker_check`` on each prediction in order, each under its own budget: one round trip
    for a batch (a request's n messages finish together), the same verdict for each."""
    return [worker_check(check, gold, prediction, budget) for prediction in predictions]
