"""Engine options: one pydantic model per engine kind, shared by the CLI, the API and studies.

``EngineOptions`` is the union of ``VLLMOptions``, ``OpenAIOptions`` and ``FunctionOptions``,
discriminated by ``kind``; a mapping without ``kind`` is the in-process vLLM engine (with no
``model``: the embedded SmolLM2-135M default). ``parse_engine_options`` turns a mapping (a
study's ``[engine]`` table, CLI flags) into one, raising ``ConfigError`` with one line that says
what to fix. Each kind reports its admission window (``EngineInfo.max_sequences``):
``VLLMOptions.max_sequences`` (None: the started engine's own ``max_num_seqs``),
``OpenAIOptions.max_sequences_per_endpoint`` x the number of endpoints, and
``FunctionOptions.max_sequences``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from pacore_agents._errors import ConfigError

from ._endpoints import normalize_base_url

EngineKind = Literal["vllm", "openai", "function"]

#: A vLLM server's default ``max_num_seqs`` on GPU: the window per endpoint when none is given.
DEFAULT_SEQUENCES_PER_ENDPOINT = 256


class VLLMOptions(BaseModel):
    """The in-process vLLM engine (``AsyncLLM``, CPU or GPU build)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vllm"] = "vllm"
    model: str | None = Field(default=None, description="name or local path; None = embedded SmolLM2-135M")
    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, gt=0)
    kv_cache_space_gb: float | None = Field(default=None, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    enforce_eager: bool | None = Field(default=None, description="None: True on CPU (faster start)")
    enable_prefix_caching: bool = True
    block_size: int | None = Field(default=None, gt=0, description="KV cache block, tokens; None: the engine's choice")
    max_sequences: int | None = Field(default=None, ge=1, description="max_num_seqs; None: vLLM's default")


class OpenAIOptions(BaseModel):
    """OpenAI-compatible endpoints (vLLM servers, one or more replicas)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai"]
    model: str | None = Field(default=None, description="None: the first model the server lists")
    base_urls: list[str] = Field(default_factory=list, description="http(s)://HOST:PORT/v1, one per replica")
    api_key: SecretStr | None = Field(default=None, description="default: $OPENAI_API_KEY")
    request_timeout: float = Field(default=600.0, gt=0, description="seconds per attempt")
    use_n: bool = Field(default=True, description="one request with n, or n requests with n=1")
    seed_requests: bool = Field(default=False, description="send per-request seeds (a vLLM CPU server "
                                "needs --no-enable-chunked-prefill for them; see the README)")
    max_sequences_per_endpoint: int = Field(default=DEFAULT_SEQUENCES_PER_ENDPOINT, ge=1,
                                            description="sequences in flight per endpoint (its max_num_seqs)")
    server_priority: bool = Field(default=False, description="the servers run --scheduling-policy priority: "
                                  "send each request's priority (deeper rounds / longest path first)")

    @field_validator("base_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:  # none at all is an error when the engine is built (a CLI may add them)
            normalize_base_url(url)  # raises with a message that says what to fix
        return urls


class FunctionOptions(BaseModel):
    """A Python function as the engine (``MODULE:CALLABLE``, see ``FunctionEngine``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["function"]
    function: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="MODULE:CALLABLE")
    max_sequences: int | None = Field(default=None, ge=1, description="the window it reports; None: default")


def _kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "vllm"))
    return str(getattr(value, "kind", "vllm"))


EngineOptions = Annotated[
    Annotated[VLLMOptions, Tag("vllm")] | Annotated[OpenAIOptions, Tag("openai")]
    | Annotated[FunctionOptions, Tag("function")],
    Discriminator(_kind_of, custom_error_type="engine_kind",
                  custom_error_message="unknown engine kind: use vllm, openai or function"),
]
"""How to build an engine: ``VLLMOptions | OpenAIOptions | FunctionOptions`` by ``kind``."""

_ADAPTER: TypeAdapter[EngineOptions] = TypeAdapter(EngineOptions)
_MODELS: dict[str, type[BaseModel]] = {"vllm": VLLMOptions, "openai": OpenAIOptions, "function": FunctionOptions}


def describe_error(exc: ValidationError) -> str:
    """One line for the first problem of an engine options ``ValidationError``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    kind = loc[0] if loc and loc[0] in _MODELS else None
    field = ".".join(loc[1:] if kind else loc)
    if err["type"] == "engine_kind":
        value = err["input"].get("kind") if isinstance(err["input"], Mapping) else err["input"]
        return f"unknown engine kind {value!r}: use vllm, openai or function"
    if err["type"] == "extra_forbidden" and kind is not None:
        takes = ", ".join(k for k in _MODELS[kind].model_fields if k != "kind")
        return f"the {kind} engine takes no option {field!r} (it takes: {takes})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch" and field == "function":
        msg = "write it as MODULE:CALLABLE, e.g. my_module:handler"
    if err["type"] == "missing":
        msg = "required"
    return f"engine option {field or 'kind'}: {msg}" if field else msg


def parse_engine_options(data: Mapping[str, Any] | BaseModel) -> EngineOptions:
    """Validate ``data`` (a mapping, or options already built) as ``EngineOptions``.

    Raises ``ConfigError`` with one line naming the bad option and what to do.
    """
    if isinstance(data, VLLMOptions | OpenAIOptions | FunctionOptions):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise ConfigError(f"engine options must be a table of options (kind = ..., model = ...), "
                          f"not {type(data).__name__}")
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from exc


# The flat option set study stores fingerprinted before per-kind options, with its defaults.
_LEGACY_FIELDS: dict[str, Any] = {
    "kind": "vllm", "model": None, "dtype": "auto", "max_model_len": None, "kv_cache_space_gb": None,
    "gpu_memory_utilization": None, "tensor_parallel_size": 1, "enforce_eager": None,
    "enable_prefix_caching": True, "reasoning_parser": None, "use_n": True, "function": None,
}


def results_fingerprint(options: EngineOptions) -> dict[str, Any]:
    """The options that can change results, as the flat dict study stores have always recorded.

    Existing out dirs keep matching: the keys and defaults are those of the old single options
    model. Endpoints, keys, timeouts, seeding of remote requests and capacity knobs
    (``block_size``, ``max_sequences*``) are left out: they change how a study runs, not what
    it measures.
    """
    dumped = options.model_dump(mode="json")
    return {key: dumped.get(key, default) for key, default in _LEGACY_FIELDS.items()}
