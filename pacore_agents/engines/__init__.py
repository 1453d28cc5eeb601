"""Engines: the in-process vLLM engine, OpenAI-compatible endpoints, and the embedded default.

Heavy backends are imported lazily: ``import pacore_agents`` never imports vLLM or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._options import (
    DEFAULT_SEQUENCES_PER_ENDPOINT,
    EngineKind,
    EngineOptions,
    FunctionOptions,
    OpenAIOptions,
    VLLMOptions,
    parse_engine_options,
    results_fingerprint,
)

if TYPE_CHECKING:
    from pacore_agents._engine import Engine
    from pacore_agents._wrappers import RetryPolicy

__all__ = ["DEFAULT_SEQUENCES_PER_ENDPOINT", "EngineKind", "EngineOptions", "FunctionOptions", "OpenAIOptions",
           "VLLMOptions", "create_engine", "parse_engine_options", "results_fingerprint"]


def create_engine(options: EngineOptions | Mapping[str, Any], *, retry: RetryPolicy | None = None) -> Engine:
    """Build the engine ``options`` describe (not started; use it as an async context manager
    or call ``aclose`` when done). ``retry`` bounds the OpenAI engine's start-up probe of its
    endpoints (default: ``RetryPolicy()``). Raises ``ConfigError`` for options that cannot
    work (a function that does not import, a bad base URL); a mapping is parsed first."""
    options = parse_engine_options(options)
    if isinstance(options, FunctionOptions):
        from pacore_agents._function_engine import FunctionEngine

        engine = FunctionEngine.from_spec(options.function, max_sequences=options.max_sequences)
        return engine
    if isinstance(options, OpenAIOptions):
        from ._openai import OpenAIEngine

        return OpenAIEngine.from_options(options, retry=retry)
    from ._vllm import VLLMEngine

    return VLLMEngine.from_options(options)


def __getattr__(name: str) -> Any:
    if name in {"VLLMEngine"}:
        from . import _vllm

        return getattr(_vllm, name)
    if name in {"OpenAIEngine"}:
        from . import _openai

        return getattr(_openai, name)
    if name in {"ensure_embedded_model", "EMBEDDED_MODEL_NAME"}:
        from . import _embedded

        return getattr(_embedded, name)
    raise AttributeError(name)
