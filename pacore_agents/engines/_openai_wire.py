"""The OpenAI chat wire format of ``OpenAIEngine``: request keyword arguments from sampling
parameters, openai errors as ``EngineError``s, and responses (whole or streamed) as
``Completion``s with per-choice usage (see ``_openai``'s docstring for the usage contract)."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pacore_agents._engine import Completion, SampleCallback, SamplingParams, TextCallback, Usage
from pacore_agents._errors import EngineError


def sampling_kwargs(sampling: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
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


def map_error(exc: openai.OpenAIError, endpoint: str, what: str) -> EngineError:
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


def completions(response: ChatCompletion, n: int, endpoint: str) -> list[Completion]:
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
        counts, source = split_tokens(total_completion, weights), "estimated"
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


def split_tokens(total: int, weights: list[int]) -> list[int]:
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


class StreamedChoices:
    """The chunks of a streamed chat completion of ``n`` choices, assembled into ``Completion``s.

    ``feed`` each chunk in order. With ``on_sample``, each choice is reported as
    ``on_sample(index, completion)`` the moment its ``finish_reason`` arrives; ``on_text`` gets
    choice 0's content deltas. ``finish`` returns every choice in order (reporting any not yet
    reported). Completion tokens per choice: vLLM's per-chunk usage
    (``continuous_usage_stats``: the choice's count so far), else its per-chunk ``token_ids``,
    else the final usage for a single choice, else the 3-characters estimate; prompt tokens
    from any usage seen; cached tokens only from the final usage (so 0 for a choice reported
    before it)."""

    def __init__(self, n: int, endpoint: str, model: str, *, on_text: TextCallback | None = None,
                 on_sample: SampleCallback | None = None) -> None:
        self.n, self.endpoint, self.model = n, endpoint, model
        self.on_text, self.on_sample = on_text, on_sample
        self._content: list[list[str]] = [[] for _ in range(n)]
        self._reasoning: list[list[str]] = [[] for _ in range(n)]
        self._ids: list[int | None] = [None] * n
        self._counted: list[int | None] = [None] * n
        self._finish: list[str | None] = [None] * n
        self._done: list[Completion | None] = [None] * n
        self._prompt_tokens = 0
        self._usage: Any = None

    def feed(self, chunk: ChatCompletionChunk) -> None:
        usage = chunk.usage
        if usage is not None:
            self._prompt_tokens = usage.prompt_tokens or self._prompt_tokens
            if not chunk.choices:
                self._usage = usage  # the final usage chunk (include_usage)
        for choice in chunk.choices:
            i = choice.index
            if not 0 <= i < self.n:
                raise EngineError(f"{self.endpoint}: streamed choice {i} of n={self.n}", endpoint=self.endpoint)
            extra = choice.delta.model_extra or {}
            thought = extra.get("reasoning_content") or extra.get("reasoning")
            if isinstance(thought, str):
                self._reasoning[i].append(thought)
            if choice.delta.content:
                self._content[i].append(choice.delta.content)
                if i == 0 and self.on_text is not None:
                    self.on_text(choice.delta.content)
            ids = (choice.model_extra or {}).get("token_ids")
            if isinstance(ids, list):
                self._ids[i] = (self._ids[i] or 0) + len(ids)
            if usage is not None and len(chunk.choices) == 1:
                self._counted[i] = usage.completion_tokens
            if choice.finish_reason is not None:
                self._finish[i] = choice.finish_reason
                if self.on_sample is not None:
                    self._report(i)

    def tokens_seen(self, i: int) -> int | None:
        """Choice ``i``'s completion tokens reported so far (per-chunk usage, else per-chunk
        token ids), or None if its chunks reported neither."""
        return self._counted[i] if self._counted[i] is not None else self._ids[i]

    def finish(self) -> list[Completion]:
        """Every choice in order; a stream that ended before a choice finished is a retryable
        error (the connection was cut), not a short answer."""
        unfinished = [i for i in range(self.n) if self._finish[i] is None]
        if unfinished:
            raise EngineError(f"{self.endpoint}: the stream ended before choice {unfinished[0]} finished",
                              retryable=True, endpoint=self.endpoint)
        for i in range(self.n):
            self._report(i)
        return [c for c in self._done if c is not None]

    def _report(self, i: int) -> None:
        if self._done[i] is not None:
            return
        text = "".join(self._content[i])
        reasoning = "".join(self._reasoning[i]) if self._reasoning[i] else None
        final = self._usage
        count: int | None = self._counted[i] if self._counted[i] is not None else self._ids[i]
        if count is None and self.n == 1 and final is not None:
            count = final.completion_tokens
        source = "exact" if count is not None else "estimated"
        if count is None:
            count = (len(text) + len(reasoning or "") + 2) // 3
        details = final.prompt_tokens_details if final is not None else None
        completion = Completion(
            content=text, reasoning=reasoning, finish_reason=self._finish[i],
            usage=Usage(prompt_tokens=self._prompt_tokens, completion_tokens=count,
                        cached_tokens=(details.cached_tokens or 0) if details is not None else 0),
            notes={"endpoint": self.endpoint, "model": self.model, "streamed": True,
                   "completion_tokens": source})
        self._done[i] = completion
        if self.on_sample is not None:
            self.on_sample(i, completion)
