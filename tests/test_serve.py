"""``pacore serve`` as users run it: a subprocess on a free port of 127.0.0.1, called with the
official ``openai`` client (sync, async, streaming) and plain HTTP. FunctionEngine handlers
from ``tests/fixtures/handlers.py`` stand in for the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
PROBLEM = [{"role": "user", "content": "What is the sum of the integers from 1 to 100?"}]
ANSWER = "Pairs sum to 101, so \\boxed{5050} (read 4)"


class Server:
    """A ``pacore serve`` subprocess; ``url`` is its base URL (``.../v1``)."""

    def __init__(self, handler: str | None, *flags: str, env: dict[str, str] | None = None,
                 start_timeout: float = 60) -> None:
        """``handler``: a function of tests/fixtures/handlers.py; None: the embedded vLLM engine."""
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"pacore-serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("w")
        engine = ["--engine", f"function:tests.fixtures.handlers:{handler}"] if handler else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pacore_agents", "serve", *engine, "--port", "0", *flags],
            cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + start_timeout
        while "listening on" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"pacore serve did not start:\n{self.output()}")
            time.sleep(0.05)
        line = next(x for x in self.output().splitlines() if "listening on" in x)
        self.url = line.split("listening on ")[1].split()[0]
        self.root = self.url.removesuffix("/v1")
        while httpx.get(f"{self.root}/health").status_code != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline + start_timeout:
                self.stop()
                raise AssertionError(f"pacore serve's engine did not start:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, key: str = "none", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, **kw)

    def aclient(self, key: str = "none") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url, api_key=key, max_retries=0)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def answer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spec = tmp_path_factory.mktemp("spec") / "duo.toml"
    spec.write_text('name = "duo"\ndescription = "two agents then the sink"\nkind = "all-to-all"\n'
                    "params = { widths = [2] }\n", encoding="utf-8")
    traces = tmp_path_factory.mktemp("traces")
    server = Server("answer", "--topology", str(spec), "--trace-dir", str(traces))
    server.trace_dir = traces  # type: ignore[attr-defined]
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def echo_server() -> Iterator[Server]:
    server = Server("sampling_echo")
    yield server
    assert server.stop() == 0


def test_models_and_a_sync_completion_with_its_trace(answer_server: Server) -> None:
    client = answer_server.client()
    ids = [m.id for m in client.models.list().data]
    assert {"pacore-low", "pacore-high", "ring", "duo"} <= set(ids)

    out = client.chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
    assert out.model == "pacore-low"
    assert out.choices[0].message.content == ANSWER
    assert (out.choices[0].message.model_extra or {})["reasoning_content"] == "add pairs"
    assert out.choices[0].finish_reason == "stop"
    usage = out.usage
    assert usage is not None
    trace = httpx.get(f"{answer_server.url}/pacore/traces/{out.id}").json()
    assert trace["answer"] == ANSWER and len(trace["nodes"]) == 5
    assert usage.completion_tokens == trace["effective_ttc"] == sum(n["usage"]["completion_tokens"] for n in trace["nodes"])
    assert usage.prompt_tokens == sum(n["usage"]["prompt_tokens"] for n in trace["nodes"])
    rounds = (usage.model_extra or {})["pacore"]["rounds"]
    assert [(r["round"], r["nodes"]) for r in rounds] == [(1, 4), (2, 1)]
    assert sum(r["completion_tokens"] for r in rounds) == usage.completion_tokens
    written = json.loads((answer_server.trace_dir / f"{out.id}.json").read_text())  # type: ignore[attr-defined]
    assert written["answer"] == ANSWER

    duo = client.chat.completions.create(model="duo", messages=PROBLEM)  # type: ignore[arg-type]
    assert duo.model == "duo" and duo.choices[0].message.content == ANSWER.replace("read 4", "read 2")
    wide = client.chat.completions.create(model="pacore-low", messages=PROBLEM,  # type: ignore[arg-type]
                                          extra_body={"pacore": {"widths": [3, 2]}})
    assert wide.choices[0].message.content == ANSWER.replace("read 4", "read 2")
    assert len(httpx.get(f"{answer_server.url}/pacore/traces/{wide.id}").json()["nodes"]) == 6


def test_stream_sends_progress_then_content_then_usage(answer_server: Server) -> None:
    chunks = list(answer_server.client().chat.completions.create(
        model="pacore-low", messages=PROBLEM, stream=True))  # type: ignore[arg-type]
    kinds = []
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        extra = chunk.model_extra or {}
        if "pacore" in extra:
            assert chunk.choices[0].delta.content is None  # progress never goes into content
            kinds.append("progress")
        elif chunk.usage is not None:
            kinds.append("usage")
        elif chunk.choices and chunk.choices[0].delta.content:
            kinds.append("content")
    assert kinds.index("progress") < kinds.index("content") < kinds.index("usage") == len(kinds) - 1
    events = [(c.model_extra or {})["pacore"]["event"] for c in chunks if "pacore" in (c.model_extra or {})]
    assert {"round_started", "node_finished", "round_finished"} <= set(events)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 45


def test_same_answer_streamed_or_not_and_n_runs_get_their_own_seeds(echo_server: Server) -> None:
    client = echo_server.client()
    kw: dict[str, Any] = {"model": "pacore-low", "messages": PROBLEM, "seed": 7, "temperature": 0.5}
    whole = client.chat.completions.create(**kw)
    again = client.chat.completions.create(**kw)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                       if c.choices)
    assert whole.choices[0].message.content == again.choices[0].message.content == streamed
    assert whole.id != again.id  # the answer does not depend on the completion id

    three = client.chat.completions.create(n=3, **kw)
    contents = [c.message.content for c in three.choices]
    assert contents[0] == whole.choices[0].message.content
    assert len(set(contents)) == 3
    per_choice = ["", "", ""]
    for chunk in client.chat.completions.create(n=3, stream=True, **kw):
        for choice in chunk.choices:
            per_choice[choice.index] += choice.delta.content or ""
    assert per_choice == contents
    traces = httpx.get(f"{echo_server.url}/pacore/traces/{three.id}").json()["data"]
    assert three.usage is not None and three.usage.completion_tokens == sum(t["effective_ttc"] for t in traces)
    assert (three.usage.model_extra or {})["pacore"]["runs"] == 3


def test_system_message_and_sampling_reach_every_trajectory(echo_server: Server) -> None:
    out = echo_server.client().chat.completions.create(
        model="pacore-low", messages=[{"role": "system", "content": "Be terse."}, *PROBLEM],  # type: ignore[list-item]
        temperature=0.3, top_p=0.9, max_tokens=77, stop=["END"], presence_penalty=0.5)
    trace = httpx.get(f"{echo_server.url}/pacore/traces/{out.id}").json()
    assert len(trace["nodes"]) == 5
    for node in trace["nodes"]:
        assert node["prompt"][0] == {"role": "system", "content": "Be terse."}
        assert ("system='Be terse.' temperature=0.3 top_p=0.9 max_tokens=77 stop=['END'] presence=0.5"
                in node["content"]), node["content"]


def test_32_concurrent_async_clients_share_the_engine() -> None:
    server = Server("slow")
    try:
        async def main() -> list[str | None]:
            async with server.aclient() as client:
                results: list[str | None] = [None] * 32

                async def one(i: int) -> None:
                    out = await client.chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
                    results[i] = out.choices[0].message.content

                async with anyio.create_task_group() as tg:
                    for i in range(32):
                        tg.start_soon(one, i)
                return results

        started = time.monotonic()
        results = anyio.run(main)
        elapsed = time.monotonic() - started
        assert results == [ANSWER] * 32
        assert elapsed < 8, f"32 runs of 2 x 0.4 s took {elapsed:.1f}s: they did not run concurrently"
        metrics = httpx.get(f"{server.root}/metrics").text
        assert 'pacore_runs_total{outcome="ok"} 32.0' in metrics
        assert "pacore_client_disconnects_total 0.0" in metrics
    finally:
        assert server.stop() == 0


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    assert "Traceback" not in response.text
    return dict(body["error"])


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "pacore-low"}, 400, "messages"),
    ({"model": "pacore-low", "messages": []}, 400, "messages"),
    ({"model": "pacore-low", "messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ({"model": "pacore-low", "messages": PROBLEM, "temperature": -1}, 400, "temperature"),
    ({"model": "pacore-low", "messages": PROBLEM, "n": 0}, 400, "n"),
    ({"model": "pacore-low", "messages": PROBLEM, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "pacore-low", "messages": PROBLEM, "pacore": {"widht": [2]}}, 400, "pacore.widht"),
    ({"model": "pacore-low", "messages": PROBLEM, "pacore": {"widths": [0]}}, 400, "pacore.widths"),
    ({"model": "pacore-low", "messages": PROBLEM, "pacore": {"order": "random"}}, 400, "pacore.order"),
    ({"model": "ring", "messages": PROBLEM, "pacore": {"params": {"width": "x"}}}, 400, "pacore.params"),
    ({"model": "ring", "messages": PROBLEM, "pacore": {"widths": [2]}}, 400, "pacore.widths"),
    ({"model": "pacore-low", "messages": PROBLEM, "tools": [{"type": "function"}]}, 400, None),
    ({"model": "no-such-topology", "messages": PROBLEM}, 404, "model"),
])
def test_bad_requests_are_openai_errors_naming_the_field(answer_server: Server, body: dict[str, Any],
                                                          status: int, param: str | None) -> None:
    response = httpx.post(f"{answer_server.url}/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = _error(response)
    assert error["param"] == param
    if param:
        assert param.split(".")[-1] in error["message"]


def test_invalid_json_unknown_trace_and_unknown_route(answer_server: Server) -> None:
    response = httpx.post(f"{answer_server.url}/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in _error(response)["message"]
    assert httpx.get(f"{answer_server.url}/pacore/traces/chatcmpl-nope").status_code == 404
    assert _error(httpx.get(f"{answer_server.root}/v2/nothing"))["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as caught:
        answer_server.client().chat.completions.create(model="pacore-low", messages=PROBLEM, temperature=5)  # type: ignore[arg-type]
    assert caught.value.param == "temperature"


def test_api_key_is_required_compared_and_never_logged() -> None:
    key = "pk-test-7c1e9d2b4a"
    server = Server("answer", "-v", env={"PACORE_API_KEY": key})
    try:
        with pytest.raises(openai.AuthenticationError):
            server.client().models.list()
        with pytest.raises(openai.AuthenticationError):
            server.client(key="pk-wrong").chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
        assert httpx.post(f"{server.url}/chat/completions", json={}).status_code == 401
        out = server.client(key=key).chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
        assert out.choices[0].message.content == ANSWER
        assert httpx.get(f"{server.url}/pacore/traces/{out.id}").status_code == 401
        assert httpx.get(f"{server.root}/health").status_code == 200
    finally:
        assert server.stop() == 0
    assert "chat completion" in server.output()  # -v logs requests ...
    assert key not in server.output()  # ... but never the key


def test_engine_failure_is_a_500_and_the_server_stays_healthy() -> None:
    server = Server("broken")
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            server.client().chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
        assert "server said no" in caught.value.message and "Traceback" not in caught.value.message
        chunks = server.client().chat.completions.create(model="pacore-low", messages=PROBLEM, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError, match="server said no"):
            list(chunks)
        assert httpx.get(f"{server.root}/health").json()["status"] == "ready"
    finally:
        assert server.stop() == 0


def test_request_timeout_is_a_504_that_cancels_the_run() -> None:
    server = Server("forever", "--timeout", "0.5")
    try:
        response = httpx.post(f"{server.url}/chat/completions", json={"model": "pacore-low", "messages": PROBLEM},
                              timeout=10)
        assert response.status_code == 504 and _error(response)["code"] == "timeout"
        metrics = httpx.get(f"{server.root}/metrics").text
        assert "pacore_engine_sequences_in_flight 0.0" in metrics and "pacore_runs_in_flight 0.0" in metrics
    finally:
        assert server.stop() == 0


def _post_in_thread(url: str, results: list[httpx.Response]) -> threading.Thread:
    def post() -> None:
        try:
            results.append(httpx.post(f"{url}/chat/completions", json={"model": "pacore-low", "messages": PROBLEM},
                                      timeout=30))
        except httpx.HTTPError as exc:  # reported by _wait_for_run / the assertions
            results.append(httpx.Response(599, text=repr(exc)))

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _wait_for_run(server: Server, thread: threading.Thread, results: list[httpx.Response]) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.root}/health").json()["runs_in_flight"] == 0:
        assert thread.is_alive(), f"the request ended before a run was seen: {results[0].text}"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_sigterm_refuses_new_requests_and_lets_the_run_in_flight_finish() -> None:
    server = Server("slow", env={"PACORE_TEST_DELAY": "1.5"})
    children = psutil.Process(server.proc.pid).children(recursive=True)
    results: list[httpx.Response] = []
    thread = _post_in_thread(server.url, results)
    _wait_for_run(server, thread, results)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    refused = httpx.post(f"{server.url}/chat/completions", json={"model": "pacore-low", "messages": PROBLEM})
    assert refused.status_code == 503 and _error(refused)["code"] == "engine_draining"
    thread.join(30)
    assert results[0].status_code == 200 and results[0].json()["choices"][0]["message"]["content"] == ANSWER
    assert server.stop() == 0
    assert not [c for c in children if c.is_running()]


def test_sigterm_aborts_runs_that_outlive_the_drain_timeout() -> None:
    server = Server("forever", "--drain-timeout", "1")
    results: list[httpx.Response] = []
    thread = _post_in_thread(server.url, results)
    _wait_for_run(server, thread, results)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert results[0].status_code == 503 and _error(results[0])["code"] == "aborted"
    assert 0.9 < time.monotonic() - started < 10
    assert server.proc.wait(20) == 0
    assert server.stop() == 0


def test_bad_flags_exit_2_with_one_line() -> None:
    for flags, needle in [(["--topology", "no-such-topology"], "unknown topology"),
                          (["--engine", "nope"], "unknown engine"),
                          (["--port", "99999"], "--port"),
                          (["--timeout", "0"], "--timeout"),
                          (["--engine", "function:tests.fixtures.handlers:answer", "--model", "x"], "--model")]:
        proc = subprocess.run([sys.executable, "-m", "pacore_agents", "serve", *flags], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_the_openai_engine_streams_from_an_openai_server(answer_server: Server) -> None:
    """``OpenAIEngine.generate_stream`` against a real streaming server (this one): progress
    chunks are skipped, the deltas add up to the content, usage comes from the final chunk."""
    from pacore_agents import GenerationRequest
    from pacore_agents._messages import ChatMessage
    from pacore_agents.engines import create_engine

    async def main() -> tuple[list[str], Any]:
        engine = create_engine({"kind": "openai", "base_urls": [answer_server.url], "model": "pacore-low"})
        deltas: list[str] = []
        async with engine:
            out = await engine.generate_stream(
                GenerationRequest(messages=(ChatMessage(role="user", content=PROBLEM[0]["content"]),)),
                deltas.append)
        return deltas, out[0]

    deltas, completion = anyio.run(main)
    assert "".join(deltas) == completion.content == ANSWER
    assert completion.reasoning == "add pairs"
    assert completion.usage.completion_tokens == 45 and completion.notes["streamed"] is True


def test_keep_alive_responses_are_not_delayed_by_nagle(answer_server: Server) -> None:
    """The listening socket is IPPROTO_TCP, so asyncio sets TCP_NODELAY on its connections:
    without it every response on a kept-alive connection waits ~40 ms for a delayed ACK."""
    with httpx.Client() as client:
        client.get(f"{answer_server.root}/health")
        times = []
        for _ in range(9):
            started = time.perf_counter()
            client.get(f"{answer_server.root}/health")
            times.append(time.perf_counter() - started)
    assert sorted(times)[4] < 0.03, times
