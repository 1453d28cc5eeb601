"""Two real engines in one run (issue 19): the in-process vLLM engine for the explorers and a
vLLM OpenAI server for the sink. Slow (both start the embedded SmolLM2-135M): marked ``vllm``
and ``server``. Only invariants are asserted (never two runs' samples): each node went to the
engine its role names, the trace names both engines and models, tokens per engine add up."""

from __future__ import annotations

import anyio
import pytest

from pacore_agents import RoleOverride, RunConfig, RunTrace, SamplingParams, run
from pacore_agents.engines import ensure_embedded_model
from pacore_agents.engines._openai import OpenAIEngine
from pacore_agents.engines._vllm import VLLMEngine
from tests._real_engines import TEST_KV_CACHE_GB, TEST_MAX_MODEL_LEN, engine_children
from tests._vllm_server import SERVED_NAME, vllm_server

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.timeout(900)]


def test_in_process_explorers_and_a_server_sink_in_one_run() -> None:
    model_dir = ensure_embedded_model(progress=False)
    config = RunConfig(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16), seed=0)

    async def main() -> RunTrace:
        local = VLLMEngine(str(model_dir), max_model_len=TEST_MAX_MODEL_LEN, kv_cache_space_gb=TEST_KV_CACHE_GB)
        async with local, OpenAIEngine(url) as remote:
            with anyio.fail_after(600):
                return (await run("What is 2 + 3?", "pacore-low", engines={"default": local, "server": remote},
                                  roles={"sink": RoleOverride(engine="server")}, config=config)).trace

    with vllm_server(model_dir, startup_timeout=600) as (url, _proc):
        trace = anyio.run(main)
    assert engine_children() == []
    assert trace.error is None and trace.answer is not None
    nodes = {n.id: n for n in trace.nodes}
    assert nodes["r2.a0"].engine == "server" and nodes["r2.a0"].model == SERVED_NAME
    assert nodes["r2.a0"].notes["endpoint"] == url
    assert all(nodes[f"r1.a{i}"].engine == "default" and "endpoint" not in nodes[f"r1.a{i}"].notes for i in range(4))
    engines = trace.engines
    assert engines["default"].name == "vllm" and engines["server"].model == SERVED_NAME
    tokens = trace.tokens
    assert tokens["server"]["sink"].completion_tokens == nodes["r2.a0"].usage.completion_tokens > 0
    assert sum(u.completion_tokens for r in tokens.values() for u in r.values()) == trace.effective_ttc
