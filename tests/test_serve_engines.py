"""``pacore serve`` with several engines (issue 19): roles bound to named engines, ``/v1/models``
lists the engines each topology needs, ``/metrics`` counts tokens per engine, a named engine
that does not start makes the server answer 503 naming it; ``--engines FILE`` on the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest

from pacore_agents import ConfigError, EngineError, FunctionEngine, GenerationRequest, RoleOverride
from pacore_agents.serve import ServeSettings, bind, create_app, serve
from tests.test_serve import PROBLEM, Server
from tests.test_serve_units import _until

BIG_SINK = {"sink": RoleOverride(engine="big")}


def _engine(name: str) -> FunctionEngine:
    def answer(request: GenerationRequest) -> list[str]:
        return [f"{name} says \\boxed{{5050}}"] * request.n

    return FunctionEngine(answer, name=name)


def _tokens(metrics: str, engine: str, kind: str) -> float:
    found = re.search(rf'pacore_engine_tokens_total{{engine="{engine}",kind="{kind}"}} ([0-9.e+]+)', metrics)
    return float(found.group(1)) if found else 0.0


@pytest.mark.anyio
async def test_a_server_with_two_engines() -> None:
    small, big = _engine("small"), _engine("big")
    settings = ServeSettings(topologies=["critic-ring"])
    app = create_app(small, settings, engines={"big": big}, bindings=BIG_SINK)
    sock = bind("127.0.0.1", 0)
    stop = anyio.Event()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(small, settings, sock, stop=stop, app=app))
        await _until(lambda: app.state.pacore.status == "ready")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
            done = await client.post("/v1/chat/completions", json={"model": "pacore-low", "messages": PROBLEM})
            metrics = (await client.get("/metrics")).text
            health = (await client.get("/health")).json()
        stop.set()
    assert cards["pacore-low"]["engines"] == ["big", "default"]
    assert cards["critic-ring"]["engines"] == ["big", "default"]
    body = done.json()
    assert done.status_code == 200 and body["choices"][0]["message"]["content"] == "big says \\boxed{5050}"
    assert _tokens(metrics, "big", "completion") == 3 and _tokens(metrics, "default", "completion") == 12
    assert health["engines"] == {"big": "answer"}


def test_a_binding_to_an_engine_the_server_lacks_is_refused() -> None:
    with pytest.raises(ConfigError, match="a role runs on engine 'huge', which the server does not have"):
        create_app(_engine("small"), ServeSettings(), engines={"big": _engine("big")},
                   bindings={"sink": RoleOverride(engine="huge")})


class NoStart(FunctionEngine):
    async def start(self) -> None:
        raise EngineError("no server at http://127.0.0.1:9/v1")


@pytest.mark.anyio
async def test_a_named_engine_that_does_not_start_is_named_in_the_503() -> None:
    small = _engine("small")
    settings = ServeSettings()
    app = create_app(small, settings, engines={"big": NoStart(lambda r: ["x"] * r.n)}, bindings=BIG_SINK)
    await app.state.pacore.start_engine()
    code, health = app.state.pacore.health()
    assert code == 503 and health["error"] == "engine 'big': EngineError: no server at http://127.0.0.1:9/v1"


def test_pacore_serve_engines_file(tmp_path: Path) -> None:
    engines = tmp_path / "engines.toml"
    engines.write_text('[engines.big]\nkind = "function"\nfunction = "tests.fixtures.handlers:sampling_echo"\n'
                       '[roles]\nsink = "big"\n', encoding="utf-8")
    server = Server("answer", "--engines", str(engines))
    try:
        cards = {c.id: c for c in server.client().models.list().data}
        done = server.client().chat.completions.create(model="pacore-low", messages=PROBLEM)  # type: ignore[arg-type]
    finally:
        assert server.stop() == 0
    assert cards["pacore-low"].model_extra is not None and cards["pacore-low"].model_extra["engines"] == ["big", "default"]
    assert (done.choices[0].message.content or "").startswith("system=None")
