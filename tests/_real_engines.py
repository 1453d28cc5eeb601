"""Helpers shared by the real-engine tests (a plain module; tests import it).

``embedded_model_path()`` converts the embedded default model once per test session (into the
user cache, ``$PACORE_CACHE_DIR`` or ``~/.cache/pacore-agents/models``, so later sessions reuse
it) and returns its directory. ``engine_children()`` lists the live child processes of the test
process that an engine could have left behind.
"""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path

import psutil

from pacore_agents.engines._embedded import ensure_embedded_model

# Small settings for real-engine tests on a 2-core machine.
TEST_MAX_MODEL_LEN = 2048
TEST_KV_CACHE_GB = 1.0


@functools.cache
def embedded_model_path() -> Path:
    """The converted embedded model (converted on first use in this session, else reused)."""
    return ensure_embedded_model(progress=False)


def engine_children() -> list[psutil.Process]:
    """Live (non-zombie) child processes of this process, except multiprocessing's resource
    tracker (started once per parent by the spawn start method, it lives as long as the parent
    does and owns no engine)."""
    multiprocessing.active_children()  # reap children that already exited
    alive: list[psutil.Process] = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any("resource_tracker" in part for part in child.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        alive.append(child)
    return alive


def describe(processes: list[psutil.Process]) -> str:
    parts = []
    for proc in processes:
        try:
            parts.append(f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return "; ".join(parts)
