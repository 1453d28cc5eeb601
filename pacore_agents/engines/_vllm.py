"""``VLLMEngine``: generation with an in-process vLLM v1 ``AsyncLLM``.

Contracts:
- One ``AsyncLLM`` per ``VLLMEngine``, created lazily on the first ``generate`` (or an explicit
  ``await engine.start()``) under a lock, so concurrent first calls create one engine. Share one
  ``VLLMEngine`` between all agents and problems of a process. vLLM is imported, the model
  resolved (the embedded default converted) and the engine built in a worker thread: the event
  loop is never blocked. Needs the asyncio backend of anyio.
- ``aclose`` shuts the engine down (engine-core processes included), also when called from a
  cancelled scope; a start still running when ``aclose`` is called is shut down when it ends.
- Prompts are the model's chat template applied by the engine's tokenizer
  (``add_generation_prompt=True``), sent as token ids. ``max_tokens`` is clamped to the context
  left after the prompt (``None`` means all of it); a clamp is recorded in
  ``Completion.notes["max_tokens_clamped"]``. A prompt that leaves no room is a non-retryable
  ``EngineError``.
- ``Completion.content`` is the RAW generated text (PaCoRe orders references by raw length and
  compacts the text after the last ``</think>`` itself); ``Completion.reasoning`` additionally
  holds the text before the last ``</think>`` (without the tags) when there is one.
- ``generate_stream`` (n == 1) runs the same request with ``RequestOutputKind.DELTA`` and
  calls ``on_text`` with each piece of text as it is decoded; same result as ``generate``. So
  runs a ``metadata.cancellable`` request (n == 1, a quorum's possible straggler), counting the
  token ids: cancelled, ``tokens_so_far`` gives the count this client had received (a step still
  in the engine core is not in it). Others keep ``FINAL_ONLY`` (``tokens_so_far``: None).
- Cancelling the calling task aborts the vLLM request. vLLM errors become ``EngineError``;
  a dead engine or an invalid request is not retryable.
- Scheduling: the engine runs vLLM's ``priority`` policy and passes
  ``request.metadata.priority`` (lower runs sooner); ``info.max_sequences`` (the executor's
  admission window, known once started) is ``max_sequences`` if given (it also sets vLLM's
  ``max_num_seqs``), else ``min(max_num_seqs, KV cache tokens // min(max_model_len,
  TYPICAL_SEQUENCE_TOKENS))``, at least 1. ``stats()`` reads AsyncLLM's own per-step stats.
"""

from __future__ import annotations

import contextvars
import gc
import itertools
import os
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import sniffio

from pacore_agents._engine import (
    CancelledTokens,
    Completion,
    Engine,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    Tally,
    TextCallback,
    Usage,
)
from pacore_agents._errors import ConfigError, EngineError, PacoreError
from pacore_agents._logging import get_logger
from pacore_agents._main_guard import check_main_guard
from pacore_agents._messages import ChatMessage

from ._embedded import EMBEDDED_MODEL_NAME, is_embedded_model_dir, resolve_model
from ._options import VLLMOptions
from ._vllm_host import (
    TYPICAL_SEQUENCE_TOKENS,
    capacity,
    cpu_dtype,
    cpu_has_native_bf16,
    run_request,
    sampling_params,
    shutdown,
    split_reasoning,
)
from ._vllm_stats import VLLMCounters, stat_logger_factory

__all__ = ["DEFAULT_CPU_BLOCK_SIZE", "TYPICAL_SEQUENCE_TOKENS", "VLLMEngine", "cpu_has_native_bf16", "split_reasoning"]

log = get_logger("pacore_agents.engines.vllm")

GiB = 1 << 30
DEFAULT_CPU_KV_CACHE_GB = 1.0
#: KV block on CPU when ``block_size`` is None: the smallest vLLM's CPU attention takes (multiples
#: of 32; vLLM's CPU default is 128). vLLM caches full blocks only, so each sibling of an n-merge
#: recomputes its prompt's last partial block: smaller blocks waste less prefill, and 32 does not
#: slow decode on CPU (benchmarks/bench_blocksize.py; figures in BENCHMARKS.md).
DEFAULT_CPU_BLOCK_SIZE = 32
#: set by ``generate_stream`` for the request it runs in this task: it then streams deltas
_ON_TEXT: contextvars.ContextVar[TextCallback | None] = contextvars.ContextVar("pacore_on_text", default=None)


class VLLMEngine(Engine):
    """An ``Engine`` backed by one in-process vLLM ``AsyncLLM`` (CPU or GPU build)."""

    #: one request per sample (seeded seed + i, as vLLM seeds n children): a sample frees its
    #: slot in the executor when it ends; the prefix cache shares the prompt's full blocks
    split_samples = True

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        kv_cache_space_gb: float | None = None,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        block_size: int | None = None,
        max_sequences: int | None = None,
        engine_args: dict[str, Any] | None = None,
    ) -> None:
        """``model``: a local directory or hub id; ``None`` is the embedded default.
        ``kv_cache_space_gb`` (default 1 GiB on CPU, ``$VLLM_CPU_KVCACHE_SPACE`` if set) sizes the
        KV cache; ``enforce_eager`` defaults to True on CPU (much faster start). ``engine_args``
        are passed to ``AsyncEngineArgs`` as they are."""
        if kv_cache_space_gb is not None and kv_cache_space_gb <= 0:
            raise ConfigError(f"kv_cache_space_gb must be positive, got {kv_cache_space_gb}")
        if tensor_parallel_size < 1:
            raise ConfigError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        self._model = model
        self._dtype = dtype
        self._max_model_len = max_model_len
        self._kv_cache_space_gb = kv_cache_space_gb
        self._gpu_memory_utilization = gpu_memory_utilization
        self._tensor_parallel_size = tensor_parallel_size
        self._enforce_eager = enforce_eager
        self._enable_prefix_caching = enable_prefix_caching
        if block_size is not None and block_size < 1:
            raise ConfigError(f"block_size must be positive, got {block_size}")
        if max_sequences is not None and max_sequences < 1:
            raise ConfigError(f"max_sequences must be >= 1, got {max_sequences}")
        self._engine_args = dict(engine_args or {})
        self._block_size = block_size  # KV block, tokens (None: DEFAULT_CPU_BLOCK_SIZE on CPU)
        self._max_sequences = max_sequences  # max_num_seqs and the window (None: derived)
        self._counters = VLLMCounters()
        self._cancelled = CancelledTokens()
        self._lock = anyio.Lock()
        self._llm: Any = None
        self._tokenizer: Any = None
        self._sampling_defaults: dict[str, Any] = {}
        self._details: dict[str, Any] = {}
        self._start_error: BaseException | None = None
        self._closed = False
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:8]

    @classmethod
    def from_options(cls, options: VLLMOptions) -> VLLMEngine:
        """Build (not start) the engine ``options`` describe."""
        return cls(
            options.model,
            dtype=options.dtype,
            max_model_len=options.max_model_len,
            kv_cache_space_gb=options.kv_cache_space_gb,
            gpu_memory_utilization=options.gpu_memory_utilization,
            tensor_parallel_size=options.tensor_parallel_size,
            enforce_eager=options.enforce_eager,
            enable_prefix_caching=options.enable_prefix_caching,
            block_size=options.block_size,
            max_sequences=options.max_sequences,
        )

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="vllm", model=self._model or EMBEDDED_MODEL_NAME,
                          max_context=self._max_model_len, max_sequences=self._window,
                          details=dict(self._details))

    @property
    def _window(self) -> int | None:
        """``info.max_sequences``: the option, else the started engine's capacity."""
        if self._max_sequences is not None:
            return self._max_sequences
        capacity = self._details.get("capacity_sequences")
        return capacity if isinstance(capacity, int) else None

    async def stats(self) -> EngineStats | None:
        """Prompt tokens computed / served from the prefix cache since the engine started, and
        the requests running / waiting at its last step (AsyncLLM's own stats); None before
        the engine is started."""
        llm = self._llm
        if llm is None:
            return None
        try:
            unfinished: int | None = int(llm.get_num_unfinished_requests())
        except Exception:  # a dead engine: the counters are still what it reported
            unfinished = None
        return self._counters.snapshot(unfinished)

    @property
    def started(self) -> bool:
        return self._llm is not None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the engine if it is not running yet (idempotent, concurrency-safe)."""
        if self._llm is not None:
            return
        if sniffio.current_async_library() != "asyncio":
            raise ConfigError("the vLLM engine needs anyio's asyncio backend (vLLM is asyncio-based)")
        async with self._lock:
            if self._llm is not None:
                return
            if self._closed:
                raise EngineError("the vLLM engine is closed", retryable=False)
            if self._start_error is not None:
                raise self._start_error
            holder: dict[str, Any] = {}
            try:
                await anyio.to_thread.run_sync(self._create, holder)
            except BaseException as exc:
                if holder.get("llm") is not None:  # cancelled while the thread finished: undo
                    with anyio.CancelScope(shield=True):
                        await shutdown(holder["llm"])
                if isinstance(exc, PacoreError):
                    self._start_error = exc
                raise
            if self._closed:  # aclose() ran while we were starting
                with anyio.CancelScope(shield=True):
                    await shutdown(holder["llm"])
                raise EngineError("the vLLM engine was closed while starting", retryable=False)
            self._llm = holder.pop("llm")

    def _create(self, holder: dict[str, Any]) -> None:
        """Worker thread: import vLLM, resolve the model, build the engine into ``holder``."""
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ConfigError(
                "the in-process engine needs vLLM: run scripts/setup.sh (CPU) or "
                "`pip install -e '.[gpu]'`, or use --engine openai with a server"
            ) from exc
        on_cpu = bool(current_platform.is_cpu())
        if on_cpu or os.environ.get("VLLM_WORKER_MULTIPROC_METHOD") == "spawn":  # vLLM CPU always spawns
            check_main_guard("the vLLM engine")
        model = resolve_model(self._model)
        args: dict[str, Any] = {
            "model": model,
            "dtype": self._dtype,
            "max_model_len": self._max_model_len,
            "tensor_parallel_size": self._tensor_parallel_size,
            "enforce_eager": on_cpu if self._enforce_eager is None else self._enforce_eager,
            "enable_prefix_caching": self._enable_prefix_caching,
            "disable_log_stats": True,  # no periodic console logger; our stat logger still runs
            "scheduling_policy": "priority",
        }
        if self._block_size is not None:
            args["block_size"] = self._block_size
        if self._max_sequences is not None:
            args["max_num_seqs"] = self._max_sequences
        kv_gb = self._kv_cache_space_gb
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # else one core idles
            # vLLM 0.32 CPU: a seeded request whose prefill is split into chunks kills the worker
            # ("CPU Generator does not use offset"); whole prefills keep per-request seeds working.
            args["enable_chunked_prefill"] = False
            args["dtype"] = cpu_dtype(self._dtype, embedded=is_embedded_model_dir(model),
                                      native_bf16=cpu_has_native_bf16())
            args.setdefault("block_size", DEFAULT_CPU_BLOCK_SIZE)
            env_kv = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
            if kv_gb is not None and env_kv:
                # vLLM lets the env var override the engine argument: the explicit option wins.
                log.info("kv_cache_space_gb overrides VLLM_CPU_KVCACHE_SPACE", env=env_kv)
                os.environ.pop("VLLM_CPU_KVCACHE_SPACE")
            elif kv_gb is None and not env_kv:
                kv_gb = DEFAULT_CPU_KV_CACHE_GB
        if kv_gb is not None:
            args["kv_cache_memory_bytes"] = int(kv_gb * GiB)
        if self._gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = self._gpu_memory_utilization
        args.update(self._engine_args)
        log.info("starting vLLM engine", model=model, cpu=on_cpu, **{k: v for k, v in args.items() if k != "model"})
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args),
                                            stat_loggers=[stat_logger_factory(self._counters)])
        except Exception as exc:
            raise EngineError(f"vLLM failed to start with model {model}: {type(exc).__name__}: {exc}",
                              retryable=False) from exc
        holder["llm"] = llm
        self._tokenizer = llm.get_tokenizer()
        self._max_model_len = int(llm.model_config.max_model_len)
        self._sampling_defaults = dict(llm.model_config.get_diff_sampling_param())
        self._details = {"resolved_model": model, "device": "cpu" if on_cpu else current_platform.device_type,
                         "dtype": str(llm.model_config.dtype), "enforce_eager": args["enforce_eager"],
                         "kv_cache_space_gb": kv_gb if kv_gb is not None else os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
                         "prefix_caching": self._enable_prefix_caching,
                         "tensor_parallel_size": self._tensor_parallel_size,
                         **capacity(llm.vllm_config, self._max_model_len)}
        del llm  # a frame of this thread may outlive the call: hold the engine via holder only
        log.info("vLLM engine ready", model=model, max_model_len=self._max_model_len)

    async def aclose(self) -> None:
        """Shut the engine down and reap its processes. Idempotent; safe when cancelled."""
        self._closed = True
        llm, self._llm = self._llm, None
        if llm is None:
            return
        with anyio.CancelScope(shield=True):
            await shutdown(llm)
        del llm
        gc.collect()  # finalize the AsyncLLM now, not at interpreter exit (its __del__ is noisy then)
        log.info("vLLM engine shut down")

    # -- tokens ------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Exact with the engine's tokenizer once started; the base estimate before."""
        if self._tokenizer is None:
            return super().count_tokens(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        if self._tokenizer is None:
            return super().truncate_tokens(text, max_tokens)
        if max_tokens <= 0:
            return ""
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_tokens:
            return text
        return str(self._tokenizer.decode(ids[-max_tokens:]))

    def _render(self, messages: Sequence[ChatMessage]) -> list[int]:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        try:
            text = self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        except Exception as exc:
            raise EngineError(f"the model's chat template failed: {type(exc).__name__}: {exc}",
                              retryable=False) from exc
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    # -- generation --------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if not (request.metadata.cancellable and request.n == 1):
            return await self._generate(request, None)
        with self._cancelled.watch(request, 0) as tally:  # nothing generated before it is sent
            return await self._generate(request, tally)

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        """The tokens a cancelled ``cancellable`` request had streamed (module docstring)."""
        return self._cancelled.take(request)

    async def _generate(self, request: GenerationRequest, tally: Tally | None) -> list[Completion]:
        await self.start()
        llm = self._llm
        if llm is None:
            raise EngineError("the vLLM engine is closed", retryable=False)
        ids = await anyio.to_thread.run_sync(self._render, request.messages)
        max_len = int(self._max_model_len or 0)
        room = max_len - len(ids)
        if room < 1:
            raise EngineError(
                f"the prompt has {len(ids)} tokens but the model's context (max_model_len) is "
                f"{max_len}: shorten the prompt (e.g. lower max_message_tokens) or raise "
                f"--max-model-len", retryable=False)
        requested = request.sampling.max_tokens
        used = room if requested is None else min(requested, room)
        params = self._sampling_params(request, used)
        request_id = f"pacore-{self._tag}-{next(self._ids)}"
        on_text = _ON_TEXT.get()
        _ON_TEXT.set(None)  # this request only, not requests this task may send later
        final = await run_request(llm, ids, params, request_id, request.metadata.priority, on_text, tally)
        outputs = sorted(final.outputs, key=lambda o: o.index)
        if len(outputs) != request.n:
            raise EngineError(f"vLLM returned {len(outputs)} samples, expected n={request.n}", retryable=True)
        prompt_tokens = len(final.prompt_token_ids or ids)
        cached = int(getattr(final, "num_cached_tokens", 0) or 0)
        notes: dict[str, Any] = {"request_id": request_id}
        if requested is not None and requested > used:
            notes["max_tokens_clamped"] = {"requested": requested, "used": used}
        return [
            Completion(
                content=o.text,
                reasoning=split_reasoning(o.text),
                finish_reason=o.finish_reason,
                usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(o.token_ids),
                            cached_tokens=cached),
                notes=dict(notes),
            )
            for o in outputs
        ]

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        """``generate``, calling ``on_text(delta)`` as vLLM produces the text (``DELTA`` outputs,
        merged into the same final output; sampling and seed unchanged, so the result is the
        one ``generate`` gives). n > 1: the base class's behaviour."""
        if request.n != 1:
            return await super().generate_stream(request, on_text)
        token = _ON_TEXT.set(on_text)
        try:
            return await self.generate(request)
        finally:
            _ON_TEXT.reset(token)

    def _sampling_params(self, request: GenerationRequest, max_tokens: int) -> Any:
        return sampling_params(request, self._sampling_defaults, max_tokens)
