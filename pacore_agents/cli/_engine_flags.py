"""The engine flags of ``pacore run``, ``pacore study run`` and ``pacore serve``, defined once
(``with_engine_flags`` gives a command all of them as one ``EngineFlags``).

Every flag defaults to None, meaning "not given": ``EngineFlags.options(base)`` lays the given
flags over ``base`` (a study's ``[engine]`` table; nothing for ``pacore run``). ``--engine`` with
another kind than ``base`` starts that kind afresh. A flag that does not apply to the engine
kind is an error that says so. ``--request-timeout`` bounds each attempt (the OpenAI engine's
HTTP timeout too) and ``--retries`` is the number of attempts: ``EngineFlags.retry(base)``.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from pacore_agents._errors import ConfigError

if TYPE_CHECKING:  # imported where used: the CLI's modules stay light to import
    from pydantic import BaseModel

    from pacore_agents._wrappers import RetryPolicy
    from pacore_agents.engines import EngineOptions

#: the help panel of the engine flags
PANEL = "Engine"
_R = TypeVar("_R")

EngineFlag = Annotated[str | None, typer.Option(
    "--engine", help="vllm (default) | openai | function:MODULE:CALLABLE", rich_help_panel=PANEL)]
ModelFlag = Annotated[str | None, typer.Option(
    "--model", help="model: local path or name (vllm; default the embedded SmolLM2-135M), served "
    "name (openai; default the server's first)", rich_help_panel=PANEL)]
BaseUrlFlag = Annotated[list[str] | None, typer.Option(
    "--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (repeatable: one per "
    "replica)", rich_help_panel=PANEL)]
ApiKeyFlag = Annotated[str | None, typer.Option(
    "--api-key", help="API key for --engine openai (default: $OPENAI_API_KEY)", rich_help_panel=PANEL)]
MaxModelLenFlag = Annotated[int | None, typer.Option(
    "--max-model-len", min=1, help="vLLM context length", rich_help_panel=PANEL)]
DtypeFlag = Annotated[str | None, typer.Option("--dtype", help="vLLM dtype (default auto)", rich_help_panel=PANEL)]
KvCacheFlag = Annotated[float | None, typer.Option(
    "--kv-cache-gb", help="vLLM CPU KV cache space, GiB (default 1)", rich_help_panel=PANEL)]
TensorParallelFlag = Annotated[int | None, typer.Option(
    "--tensor-parallel-size", min=1, help="vLLM tensor parallel size", rich_help_panel=PANEL)]
EagerFlag = Annotated[bool | None, typer.Option(
    "--eager/--no-eager", help="vLLM enforce_eager (default: on for CPU)", show_default=False,
    rich_help_panel=PANEL)]
MaxSequencesFlag = Annotated[int | None, typer.Option(
    "--max-sequences", min=1, help="sequences in flight: vLLM's max_num_seqs; per endpoint for openai "
    "(default 256); the function engine's window", rich_help_panel=PANEL)]
RequestTimeoutFlag = Annotated[float | None, typer.Option(
    "--request-timeout", help="seconds per request attempt (openai default 600)", rich_help_panel=PANEL)]
RetriesFlag = Annotated[int | None, typer.Option(
    "--retries", min=1, help="attempts per request, the first included (default 4); transient errors "
    "only", rich_help_panel=PANEL)]
SeedRequestsFlag = Annotated[bool | None, typer.Option(
    "--seed-requests/--no-seed-requests", show_default=False, help="openai: send per-request seeds "
    "(default off: seeds crash a vLLM CPU server unless it runs --no-enable-chunked-prefill)",
    rich_help_panel=PANEL)]

# flag -> (option name, the kinds it applies to)
_TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("model", ("vllm", "openai")),
    "base_url": ("base_urls", ("openai",)),
    "api_key": ("api_key", ("openai",)),
    "max_model_len": ("max_model_len", ("vllm",)),
    "dtype": ("dtype", ("vllm",)),
    "kv_cache_gb": ("kv_cache_space_gb", ("vllm",)),
    "tensor_parallel_size": ("tensor_parallel_size", ("vllm",)),
    "eager": ("enforce_eager", ("vllm",)),
    "seed_requests": ("seed_requests", ("openai",)),
}
_SEQUENCES = {"vllm": "max_sequences", "openai": "max_sequences_per_endpoint", "function": "max_sequences"}


#: EngineFlags field -> the typer type of its option (spelling, help), in help order
_FLAG_TYPES: dict[str, Any] = {
    "engine": EngineFlag, "model": ModelFlag, "base_url": BaseUrlFlag, "api_key": ApiKeyFlag,
    "max_model_len": MaxModelLenFlag, "dtype": DtypeFlag, "kv_cache_gb": KvCacheFlag,
    "tensor_parallel_size": TensorParallelFlag, "eager": EagerFlag, "max_sequences": MaxSequencesFlag,
    "request_timeout": RequestTimeoutFlag, "retries": RetriesFlag, "seed_requests": SeedRequestsFlag,
}


def _flag(name: str) -> str:
    """How the option of ``name`` (a field, or a command's parameter) is written."""
    return {"eager": "--eager/--no-eager", "seed_requests": "--seed-requests/--no-seed-requests"}.get(
        name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class EngineFlags:
    """The engine flags as given on a command line (None: not given)."""

    engine: str | None = None
    model: str | None = None
    base_url: list[str] | None = None
    api_key: str | None = None
    max_model_len: int | None = None
    dtype: str | None = None
    kv_cache_gb: float | None = None
    tensor_parallel_size: int | None = None
    eager: bool | None = None
    max_sequences: int | None = None
    request_timeout: float | None = None
    retries: int | None = None
    seed_requests: bool | None = None
    #: flags the command spells otherwise, for errors (``pacore serve``: ``--engine-api-key``)
    spelled: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def given(self) -> list[str]:
        """Names of the flags given."""
        return [name for name in _FLAG_TYPES if getattr(self, name) not in (None, [], ())]

    def _flag(self, name: str) -> str:
        return self.spelled.get(name) or _flag(name)

    def options(self, base: Mapping[str, Any] | BaseModel | None = None) -> EngineOptions:
        """``base`` (default: the embedded vLLM engine) with the given flags laid over it.

        Raises ``ConfigError`` (one line) for an unknown engine, a flag the engine kind does not
        take, or options that do not validate.
        """
        from pydantic import BaseModel

        from pacore_agents.engines import parse_engine_options
        from pacore_agents.engines._endpoints import normalize_base_url

        data: dict[str, Any] = dict(base.model_dump() if isinstance(base, BaseModel) else base or {})
        kind = str(data.get("kind", "vllm"))
        if self.engine is not None:
            new_kind, _, function = self.engine.partition(":")
            if new_kind not in _SEQUENCES:
                raise ConfigError(f"unknown engine {self.engine!r}: use vllm, openai or function:MODULE:CALLABLE")
            if new_kind != kind:
                data, kind = {"kind": new_kind}, new_kind
            if function:
                data["function"] = function
            elif kind == "function" and "function" not in data:
                raise ConfigError("the function engine needs its handler: --engine function:MODULE:CALLABLE")
        for name in self.given():
            if name in ("engine", "retries"):
                continue
            if name == "request_timeout":
                if self.request_timeout is not None and self.request_timeout <= 0:
                    raise ConfigError(f"bad --request-timeout {self.request_timeout}: give seconds > 0")
                if kind == "openai":
                    data["request_timeout"] = self.request_timeout
                continue
            if name == "max_sequences":
                data[_SEQUENCES[kind]] = self.max_sequences
                continue
            target, kinds = _TARGETS[name]
            if kind not in kinds:
                raise ConfigError(f"{self._flag(name)} applies to --engine {' or '.join(kinds)}, not {kind}")
            for url in self.base_url if name == "base_url" and self.base_url else []:
                normalize_base_url(url)  # one line naming the bad URL (without credentials)
            data[target] = getattr(self, name)
        if kind == "openai" and not data.get("base_urls"):
            raise ConfigError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return parse_engine_options(data)

    def retry(self, base: RetryPolicy | None = None) -> RetryPolicy:
        """``base`` (default ``RetryPolicy()``) with ``--retries`` / ``--request-timeout`` applied."""
        from pacore_agents._wrappers import RetryPolicy

        policy = base or RetryPolicy()
        update: dict[str, Any] = {}
        if self.retries is not None:
            update["max_attempts"] = self.retries
        if self.request_timeout is not None:
            if self.request_timeout <= 0:
                raise ConfigError(f"bad --request-timeout {self.request_timeout}: give seconds > 0")
            update["timeout"] = self.request_timeout
        return policy.model_copy(update=update) if update else policy


def with_engine_flags(**renamed: tuple[str, Any]) -> Callable[[Callable[..., _R]], Callable[..., _R]]:
    """Give a typer command the engine flags: the decorated function takes them as one
    ``flags: EngineFlags`` parameter, and the command's signature (what typer reads) has the
    flags' own options in its place, after the function's other parameters. ``renamed`` maps an
    ``EngineFlags`` field to another (parameter name, typer type), e.g. ``pacore serve``'s
    ``--engine-api-key``, whose ``--api-key`` is the server's own."""
    parameters = {name: renamed.get(name, (name, kind)) for name, kind in _FLAG_TYPES.items()}
    spelled = {name: _flag(param) for name, (param, _) in renamed.items()}

    def decorate(fn: Callable[..., _R]) -> Callable[..., _R]:
        hints = typing.get_type_hints(fn, include_extras=True)  # typer reads resolved types
        own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()
               if p.name != "flags"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
                 for name, kind in parameters.values()]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> _R:
            flags = EngineFlags(**{name: kwargs.pop(param) for name, (param, _) in parameters.items()},
                                spelled=spelled)
            return fn(flags=flags, **kwargs)

        command.__signature__ = inspect.Signature(own + added, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + added} | {"return": hints.get("return")}
        return command

    return decorate

