"""Engines: the in-process vLLM engine, OpenAI-compatible endpoints, and the embedded default.

Heavy backends are imported lazily: ``import pacore_agents`` never imports vLLM or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._options import EngineKind, EngineOptions

if TYPE_CHECKING:
    from pacore_agents._engine import Engine

__all__ = ["EngineKind", "EngineOptions", "create_engine"]


def create_engine(options: EngineOptions) -> Engine:
    """Build the engine ``options`` describes (not started; use it as an async context manager
    or call ``aclose`` when done)."""
    from pacore_agents._errors import ConfigError

    if options.kind == "function":
        from pacore_agents._function_engine import FunctionEngine

        if not options.function:
            raise ConfigError("the function engine needs MODULE:CALLABLE (--engine function:MODULE:CALLABLE)")
        return FunctionEngine.from_spec(options.function)
    if options.kind == "openai":
        from ._openai import OpenAIEngine

        return OpenAIEngine.from_options(options)
    if options.kind == "vllm":
        from ._vllm import VLLMEngine

        return VLLMEngine.from_options(options)
    raise ConfigError(f"unknown engine kind {options.kind!r}: use vllm, openai or function")


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
