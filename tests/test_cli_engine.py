"""Engine flags of ``pacore run`` and ``pacore study run``: one-line errors (exit 2), retries and
timeouts, the engine window, remote seeds, study overrides, and engines that cannot start."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pacore_agents.cli import app
from tests._fake_servers import FakeServer

ENGINE = "function:tests.fixtures.handlers:answer"

STUDY = """
name = "flags"
[dataset]
name = "gsm8k"
limit = 1
[engine]
model = "/no/such/dir"
[sampling]
max_tokens = 8
[[arms]]
name = "single"
baseline = "single"
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def dead_url(credentials: str = "") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{credentials}127.0.0.1:{port}/v1"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return path


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:port/v1", "the port must be a number"),
    ("http://user:hunter2@127.0.0.1:99999/v1", "the port must be between 1 and 65535"),
    ("ftp://127.0.0.1:8000/v1", "write it as http://HOST:PORT/v1"),
])
def test_bad_base_urls_exit_2_with_one_line(url: str, says: str, study: Path, tmp_path: Path) -> None:
    run = invoke("run", "Q?", "--engine", "openai", "--base-url", url, "-q")
    assert_one_line_error(run, 2, says)
    assert "hunter2" not in run.stderr
    out = tmp_path / "out"
    study_run = invoke("study", "run", str(study), "--out", str(out), "--engine", "openai", "--base-url", url)
    assert_one_line_error(study_run, 2, says)
    assert not out.exists()


def test_engines_that_cannot_start_exit_2_with_one_line(study: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke("run", "Q?", "--model", "/no/such/dir", "-q"), 2, "/no/such/dir")
    assert_one_line_error(invoke("run", "Q?", "--engine", "function:no_such_module_here:f", "-q"), 2,
                          "cannot be imported")
    out = tmp_path / "out"
    assert_one_line_error(invoke("study", "run", str(study), "--out", str(out)), 2, "/no/such/dir")
    assert_one_line_error(invoke("study", "run", str(study), "--out", str(out), "--engine",
                                 "function:no_such_module_here:f"), 2, "cannot be imported")


def test_flags_that_do_not_apply_to_the_engine_kind_are_errors() -> None:
    assert_one_line_error(invoke("run", "Q?", "--engine", ENGINE, "--dtype", "float32"), 2,
                          "--dtype applies to --engine vllm, not function")
    assert_one_line_error(invoke("run", "Q?", "--base-url", "http://127.0.0.1:8000/v1"), 2,
                          "--base-url applies to --engine openai, not vllm")
    assert_one_line_error(invoke("run", "Q?", "--engine", "openai"), 2, "needs --base-url")
    assert_one_line_error(invoke("run", "Q?", "--engine", "gpt"), 2, "unknown engine 'gpt'")
    assert_one_line_error(invoke("run", "Q?", "--engine", ENGINE, "--request-timeout", "0"), 2,
                          "--request-timeout")


def test_retries_timeout_and_window_reach_the_run(tmp_path: Path) -> None:
    trace_path = tmp_path / "t.json"
    result = invoke("run", "Q?", "--engine", ENGINE, "-q", "--retries", "3", "--request-timeout", "7",
                    "--max-sequences", "5", "--trace", str(trace_path))
    assert result.exit_code == 0, result.stderr
    trace = json.loads(trace_path.read_text())
    assert trace["config"]["retry"]["max_attempts"] == 3 and trace["config"]["retry"]["timeout"] == 7.0
    assert trace["engine"]["max_sequences"] == 5


def test_study_engine_flags_override_the_spec(study: Path, tmp_path: Path) -> None:
    study.write_text(STUDY.replace('baseline = "single"', "widths = [2]"))
    out = tmp_path / "out"
    result = invoke("study", "run", str(study), "--out", str(out), "--engine", ENGINE, "--max-sequences", "3",
                    "--no-progress", "--no-report")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    from pacore_agents.studies._store import ResultStore

    store = ResultStore.open(out)
    try:
        (outcome,) = store.outcomes()
        trace = store.trace_json(outcome.arm, outcome.problem_id, outcome.sample)
    finally:
        store.close()
    assert trace is not None and trace["engine"]["name"] == f"function:{ENGINE.removeprefix('function:')}"
    assert trace["engine"]["max_sequences"] == 3


@pytest.mark.parametrize("flag", [None, "--seed-requests"])
def test_remote_seeds_only_when_asked(flag: str | None, tmp_path: Path) -> None:
    trace_path = tmp_path / "t.json"
    with FakeServer() as server:
        args = ["run", "Q?", "--engine", "openai", "--base-url", server.url, "-q", "--max-tokens", "8",
                "--trace", str(trace_path)]
        result = invoke(*args, *([flag] if flag else []))
    assert result.exit_code == 0, result.stderr
    bodies = [r.body for r in server.chat_requests]
    assert bodies and all(b is not None for b in bodies)
    seeded = [b is not None and "seed" in b for b in bodies]
    assert all(seeded) if flag else not any(seeded)
    assert json.loads(trace_path.read_text())["engine"]["details"]["seeded"] is bool(flag)


def test_a_dead_second_endpoint_fails_the_start_naming_it_without_credentials() -> None:
    dead = dead_url("user:hunter2@")
    with FakeServer() as ok:
        result = invoke("run", "Q?", "--engine", "openai", "--base-url", ok.url, "--base-url", dead,
                        "--retries", "1", "-q")
        assert not ok.chat_requests  # found at start, before any work
    assert_one_line_error(result, 1, dead.replace("user:hunter2@", ""), "listing models failed")
    assert "hunter2" not in result.stderr


def test_flags_lay_over_a_study_engine_table() -> None:
    from pacore_agents._wrappers import RetryPolicy
    from pacore_agents.cli._engine_flags import EngineFlags
    from pacore_agents.engines import FunctionOptions, OpenAIOptions, VLLMOptions

    table = {"kind": "openai", "base_urls": ["http://127.0.0.1:8000/v1"], "model": "m", "use_n": False}
    same_kind = EngineFlags(model="other", seed_requests=True, request_timeout=30).options(table)
    assert isinstance(same_kind, OpenAIOptions) and same_kind.base_urls == table["base_urls"]
    assert (same_kind.model, same_kind.use_n, same_kind.seed_requests, same_kind.request_timeout) == (
        "other", False, True, 30)
    assert EngineFlags().options(table) == OpenAIOptions.model_validate(table)  # no flag: the table
    switched = EngineFlags(engine="vllm", max_sequences=8).options(table)  # another kind: afresh
    assert switched == VLLMOptions(max_sequences=8)
    function = EngineFlags(engine="function").options({"kind": "function", "function": "m:f"})
    assert function == FunctionOptions(kind="function", function="m:f")
    policy = EngineFlags(retries=2, request_timeout=5).retry(RetryPolicy(max_attempts=9, initial_backoff=0.1))
    assert policy == RetryPolicy(max_attempts=2, initial_backoff=0.1, timeout=5)
    assert EngineFlags(model="x").retry() == RetryPolicy()


def test_exception_groups_reaching_the_clis_become_one_line(monkeypatch: pytest.MonkeyPatch, study: Path,
                                                            tmp_path: Path) -> None:
    """Whatever a task group wraps, the user sees its one error: bad input exits 2, others 1."""
    import pacore_agents._run as run_module
    import pacore_agents.studies as studies
    from pacore_agents import ConfigError, EngineError

    async def bad_run(*args: object, **kwargs: object) -> None:
        raise ExceptionGroup("tg", [ExceptionGroup("inner", [ConfigError("the model has no tokenizer")])])

    async def failing_study(*args: object, **kwargs: object) -> None:
        raise ExceptionGroup("tg", [RuntimeError("noise"), EngineError("server gone")])

    monkeypatch.setattr(run_module, "run", bad_run)  # the command imports it when it runs
    assert_one_line_error(invoke("run", "Q?", "--engine", ENGINE, "-q"), 2, "the model has no tokenizer")
    monkeypatch.setattr(studies, "run_study", failing_study)
    assert_one_line_error(invoke("study", "run", str(study), "--out", str(tmp_path / "o"), "--engine", ENGINE),
                          1, "server gone")


def test_the_three_commands_take_the_same_engine_flags() -> None:
    """``with_engine_flags`` gives each command the flags from one table; ``pacore serve`` names
    the engine's key ``--engine-api-key`` (its ``--api-key`` is the key clients must send)."""
    import typer.main

    from pacore_agents.cli import study_app

    def engine_options(command_app: typer.Typer, name: str) -> set[str]:
        group = typer.main.get_command(command_app)
        command = group.commands[name]  # type: ignore[attr-defined]
        return {opt for param in command.params if getattr(param, "rich_help_panel", None) == "Engine"
                for opt in param.opts if opt.startswith("--")}

    run_flags = engine_options(app, "run")
    assert "--base-url" in run_flags and "--seed-requests" in run_flags and len(run_flags) == 13
    assert engine_options(study_app, "run") == run_flags
    assert engine_options(app, "serve") == run_flags - {"--api-key"} | {"--engine-api-key"}


def test_serve_passes_the_engine_key_to_the_engine_not_the_clients_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from pacore_agents.cli import _engine_flags as _cli_engine

    seen: list[_cli_engine.EngineFlags] = []

    def options(self: _cli_engine.EngineFlags, base: object = None) -> object:
        seen.append(self)
        raise _cli_engine.ConfigError("stop here")

    monkeypatch.setattr(_cli_engine.EngineFlags, "options", options)
    result = invoke("serve", "--api-key", "client-key", "--engine", "openai", "--base-url",
                    "http://127.0.0.1:9/v1", "--engine-api-key", "engine-key")
    assert_one_line_error(result, 2, "stop here")
    assert [(f.engine, f.api_key, f.base_url) for f in seen] == [("openai", "engine-key", ["http://127.0.0.1:9/v1"])]


def test_an_engine_flag_a_command_renames_is_named_as_that_command_spells_it() -> None:
    """``pacore serve``'s ``--api-key`` is the clients' key: an error about the engine's key must
    name ``--engine-api-key``, the flag the user gave."""
    # distinct keys: serve registers its keys as secrets for the rest of the process's logs
    result = invoke("serve", "--engine-api-key", "renamed-flag-key", "--port", "0")
    assert_one_line_error(result, 2, "--engine-api-key applies to --engine openai, not vllm")
    assert_one_line_error(invoke("run", "Q?", "--api-key", "renamed-flag-key"), 2,
                          "--api-key applies to --engine openai")
