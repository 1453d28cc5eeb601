"""The library's exceptions. Every error a user can cause is a ``PacoreError``.

``ConfigError`` (bad input: spec, widths, problem, role, engine name) is what the CLI turns into
a one-line message and exit code 2. Engine failures are ``EngineError``; third-party errors
(openai, vLLM) are mapped at the engine boundary with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any


class PacoreError(Exception):
    """Base class of every error raised by pacore-agents."""


class ConfigError(PacoreError, ValueError):
    """Bad user input; the message says what to fix."""


class MainGuardError(ConfigError):
    """A child process (vLLM's engine core, a grading worker) would re-run the main script's
    unguarded top-level code; the message says what to write (``_main_guard``)."""


class TopologyError(ConfigError):
    """An invalid topology; the message names the offending node."""


class EngineError(PacoreError):
    """A generation request failed.

    ``retryable`` says whether the same request may succeed if sent again (connection errors,
    timeouts, 429, 5xx). ``endpoint`` and ``status`` name where and how it failed, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        endpoint: str | None = None,
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts

    def describe(self) -> str:
        """One line naming the endpoint, status and attempts, for traces."""
        parts = [str(self)]
        if self.endpoint:
            parts.append(f"endpoint={self.endpoint}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        parts.append(f"attempts={self.attempts}")
        return "; ".join(parts)


class PolicyError(PacoreError):
    """A stopping or quorum policy could not decide: its answer equivalence failed (the message
    names the equivalence and, where the run raises it, the policy and round)."""


class RunFailedError(PacoreError):
    """A run ended because a node failed under the ``fail`` policy, the sink failed, or the run
    timed out. ``trace`` (a ``RunTrace``) holds everything done up to then."""

    def __init__(self, message: str, trace: Any = None) -> None:
        super().__init__(message)
        self.trace = trace


def unwrap_exception_group(exc: BaseException) -> BaseException:
    """The one error a user should see for ``exc``: ``exc`` itself unless it is an
    ``ExceptionGroup`` (nested at any depth); then its single leaf, else the first
    ``PacoreError`` leaf, else the first leaf (leaves in depth-first order)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    if not leaves:  # pragma: no cover - an exception group always holds at least one exception
        return exc
    return next((leaf for leaf in leaves if isinstance(leaf, PacoreError)), leaves[0])
