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
- ``generate_stream`` (n == 1) sends ``stream=True`` with ``stream_options.include_usage``
  and calls ``on_text`` with each content delta. ``generate_samples`` (n > 1, ``use_n``) streams
  one request of n and reports each sample as its choice finishes (``continuous_usage_stats``
  gives its exact completion tokens); a stream cut before every choice finished is a retryable
  ``EngineError``. The executor uses it only while other work waits for admission.
- A ``metadata.cancellable`` request (n == 1: a quorum's possible straggler) is always streamed
  with ``continuous_usage_stats``, so that once cancelled ``tokens_so_far`` gives the completion
  tokens its chunks had reported (the server may have generated a few more not yet received);
  None if they reported none (a server without vLLM's per-chunk usage). Every other request is
  sent as before (whole unless said above), and ``tokens_so_far`` is None for it.
- Seeds: requests carry ``sampling.seed`` only with ``seed_requests=True``. A vLLM CPU server
  started with its defaults (chunked prefill on) dies on a seeded request whose prefill is split
  over steps; start it with ``--no-enable-chunked-prefill`` to seed safely. Dropped seeds are
  logged once and ``info.details["seeded"]`` is False, so traces show the run was unseeded.
- ``start`` probes EVERY endpoint's ``/models`` (bounded retries under ``retry``), so a dead
  endpoint is found at start, named without its credentials. ``info.max_sequences`` is
  ``max_sequences_per_endpoint`` x the number of endpoints (the executor's window).

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
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import anyio
import openai
from openai.types.chat import ChatCompletion

from pacore_agents._engine import (
    CancelledTokens,
    Completion,
    Engine,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    SampleCallback,
    TextCallback,
)
from pacore_agents._errors import EngineError
from pacore_agents._logging import get_logger, register_secret
from pacore_agents._samples import each_sample
from pacore_agents._wrappers import RetryPolicy, with_retries

from ._endpoints import EndpointPool, display_url
from ._openai_wire import StreamedChoices, completions, map_error, sampling_kwargs
from ._options import DEFAULT_SEQUENCES_PER_ENDPOINT, OpenAIOptions
from ._server_metrics import MetricsEndpoint, server_stats

log = get_logger("pacore_agents.engines.openai")

DEFAULT_TIMEOUT = 600.0


class OpenAIEngine(Engine):
    """An engine that calls ``POST {base_url}/chat/completions`` on one or more servers."""

    #: ``use_n``: one request of n samples (one prompt for the server to tokenize and schedule
    #: instead of n); the executor streams it, each sample reported and its slot freed as it
    #: ends, while other work waits for admission, and sends it whole otherwise (streaming
    #: costs a CPU server a chunk per token). Without ``use_n``: n requests of one sample
    #: (seeded seed + i, as vLLM seeds n children). BENCHMARKS.md has the measurements.
    streams_samples = True
    split_samples = False

    def __init__(
        self,
        base_urls: str | list[str] | tuple[str, ...],
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        use_n: bool = True,
        *,
        seed_requests: bool = False,
        max_sequences_per_endpoint: int = DEFAULT_SEQUENCES_PER_ENDPOINT,
        retry: RetryPolicy | None = None,
        server_priority: bool = False,
    ) -> None:
        """``seed_requests``: send per-request seeds (see the module doc); ``retry``: bounds the
        start-up probe of the endpoints (default ``RetryPolicy()``). ``server_priority``: the
        servers run ``--scheduling-policy priority``, so a non-zero ``metadata.priority`` is
        sent (``extra_body``); off, it is never sent (a plain OpenAI API rejects the field)."""
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self._pool = EndpointPool(urls)
        self._model = model
        self._max_context: int | None = None
        self._timeout = float(timeout)
        self.use_n = use_n
        self.streams_samples, self.split_samples = use_n, not use_n
        self.seed_requests = seed_requests
        self.server_priority = server_priority
        self._seed_dropped_logged = False
        self._max_sequences = max_sequences_per_endpoint * len(self._pool)
        self._retry = retry or RetryPolicy()
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        register_secret(key)  # redacted from every log record from now on
        self._clients = [
            openai.AsyncOpenAI(base_url=url, api_key=key, timeout=self._timeout, max_retries=0)
            for url in self._pool.urls
        ]
        self._names = [display_url(url) for url in self._pool.urls]
        self._model_lock = anyio.Lock()
        self._probed = False
        self._closed = False
        self._cancelled = CancelledTokens()
        self._counting: set[int] = set()  # endpoints whose streams have counted tokens per chunk

    @classmethod
    def from_options(cls, options: OpenAIOptions, *, retry: RetryPolicy | None = None) -> OpenAIEngine:
        """Build from ``OpenAIOptions(kind="openai", base_urls=[...], ...)``."""
        api_key = options.api_key.get_secret_value() if options.api_key is not None else None
        return cls(options.base_urls, model=options.model, api_key=api_key,
                   timeout=options.request_timeout, use_n=options.use_n,
                   seed_requests=options.seed_requests,
                   max_sequences_per_endpoint=options.max_sequences_per_endpoint, retry=retry,
                   server_priority=options.server_priority)

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
            max_sequences=self._max_sequences,
            details={"base_urls": list(self._names), "use_n": self.use_n,
                     "request_timeout": self._timeout, "seeded": self.seed_requests},
        )

    async def start(self) -> None:
        """Discover the model and its context size (see ``model``)."""
        await self.model()

    async def model(self) -> str:
        """The model name: as given, else the first one listed by the first endpoint.

        The first call probes every endpoint's ``/models`` (concurrently, each with bounded
        retries) and reads the model's ``max_model_len`` (vLLM lists it) into
        ``info.max_context``; await it (or ``start``) before a run to find a dead endpoint and
        know the context size up front. An endpoint without a ``/models`` route (an HTTP 4xx)
        is fine when the model was given; one that cannot be reached never is.
        """
        if not self._probed:
            async with self._model_lock:
                if not self._probed:
                    await self._probe_models()
                    self._probed = True
        assert self._model is not None
        return self._model

    async def _probe_models(self) -> None:
        pages: list[Any] = [None] * len(self._clients)
        errors: dict[int, EngineError] = {}

        async def probe(index: int) -> None:
            try:
                pages[index] = await self._list_models(index)
            except EngineError as exc:
                errors[index] = exc

        async with anyio.create_task_group() as tg:
            for index in range(len(self._clients)):
                tg.start_soon(probe, index)
        for index in sorted(errors):
            exc = errors[index]
            if self._model is not None and exc.status is not None and 400 <= exc.status < 500 \
                    and exc.status != 429:
                log.debug("model card unavailable", endpoint=self._names[index], status=exc.status)
                continue
            raise exc
        if pages[0] is None:  # the model was given and the first endpoint has no /models route
            return
        cards = [c for c in pages[0].data if self._model is None or c.id == self._model]
        name = self._names[0]
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
        log.info("model found", endpoint=name, model=card.id, max_context=self._max_context,
                 endpoints=len(self._names))

    async def _list_models(self, index: int) -> Any:
        """One endpoint's ``/models`` page, retried under ``self._retry``; every failure is an
        ``EngineError`` naming the endpoint (without credentials)."""
        name = self._names[index]
        policy = self._retry
        timeout = min(self._timeout, policy.timeout) if policy.timeout is not None else self._timeout

        async def attempt(_: int) -> Any:
            try:
                with anyio.fail_after(timeout):
                    page = await self._clients[index].models.list()
                if not isinstance(getattr(page, "data", None), list):
                    raise ValueError("the response holds no model list")
                return page
            except TimeoutError as exc:
                raise EngineError(f"{name}: listing models timed out after {timeout}s",
                                  retryable=True, endpoint=name) from exc
            except openai.OpenAIError as exc:
                raise map_error(exc, name, "listing models") from exc
            except Exception as exc:  # httpx, ValueError, a malformed page: never a traceback
                raise EngineError(f"{name}: listing models failed: {type(exc).__name__}: {exc}",
                                  retryable=False, endpoint=name) from exc

        try:
            return await with_retries(policy, random.Random(index), attempt, what="the model probe",
                                      endpoint=name)
        except EngineError as error:
            if error.attempts > 1:
                raise EngineError(f"{error} ({error.attempts} attempts)", retryable=error.retryable,
                                  endpoint=name, status=error.status, attempts=error.attempts) from error.__cause__
            raise

    def _seed(self, request: GenerationRequest) -> int | None:
        """The seed to send: the request's with ``seed_requests``, else None (said once)."""
        seed = request.sampling.seed
        if seed is not None and not self.seed_requests:
            if not self._seed_dropped_logged:
                self._seed_dropped_logged = True
                log.info("requests are sent without seeds (seed_requests is off: seeded requests "
                         "kill a vLLM CPU server that runs chunked prefill); results are not "
                         "reproducible", endpoints=len(self._names))
            return None
        return seed

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self._closed:
            raise EngineError("the openai engine is closed")
        if request.n == 1 and request.metadata.cancellable:
            return await self._stream(request)
        model = await self.model()
        index = self._pool.assign(str(request.metadata.problem_id))
        name = self._names[index]
        log.debug("chat request", endpoint=name, n=request.n, use_n=self.use_n,
                  nodes=[str(n) for n in request.metadata.nodes])
        if self.use_n or request.n == 1:
            with self._pool.in_flight(index, request.n):  # sequences, as every path counts
                response = await self._call(index, model, request, request.n, self._seed(request))
            out = completions(response, request.n, name)
        else:
            out = await self._separate(index, model, request)
        return out

    async def _separate(self, index: int, model: str, request: GenerationRequest) -> list[Completion]:
        """n concurrent n=1 requests; the first failure cancels the others and is raised."""
        name = self._names[index]
        results: list[Completion | None] = [None] * request.n
        seed = self._seed(request)

        async def one(i: int) -> Completion:
            response = await self._call(index, model, request, 1, None if seed is None else seed + i)
            return completions(response, 1, name)[0]

        def keep(i: int, completion: Completion) -> None:
            results[i] = completion

        with self._pool.in_flight(index, request.n):
            await each_sample(list(range(request.n)), keep, one)
        return [c for c in results if c is not None]

    def _body(self, request: GenerationRequest, n: int, seed: int | None) -> dict[str, Any]:
        """The chat request's keyword arguments: messages, sampling, and the priority where the
        servers take one."""
        kwargs = sampling_kwargs(request.sampling, n, seed)
        if self.server_priority and request.metadata.priority:
            kwargs.setdefault("extra_body", {})["priority"] = request.metadata.priority
        kwargs["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        return kwargs

    @contextmanager
    def _chat_call(self, name: str) -> Iterator[None]:
        """One chat request's deadline (``timeout``), and its errors as ``EngineError``s."""
        try:
            with anyio.fail_after(self._timeout):
                yield
        except TimeoutError as exc:
            raise EngineError(f"{name}: request timed out after {self._timeout}s",
                              retryable=True, endpoint=name) from exc
        except openai.OpenAIError as exc:
            raise map_error(exc, name, "chat completion") from exc

    async def _call(
        self, index: int, model: str, request: GenerationRequest, n: int, seed: int | None
    ) -> ChatCompletion:
        with self._chat_call(self._names[index]):
            response: ChatCompletion = await self._clients[index].chat.completions.create(
                model=model, **self._body(request, n, seed))
            return response

    async def generate_stream(self, request: GenerationRequest, on_text: TextCallback) -> list[Completion]:
        """``generate`` for n == 1 as a streamed request (``stream=True``, usage from
        ``stream_options.include_usage``): ``on_text`` gets each content delta as it arrives;
        reasoning a server separates goes to ``Completion.reasoning``, never to ``on_text``.
        n > 1: the base class's behaviour."""
        if request.n != 1 or self._closed:
            return await super().generate_stream(request, on_text)
        return await self._stream(request, on_text=on_text)

    async def generate_samples(self, request: GenerationRequest, on_sample: SampleCallback) -> list[Completion]:
        """One streamed request of n samples (with ``use_n``); each sample is reported as its
        choice's ``finish_reason`` arrives, with its exact completion tokens (vLLM's per-chunk
        usage, ``stream_options.continuous_usage_stats``). Without ``use_n``: the base class's."""
        if request.n == 1 or not self.use_n or self._closed:
            return await super().generate_samples(request, on_sample)
        return await self._stream(request, on_sample=on_sample)

    async def _stream(self, request: GenerationRequest, *, on_text: TextCallback | None = None,
                      on_sample: SampleCallback | None = None) -> list[Completion]:
        model = await self.model()
        index = self._pool.assign(str(request.metadata.problem_id))
        name = self._names[index]
        watched = request.n == 1 and request.metadata.cancellable
        options: dict[str, Any] = {"include_usage": True}
        if request.n > 1 or watched:
            options["continuous_usage_stats"] = True
        # no chunk yet: 0 tokens from an endpoint whose streams have counted per chunk, else unknown
        unseen = lambda: 0 if index in self._counting else None  # noqa: E731
        with (self._cancelled.watch(request, None, unseen) if watched else nullcontext()) as tally, \
                self._pool.in_flight(index, request.n) as one_ended, self._chat_call(name):
            reported = on_sample

            if on_sample is not None:
                def reported(i: int, completion: Completion) -> None:  # its sequence has ended
                    one_ended()
                    on_sample(i, completion)

            choices = StreamedChoices(request.n, name, model, on_text=on_text, on_sample=reported)
            stream = await self._clients[index].chat.completions.create(
                model=model, stream=True, stream_options=cast(Any, options),
                **self._body(request, request.n, self._seed(request)))
            async with stream:
                async for chunk in stream:
                    choices.feed(chunk)
                    if tally is not None and (seen := choices.tokens_seen(0)) is not None:
                        tally.tokens = seen
                        self._counting.add(index)
        return choices.finish()

    def tokens_so_far(self, request: GenerationRequest) -> int | None:
        """The completion tokens a cancelled ``cancellable`` request's stream had reported
        (per-chunk usage or token ids), once; None if it reported none, and for any other
        request (a whole response that was cancelled tells nothing)."""
        return self._cancelled.take(request)

    async def stats(self) -> EngineStats | None:
        """The servers' ``/metrics`` summed over endpoints (see ``_server_metrics``); None if
        an endpoint cannot be read or reports no vLLM metrics. Never raises."""
        endpoints = [MetricsEndpoint(url, name, str(client.api_key))
                     for url, name, client in zip(self._pool.urls, self._names, self._clients, strict=True)]
        return await server_stats(endpoints)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            await client.close()
