"""Shared fixtures. Real-engine tests are marked ``vllm`` / ``server``; unit tests use
``FunctionEngine`` only."""

from __future__ import annotations

import ctypes
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
_PR_SET_CHILD_SUBREAPER = 36


def reference_dir() -> Path:
    """``shared/pacore_reference`` beside the repository (as laid out for developers and CI)."""
    for base in (REPO.parent, REPO.parent.parent):
        candidate = base / "shared" / "pacore_reference"
        if candidate.is_dir():
            return candidate
    pytest.fail("shared/pacore_reference not found beside the repository")


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reference_dir() / "golden.json").read_text(encoding="utf-8"))
    return data


def _leftover_processes(grace: float) -> list[psutil.Process]:
    """Descendants of this process still running after ``grace`` seconds (zombies reaped).
    multiprocessing's resource tracker is left out: it exits when its parent does."""
    children = [p for p in psutil.Process().children(recursive=True) if not _is_resource_tracker(p)]
    _, alive = psutil.wait_procs(children, timeout=grace)
    return [p for p in alive if _running(p)]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_resource_tracker(proc: psutil.Process) -> bool:
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_orphan_processes() -> Iterator[None]:
    """The suite ends by checking that no process it started is left (then kills them).

    On Linux the session becomes a child subreaper first, so a process orphaned by a killed
    subprocess (say a study's grading worker after ``kill -9``) is re-parented to it and found."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    left = _leftover_processes(grace=5.0)
    if left:
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
                proc.kill()
            except psutil.Error:
                continue
        if described:
            pytest.fail("the test session left processes running:\n" + "\n".join(described), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    from pacore_agents._logging import configure_logging

    configure_logging()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio: vLLM's AsyncLLM and the real servers need it, and an old
    trio installed beside a newer anyio must not add a broken backend to the matrix."""
    return "asyncio"
