"""Engine options shared by the CLI, the Python API and study specs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

EngineKind = Literal["vllm", "openai", "function"]


class EngineOptions(BaseModel):
    """How to build an engine. ``kind="vllm"`` with no ``model`` is the embedded CPU default."""

    model_config = ConfigDict(extra="forbid")

    kind: EngineKind = "vllm"
    model: str | None = Field(default=None, description="name or local path; None = embedded SmolLM2-135M")
    # in-process vLLM
    dtype: str = "auto"
    max_model_len: int | None = None
    kv_cache_space_gb: float | None = Field(default=None, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    reasoning_parser: str | None = None
    # OpenAI-compatible endpoints
    base_urls: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = Field(default=None, description="default: $OPENAI_API_KEY")
    request_timeout: float = Field(default=600.0, gt=0)
    use_n: bool = True
    # function engine
    function: str | None = Field(default=None, description="MODULE:CALLABLE")
