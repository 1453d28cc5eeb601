"""Engine-side figures of vLLM OpenAI-compatible servers, scraped from their ``/metrics``.

``server_stats(endpoints)`` reads each endpoint's Prometheus text (the server root: the base
URL without its ``/v1``) and sums over endpoints (and over every label set of a metric):

- prefill computed / cached: ``vllm:prompt_tokens_by_source_total`` with
  ``source="local_compute"`` / ``"local_cache_hit"``; on servers without it,
  ``vllm:prompt_tokens_total`` minus ``vllm:prefix_cache_hits_total`` / the hits;
- ``vllm:num_requests_running``, ``vllm:num_requests_waiting``.

It never raises: an endpoint that cannot be read, or a page without these metrics, makes the
result None (partial sums would understate), with a debug log naming the endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import httpx

from pacore_agents._engine import EngineStats
from pacore_agents._logging import get_logger

__all__ = ["MetricsEndpoint", "metrics_url", "parse_vllm_metrics", "server_stats"]

log = get_logger("pacore_agents.engines.metrics")

DEFAULT_METRICS_TIMEOUT = 5.0
_FIELDS = ("prefill_computed_tokens", "prefill_cached_tokens", "running", "waiting")


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where to read one server's metrics: ``url`` (may hold credentials), ``name`` (for logs,
    without them), ``api_key`` (sent as a bearer token; vLLM serves /metrics without one)."""

    url: str
    name: str
    api_key: str | None = None


def metrics_url(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/metrics``."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/metrics"


def parse_vllm_metrics(text: str) -> dict[str, int]:
    """The four figures of one server's Prometheus text (missing ones left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prompt_tokens_by_source_total":
                source = sample.labels.get("source", "")
                by_source[source] = by_source.get(source, 0.0) + sample.value
            elif sample.name in ("vllm:prompt_tokens_total", "vllm:prefix_cache_hits_total",
                                 "vllm:num_requests_running", "vllm:num_requests_waiting"):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    out: dict[str, int] = {}
    if "local_compute" in by_source:
        out["prefill_computed_tokens"] = round(by_source["local_compute"])
        out["prefill_cached_tokens"] = round(by_source.get("local_cache_hit", 0.0))
    elif "vllm:prompt_tokens_total" in sums:
        hits = sums.get("vllm:prefix_cache_hits_total", 0.0)
        out["prefill_computed_tokens"] = round(sums["vllm:prompt_tokens_total"] - hits)
        out["prefill_cached_tokens"] = round(hits)
    for name, field in (("vllm:num_requests_running", "running"),
                        ("vllm:num_requests_waiting", "waiting")):
        if name in sums:
            out[field] = round(sums[name])
    return out


async def server_stats(endpoints: Sequence[MetricsEndpoint],
                       request_timeout: float = DEFAULT_METRICS_TIMEOUT) -> EngineStats | None:
    """The endpoints' figures summed (see the module doc), or None if any cannot be read
    within ``request_timeout`` seconds."""
    pages: list[dict[str, int] | None] = [None] * len(endpoints)

    async def one(i: int, client: httpx.AsyncClient) -> None:
        endpoint = endpoints[i]
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            with anyio.fail_after(request_timeout):
                response = await client.get(metrics_url(endpoint.url), headers=headers)
            response.raise_for_status()
            pages[i] = parse_vllm_metrics(response.text)
        except Exception as exc:  # any failure: no figures, never an exception
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
            # the type and status only: an httpx message may hold the URL's credentials
            log.debug("server metrics unavailable", endpoint=endpoint.name,
                      error=type(exc).__name__, status=status)

    # plain-HTTP servers only: no TLS connection can happen (httpx follows no redirects here),
    # so skip building a certificate store (~70 ms of CPU, before a study's first request)
    tls = any(not metrics_url(e.url).startswith("http://") for e in endpoints)
    async with httpx.AsyncClient(timeout=request_timeout, verify=tls) as client, anyio.create_task_group() as tg:
        for i in range(len(endpoints)):
            tg.start_soon(one, i, client)
    if not endpoints or any(page is None or not page for page in pages):
        return None
    totals: dict[str, int | None] = {}
    for field in _FIELDS:
        values = [page.get(field) for page in pages if page is not None]
        totals[field] = None if any(v is None for v in values) else sum(v for v in values if v is not None)
    return EngineStats(source="vllm-server-metrics", details={"endpoints": len(endpoints)}, **totals)
