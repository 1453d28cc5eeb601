"""The OpenAI chat wire format of ``OpenAIEngine``: request keyword arguments from sampling
parameters, openai errors as ``EngineError``s, and responses as ``Completion``s with per-choice
usage (see ``_openai``'s docstring for the usage contract)."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletion

from pacore_agents._engine import Completion, SamplingParams, Usage
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
