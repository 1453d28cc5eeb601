"""``OpenAIEngine``: chat completions against one or more OpenAI-compatible servers (vLLM).

Contract:
- ``generate`` sends one request with ``n`` (``use_n=True``) or ``n`` concurrent requests with
  n=1 (``use_n=False``; with a seed, sample i gets ``seed + i``, as vLLM does for its n
  children) and returns exactly n completions in choice order.
- All requests of one problem go to one endpoint (see ``_endpoints.EndpointPool``);
  ``Completion.notes["endpoint"]`` names it.
- No retries here (``max_retries=0``): failures become ``EngineError`` with ``endpoint`` and
  ``status``; connection errors, timeouts, 429 and 5xx are ``retryable``. Wrap the engine in
  ``RetryingEngine`` for bounded retries. Each attempt is bounded by ``timeout`` seconds.
- The API key is never logged nor put in ``info``.

Usage: ``prompt_tokens`` and ``cached_tokens`` come from the response (cached tokens need
``--enable-prompt-tokens-details`` on a vLLM server). A response with n > 1 reports one total
of completion tokens; per-choice counts are taken from vLLM's per-choice ``token_ids``
(requested with ``return_token_ids`` when n > 1). If the server does not return them, the
total is split over the choices in proportion to their text length (largest remainder, so the
sum stays exact) and ``notes["completion_tokens"]`` says ``"estimated"`` instead of ``"exact"``
(as it does when a server reports no usage at all: then 3 characters count as a token).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import openai
from openai.types.chat import ChatCompletion

from pacore_agents._engine import (
    Completion,
    Engine,
    EngineInfo,
    GenerationRequest,
    SamplingParams,
    Usage,
)
from pacore_agents._errors import EngineError
from pacore_agents._logging import get_logger

from ._endpoints import EndpointPool, display_url
from ._options import EngineOptions

log = get_logger("pacore_agents.engines.openai")

DEFAULT_TIMEOUT = 600.0


class OpenAIEngine(Engine):
    """An engine that calls ``POST {base_url}/chat/completions`` on one or more servers."""

    def __init__(
        self,
        base_urls: str | list[str] | tuple[str, ...],
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        use_n: bool = True,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self._pool = EndpointPool(urls)
        self._model = model
        self._max_context: int | None = None
        self._timeout = float(timeout)
        self.use_n = use_n
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._clients = [
            openai.AsyncOpenAI(base_url=url, api_key=key, timeout=self._timeout, max_retries=0)
            for url in self._pool.urls
        ]
        self._names = [display_url(url) for url in self._pool.urls]
        self._model_lock = anyio.Lock()
        self._probed = False
        self._closed = False

    @classmethod
    def from_options(cls, options: EngineOptions) -> OpenAIEngine:
        """Build from ``EngineOptions(kind="openai", base_urls=..., ...)``."""
        api_key = options.api_key.get_secret_value() if options.api_key is not None else None
        return cls(options.base_urls, model=options.model, api_key=api_key,
                   timeout=options.request_timeout, use_n=options.use_n)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names (base URLs without credentials), in index order."""
        return tuple(self._names)

    @property
    def affinity(self) -> dict[str, str]:
        """problem_id -> endpoint name, for the problems seen so far."""
        return {pid: self._names[i] for pid, i in self._pool.affinity.items()}

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name="openai",
            model=self._model,
            max_context=self._max_context,
            details={"base_urls": list(self._names), "use_n": self.use_n,
                     "request_timeout": self._timeout},
        )

    async def start(self) -> None:
        """Discover the model and its context size (see ``model``)."""
        await self.model()

    async def model(self) -> str:
        """The model name: as given, else the first one listed by the first endpoint.

        The first call also reads the model's ``max_model_len`` (vLLM lists it) into
        ``info.max_context``; await it before a run to have the context size known up front.
        A server without ``/models`` is fine when the model was given.
        """
        if not self._probed:
            async with self._model_lock:
                if not self._probed:
                    await self._probe_models()
                    self._probed = True
        assert self._model is not None
        return self._model

    async def _probe_models(self) -> None:
        name = self._names[0]
        try:
            with anyio.fail_after(self._timeout):
                page = await self._clients[0].models.list()
        except (TimeoutError, openai.OpenAIError) as exc:
            if self._model is not None:
                log.debug("model card unavailable", endpoint=name, error=type(exc).__name__)
                return
            if isinstance(exc, TimeoutError):
                raise EngineError(f"{name}: listing models timed out after {self._timeout}s",
                                  retryable=True, endpoint=name) from exc
            raise _map_error(exc, name, "listing models") from exc
        cards = [c for c in page.data if self._model is None or c.id == self._model]
        if not cards:
            if self._model is None:
                raise EngineError(f"{name}: the server lists no models; pass model=... explicitly",
                                  endpoint=name)
            return
        card = cards[0]
        self._model = card.id
        max_len = (card.model_extra or {}).get("max_model_len")
        if isinstance(max_len, int):
            self._max_context = max_len
        log.info("model found", endpoint=name, model=card.id, max_context=self._max_context)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self._closed:
            raise EngineError("the openai engine is closed")
        model = await self.model()
        index = self._pool.assign(str(request.metadata.problem_id))
        name = self._names[index]
        log.debug("chat request", endpoint=name, n=request.n, use_n=self.use_n,
                  nodes=[str(n) for n in request.metadata.nodes])
        if self.use_n or request.n == 1:
            with self._pool.in_flight(index):
                response = await self._call(index, model, request, request.n, request.sampling.seed)
            out = _completions(response, request.n, name)
        else:
            out = await self._separate(index, model, request)
        return out

    async def _separate(self, index: int, model: str, request: GenerationRequest) -> list[Completion]:
        """n concurrent n=1 requests; the first failure cancels the others and is raised."""
        name = self._names[index]
        results: list[Completion | None] = [None] * request.n
        errors: list[EngineError] = []
        seed = request.sampling.seed

        async def one(i: int) -> None:
            try:
                response = await self._call(index, model, request, 1, None if seed is None else seed + i)
                results[i] = _completions(response, 1, name)[0]
            except EngineError as exc:
                errors.append(exc)
                tg.cancel_scope.cancel()

        with self._pool.in_flight(index, request.n):
            async with anyio.create_task_group() as tg:
                for i in range(request.n):
                    tg.start_soon(one, i)
        if errors:
            raise errors[0]
        return [c for c in results if c is not None]

    async def _call(
        self, index: int, model: str, request: GenerationRequest, n: int, seed: int | None
    ) -> ChatCompletion:
        name = self._names[index]
        kwargs = _sampling_kwargs(request.sampling, n, seed)
        messages: Any = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            with anyio.fail_after(self._timeout):
                response: ChatCompletion = await self._clients[index].chat.completions.create(
                    model=model, messages=messages, **kwargs)
                return response
        except TimeoutError as exc:
            raise EngineError(f"{name}: request timed out after {self._timeout}s",
                              retryable=True, endpoint=name) from exc
        except openai.OpenAIError as exc:
            raise _map_error(exc, name, "chat completion") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            await client.close()


def _sampling_kwargs(sampling: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"n": n}
    for field in ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty"):
        value = getattr(sampling, field)
        if value is not None:
            kwargs[field] = value
    if seed is not None:
        kwargs["seed"] = seed
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    extra: dict[str, Any] = {}
    if sampling.top_k is not None:
        extra["top_k"] = sampling.top_k
    if n > 1:
        extra["return_token_ids"] = True  # vLLM: per-choice token ids -> exact per-choice usage
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _map_error(exc: openai.OpenAIError, endpoint: str, what: str) -> EngineError:
    """An openai error as an ``EngineError`` naming the endpoint and the HTTP status."""
    if isinstance(exc, openai.APITimeoutError):
        return EngineError(f"{endpoint}: {what} timed out", retryable=True, endpoint=endpoint)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return EngineError(f"{endpoint}: {what} failed: connection error{detail}",
                           retryable=True, endpoint=endpoint)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status == 429 or status >= 500
        return EngineError(f"{endpoint}: {what} failed with HTTP {status}: {exc.message}",
                           retryable=retryable, endpoint=endpoint, status=status)
    return EngineError(f"{endpoint}: {what} failed: {type(exc).__name__}: {exc}", endpoint=endpoint)


def _completions(response: ChatCompletion, n: int, endpoint: str) -> list[Completion]:
    """The response's choices as n ``Completion``s, with per-choice usage."""
    choices = sorted(response.choices, key=lambda c: c.index)
    if len(choices) != n:
        raise EngineError(
            f"{endpoint}: asked for n={n} choices, got {len(choices)}; if the server ignores n, "
            "use use_n=False", endpoint=endpoint)
    usage = response.usage
    prompt_tokens = usage.prompt_tokens if usage is not None else 0
    total_completion = usage.completion_tokens if usage is not None else 0
    details = usage.prompt_tokens_details if usage is not None else None
    cached = (details.cached_tokens or 0) if details is not None else 0
    texts: list[tuple[str, str | None]] = []
    for choice in choices:
        extra = choice.message.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        texts.append((choice.message.content or "", reasoning if isinstance(reasoning, str) else None))
    token_ids = [(c.model_extra or {}).get("token_ids") for c in choices]
    weights = [len(c) + len(r or "") for c, r in texts]
    if all(isinstance(t, list) for t in token_ids):
        counts, source = [len(t) for t in token_ids if isinstance(t, list)], "exact"
    elif usage is None:  # the server reports no usage: the base estimate of 3 chars a token
        counts, source = [(w + 2) // 3 for w in weights], "estimated"
    elif n == 1:
        counts, source = [total_completion], "exact"
    else:
        counts, source = _split(total_completion, weights), "estimated"
    return [
        Completion(
            content=content,
            reasoning=reasoning,
            finish_reason=choice.finish_reason,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=count, cached_tokens=cached),
            notes={"endpoint": endpoint, "model": response.model, "completion_tokens": source},
        )
        for choice, (content, reasoning), count in zip(choices, texts, counts, strict=True)
    ]


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (equal if all zero); sums to ``total``."""
    if sum(weights) == 0:
        weights = [1] * len(weights)
    scale = sum(weights)
    shares = [total * w / scale for w in weights]
    counts = [int(s) for s in shares]
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
