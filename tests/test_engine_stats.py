"""Engine-side stats and priority without a real engine: the OpenAI engine's ``/metrics``
scrape against tiny local servers, its ``priority`` field, and the in-process engine's stat
logger fed with vLLM's own stats records (the real-engine figures: test_vllm_engine.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pacore_agents import ChatMessage, ConfigError, GenerationRequest, SamplingParams
from pacore_agents._engine import RequestMetadata
from pacore_agents.engines._openai import OpenAIEngine
from pacore_agents.engines._server_metrics import metrics_url, parse_vllm_metrics
from pacore_agents.engines._vllm import VLLMEngine
from pacore_agents.engines._vllm_stats import VLLMCounters
from tests._fake_servers import FakeServer

pytestmark = pytest.mark.anyio

#: the shape of a vLLM 0.32 server's /metrics (two label sets per counter, as with two engines)
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1500.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 640.0
# HELP vllm:prompt_tokens_by_source_total Number of prompt tokens by source.
# TYPE vllm:prompt_tokens_by_source_total counter
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_compute"} 700.0
vllm:prompt_tokens_by_source_total{engine="1",model_name="m",source="local_compute"} 160.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_cache_hit"} 600.0
vllm:prompt_tokens_by_source_total{engine="1",model_name="m",source="local_cache_hit"} 40.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="external_kv_transfer"} 0.0
"""

#: an older server: no by-source counter, the totals and prefix-cache hits only
OLD_METRICS = "\n".join(line for line in VLLM_METRICS.splitlines()
                        if "by_source" not in line) + "\n"


class MetricsServer:
    """Serves ``body`` at ``GET /metrics`` (HTTP ``status``) on 127.0.0.1; a context manager."""

    def __init__(self, body: str, status: int = 200) -> None:
        self.body, self.status = body, status
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                found = self.path == "/metrics"
                data = (outer.body if found else "no route").encode()
                self.send_response(outer.status if found else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def two_servers() -> Iterator[tuple[MetricsServer, MetricsServer]]:
    with MetricsServer(VLLM_METRICS) as a, MetricsServer(VLLM_METRICS) as b:
        yield a, b


def test_metrics_url_is_the_server_root() -> None:
    assert metrics_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert metrics_url("http://u:p@h:8000/") == "http://u:p@h:8000/metrics"


def test_parse_sums_label_sets_and_prefers_by_source() -> None:
    assert parse_vllm_metrics(VLLM_METRICS) == {
        "prefill_computed_tokens": 860, "prefill_cached_tokens": 640, "running": 7, "waiting": 3}


def test_parse_falls_back_to_totals_and_prefix_cache_hits() -> None:
    assert parse_vllm_metrics(OLD_METRICS) == {
        "prefill_computed_tokens": 1500 - 640, "prefill_cached_tokens": 640, "running": 7, "waiting": 3}


def test_parse_ignores_other_metrics() -> None:
    assert parse_vllm_metrics("# TYPE up gauge\nup 1.0\n") == {}


async def test_openai_stats_sum_over_endpoints(two_servers: tuple[MetricsServer, MetricsServer]) -> None:
    a, b = two_servers
    async with OpenAIEngine([a.url, b.url], model="m", api_key="sk-test") as engine:
        stats = await engine.stats()
    assert stats is not None and stats.source == "vllm-server-metrics"
    assert (stats.prefill_computed_tokens, stats.prefill_cached_tokens) == (1720, 1280)
    assert (stats.running, stats.waiting) == (14, 6)
    assert a.paths == ["/metrics"] and b.paths == ["/metrics"]


@pytest.mark.parametrize("body,status", [(VLLM_METRICS, 500), ("not prometheus {{{", 200),
                                         ("# TYPE up gauge\nup 1\n", 200)])
async def test_openai_stats_are_none_when_an_endpoint_fails(body: str, status: int) -> None:
    with MetricsServer(VLLM_METRICS) as good, MetricsServer(body, status) as bad:
        async with OpenAIEngine([good.url, bad.url], model="m") as engine:
            assert await engine.stats() is None


async def test_openai_stats_are_none_when_nothing_listens() -> None:
    with MetricsServer(VLLM_METRICS) as server:
        url = server.url
    async with OpenAIEngine(url, model="m") as engine:  # the port is closed now
        assert await engine.stats() is None


def request(priority: int) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content="hi"),),
                             sampling=SamplingParams(max_tokens=4),
                             metadata=RequestMetadata(priority=priority))


@pytest.mark.parametrize("server_priority,priority,sent", [
    (True, 3, 3), (True, -2, -2), (True, 0, None), (False, 3, None)])
async def test_priority_is_sent_only_to_priority_servers(
        server_priority: bool, priority: int, sent: int | None) -> None:
    with FakeServer() as server:
        async with OpenAIEngine(server.url, model="fake-model", server_priority=server_priority) as engine:
            await engine.generate(request(priority))
        (chat,) = server.chat_requests
    assert chat.body is not None and chat.body.get("priority") == sent


# -- the in-process engine (no engine started) ----------------------------------------------


def test_vllm_capacity_options() -> None:
    assert VLLMEngine(max_sequences=7).info.max_sequences == 7
    assert VLLMEngine().info.max_sequences is None  # known once started
    with pytest.raises(ConfigError, match="block_size"):
        VLLMEngine(block_size=0)
    with pytest.raises(ConfigError, match="max_sequences"):
        VLLMEngine(max_sequences=0)


async def test_vllm_stats_are_none_before_start() -> None:
    assert await VLLMEngine().stats() is None


def test_counters_add_vllms_own_stats_records() -> None:
    stats = pytest.importorskip("vllm.v1.metrics.stats")
    counters = VLLMCounters()
    for computed, local_hit in ((300, 0), (20, 256)):
        iteration = stats.IterationStats()
        prefill = stats.PrefillStats()
        prefill.set(num_prompt_tokens=computed + local_hit, num_local_cached_tokens=local_hit,
                    num_external_cached_tokens=0)
        iteration.prompt_token_stats.update_from_output(prefill)
        iteration.num_generation_tokens = 4
        counters.record(stats.SchedulerStats(num_running_reqs=3, num_waiting_reqs=1), iteration)
    busy = counters.snapshot(unfinished=4)
    assert (busy.prefill_computed_tokens, busy.prefill_cached_tokens) == (320, 256)
    assert (busy.running, busy.waiting) == (3, 1)
    assert busy.details["generation_tokens"] == 8 and busy.details["prompt_tokens"] == 576
    idle = counters.snapshot(unfinished=0)  # vLLM sends no stats once idle
    assert (idle.running, idle.waiting, idle.prefill_computed_tokens) == (0, 0, 320)


def test_stat_logger_factory_makes_a_vllm_stat_logger() -> None:
    loggers = pytest.importorskip("vllm.v1.metrics.loggers")
    stats = pytest.importorskip("vllm.v1.metrics.stats")
    from pacore_agents.engines._vllm_stats import stat_logger_factory

    counters = VLLMCounters()
    logger = stat_logger_factory(counters)(None, 0)
    assert isinstance(logger, loggers.StatLoggerBase)
    logger.record(stats.SchedulerStats(num_running_reqs=2), None, engine_idx=0)
    logger.log_engine_initialized()
    assert counters.snapshot().running == 2
