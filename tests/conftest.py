"""Shared fixtures. Real-engine tests are marked ``vllm`` / ``server``; unit tests use
``FunctionEngine`` only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    from pacore_agents._logging import configure_logging

    configure_logging()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio: vLLM's AsyncLLM and the real servers need it, and an old
    trio installed beside a newer anyio must not add a broken backend to the matrix."""
    return "asyncio"
