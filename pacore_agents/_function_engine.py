"""``FunctionEngine``: the shipped fake, like httpx's ``MockTransport``.

A handler (sync or async) receives the ``GenerationRequest`` and returns n strings or n
``Completion``s. Usage is estimated with ``count_tokens`` unless the handler returns
``Completion``s with their own usage. Raising ``EngineError`` in the handler simulates engine
failures (set ``retryable=True`` for transient ones).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from ._engine import Completion, Engine, EngineInfo, GenerationRequest, Usage
from ._errors import ConfigError, EngineError
from ._trusted import Trusted

HandlerResult = Sequence[str | Completion]
_COMPLETION, _USAGE = Trusted(Completion), Trusted(Usage)
Handler = Callable[[GenerationRequest], HandlerResult | Awaitable[HandlerResult]]


class FunctionEngine(Engine):
    """An engine whose generations come from a Python function."""

    def __init__(self, handler: Handler, *, name: str = "function", max_context: int | None = None,
                 max_sequences: int | None = None, split_samples: bool = False, keep_requests: bool = True):
        """``max_sequences``: the capacity this engine reports (the executor's window); None
        lets the executor use its default. ``split_samples``: receive one request per sample
        (see ``Engine.split_samples``). ``keep_requests``: append every request received to
        ``requests`` (for tests); turn it off for long simulations, where the log would hold
        every request for the engine's life."""
        self.split_samples = split_samples
        self._handler = handler
        self._name = name
        self._max_context = max_context
        self._max_sequences = max_sequences
        self.requests: list[GenerationRequest] = []
        self.keep_requests = keep_requests

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=self._name, model=getattr(self._handler, "__name__", None),
                          max_context=self._max_context, max_sequences=self._max_sequences)

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words: exact and predictable for tests."""
        return len(text.split())

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        words = text.split()
        if len(words) <= max_tokens:
            return text
        return " ".join(words[len(words) - max_tokens :]) if max_tokens > 0 else ""

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self.keep_requests:
            self.requests.append(request)
        try:
            result = self._handler(request)
            if inspect.isawaitable(result):
                result = await result
        except EngineError:
            raise
        except Exception as exc:  # the handler is user code: map it at the boundary
            raise EngineError(f"function engine handler raised {type(exc).__name__}: {exc}") from exc
        items = list(result)
        if len(items) != request.n:
            raise EngineError(f"function engine handler returned {len(items)} samples, expected n={request.n}")
        prompt_tokens = sum(self.count_tokens(m.content) for m in request.messages)
        out: list[Completion] = []
        for item in items:
            if isinstance(item, Completion):
                out.append(item)
            else:
                text = str(item)
                out.append(_COMPLETION.build({
                    "content": text, "finish_reason": "stop",
                    "usage": _USAGE.build({"prompt_tokens": prompt_tokens,
                                           "completion_tokens": self.count_tokens(text)})}))
        return out

    @classmethod
    def from_spec(cls, spec: str, *, max_sequences: int | None = None) -> FunctionEngine:
        """Load ``MODULE:CALLABLE`` (the CLI's ``--engine function:MODULE:CALLABLE``)."""
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigError(f"bad function engine {spec!r}: write function:MODULE:CALLABLE")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"function engine module {module_name!r} cannot be imported: {exc}") from exc
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise ConfigError(f"function engine: {module_name!r} has no callable {attr!r}")
        return cls(cast(Handler, handler), name=f"function:{spec}", max_sequences=max_sequences)
