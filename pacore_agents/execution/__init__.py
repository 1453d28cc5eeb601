"""Running model-written programs on tests in a bubblewrap sandbox, compared as LiveCodeBench
(``lcb``) or as a judge (``judge``) compares them. Exports are lazy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacore_agents._lazy import attach

if TYPE_CHECKING:
    from ._extract import extract_code
    from ._runner import CodeExecutor, ExecutionSettings, check_canaries, execute
    from ._sandbox import SandboxLimits, bwrap_path, require_bwrap, sandbox_uids
    from ._tests import CodeTests, TestCase, TestStatus, Verdict

if not TYPE_CHECKING:  # type checkers see the imports above, not a catch-all __getattr__
    __getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "CodeExecutor",
    "CodeTests",
    "ExecutionSettings",
    "SandboxLimits",
    "TestCase",
    "TestStatus",
    "Verdict",
    "bwrap_path",
    "check_canaries",
    "execute",
    "extract_code",
    "require_bwrap",
    "sandbox_uids",
]

