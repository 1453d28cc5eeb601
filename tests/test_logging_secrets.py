"""Logs: secrets redacted in every record (ours and other libraries'), transport lines kept out of
``--log-json`` by default, context bound with contextvars, a library silent until configured, and
vLLM's logger owned by ``configure_logging``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pacore_agents import ChatMessage, GenerationRequest, ProblemId, RequestMetadata
from pacore_agents._logging import (
    bind_context,
    configure_logging,
    get_logger,
    redact,
    register_secret,
)
from pacore_agents.engines._openai import OpenAIEngine
from pacore_agents.studies import ResultStore, parse_study
from pacore_agents.studies._store import SECRETS_NOTE, redact_spec_text
from tests._fake_servers import FakeServer

PASSWORD = "SECRETPW-7f3a91"
API_KEY = "plain-key-no-known-shape-42a7c9"  # only registration can find this one


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging()  # back to the suite's default (closes the JSON file handler)


def _req() -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage(role="user", content="what is 2+3?"),),
                             metadata=RequestMetadata(problem_id=ProblemId("p")))


async def _talk_to_server(server: FakeServer) -> str:
    """A real OpenAIEngine with a password in its base URL and an API key: probe + one chat."""
    url = f"http://user:{PASSWORD}@127.0.0.1:{server.port}/v1"
    async with OpenAIEngine(url, api_key=API_KEY) as engine:
        await engine.generate(_req())
    return url


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.anyio
async def test_secrets_never_reach_stderr_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_path = tmp_path / "log.jsonl"
    configure_logging(verbose=True, json_path=log_path, transport=True)
    with FakeServer() as server:
        url = await _talk_to_server(server)
        # the worst cases: a foreign warning and one of our own events carrying the secrets
        logging.getLogger("httpx9").warning("GET %s failed (api_key=%s)", url, API_KEY)
        get_logger("pacore_agents.test").warning(
            "oops", url=url, headers={"Authorization": f"Bearer {API_KEY}"}, keys=[API_KEY])
        try:
            raise RuntimeError(f"cannot reach {url} with key {API_KEY}")
        except RuntimeError:
            get_logger("pacore_agents.test").exception("failed")
    assert len(server.chat_requests) == 1
    err = capsys.readouterr().err
    text = log_path.read_text(encoding="utf-8")
    for secret in (PASSWORD, API_KEY):
        assert secret not in err and secret not in text
    # the transport lines were logged (so redaction, not luck, removed the secrets)
    assert f"http://***@127.0.0.1:{server.port}/v1/chat/completions" in text
    assert "oops" in err and "Traceback" in err and f"http://***@127.0.0.1:{server.port}" in err


@pytest.mark.anyio
async def test_transport_lines_stay_out_of_log_json_by_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quiet, loud = tmp_path / "quiet.jsonl", tmp_path / "loud.jsonl"
    with FakeServer() as server:
        configure_logging(verbose=True, json_path=quiet)
        await _talk_to_server(server)
        configure_logging(verbose=True, json_path=loud, transport=True)
        await _talk_to_server(server)
    ours = {r["event"] for r in _records(quiet)}
    assert {r["logger"].split(".")[0] for r in _records(quiet)} == {"pacore_agents"}
    assert {"model found", "chat request"} <= ours
    foreign = [r for r in _records(loud) if not r["logger"].startswith("pacore_agents")]
    assert len(foreign) > 10  # httpx/httpcore/openai debug lines, only when asked for
    assert "HTTP Request" not in capsys.readouterr().err  # -v shows our info, not the transport's


def test_redact_patterns() -> None:
    register_secret("p@ss word!")
    cases = {
        "GET https://bob:hunter2@example.com/v1/models": "GET https://***@example.com/v1/models",
        "Authorization: Bearer abc.def-123": "Authorization: ***",
        "[(b'authorization', b'Basic dXNlcjpwYXNz')]": "[(b'authorization', b'***')]",
        "token is Bearer abcdef": "token is Bearer ***",
        'payload {"api_key": "k-123", "model": "m"}': 'payload {"api_key": "***", "model": "m"}',
        "api_key=k-123&x=1": "api_key=***&x=1",
        "key sk-proj-AbCdEf0123456789xyz used": "key sk-*** used",
        "password p@ss word! and p%40ss%20word%21": "password *** and ***",
        "max_tokens=32 prompt_tokens: 5 sk-short": "max_tokens=32 prompt_tokens: 5 sk-short",
    }
    for raw, want in cases.items():
        assert redact(raw) == want, raw
    register_secret(None)
    register_secret("EMPTY")  # the placeholder key is not a secret
    assert redact("EMPTY") == "EMPTY"


@pytest.mark.anyio
async def test_bound_context_reaches_events_in_child_tasks(tmp_path: Path) -> None:
    log_path = tmp_path / "log.jsonl"
    configure_logging(json_path=log_path)
    log = get_logger("pacore_agents.test")

    async def node(i: int) -> None:
        with bind_context(node=f"r1.a{i}"):
            log.warning("node failed")

    with bind_context(problem="p7", arm="ring", sample=2):
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(node, i)
        logging.getLogger("somelib").warning("foreign")
    log.warning("after")
    records = {(r["event"], r.get("node")): r for r in _records(log_path)}
    for i in range(2):
        r = records[("node failed", f"r1.a{i}")]
        assert (r["problem"], r["arm"], r["sample"]) == ("p7", "ring", 2)
    assert records[("foreign", None)]["problem"] == "p7"
    assert "problem" not in records[("after", None)]


def test_library_is_silent_until_configured() -> None:
    code = ("from pacore_agents._logging import get_logger\n"
            "get_logger('pacore_agents.x').warning('boom', detail=1)\n"
            "get_logger('pacore_agents.x').error('bang')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize(("verbose", "level"), [(False, "ERROR"), (True, "INFO")])
def test_configure_logging_owns_vllm_logging(monkeypatch: pytest.MonkeyPatch, verbose: bool, level: str) -> None:
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_STREAM", raising=False)
    configure_logging(verbose=verbose)
    assert os.environ["VLLM_LOGGING_LEVEL"] == level  # for vLLM's import and its engine processes
    assert os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"  # stdout carries answers only
    assert logging.getLogger("vllm").level == logging.getLevelName(level)  # vLLM already imported
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "warning")  # the user's choice wins
    configure_logging(verbose=verbose)
    assert logging.getLogger("vllm").level == logging.WARNING


STUDY = """# a study against a password-protected endpoint
name = "remote"
[dataset]
name = "gsm8k"
limit = 2
[engine]
kind = "openai"
model = "m"
api_key = "{key}"
base_urls = ["http://user:{pw}@127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
[[arms]]
name = "low"
topology = "pacore-low"
"""


def test_study_copy_and_store_hold_no_secret_and_the_study_resumes(tmp_path: Path) -> None:
    text = STUDY.format(key=API_KEY, pw=PASSWORD)
    spec = parse_study(text)
    ResultStore.open(tmp_path, spec, text).close()
    saved = (tmp_path / "study.toml").read_text(encoding="utf-8")
    for path in tmp_path.iterdir():  # study.toml, the SQLite store and its journal files
        data = path.read_bytes()
        assert API_KEY.encode() not in data and PASSWORD.encode() not in data, path.name
    assert saved == SECRETS_NOTE + STUDY.format(key="***", pw="").replace("user:@", "***@")
    again = parse_study(saved)  # the copy is still a valid spec, with the same fingerprint
    assert again.fingerprint() == spec.fingerprint()
    ResultStore.open(tmp_path, again, saved).close()  # resumes with the copy...
    other = parse_study(STUDY.format(key="another-key", pw="other"))
    ResultStore.open(tmp_path, other, "x").close()  # ...or with new credentials


def test_spec_text_without_secrets_is_kept_verbatim() -> None:
    text = STUDY.replace('api_key = "{key}"\n', "").replace("user:{pw}@", "")
    assert redact_spec_text(text) == text
    escaped = STUDY.replace('"{key}"', '"""{key}"""').format(key="\\u0041" + API_KEY[1:], pw=PASSWORD)
    assert parse_study(escaped).engine.api_key.get_secret_value() == "A" + API_KEY[1:]  # type: ignore[union-attr]
    out = redact_spec_text(escaped)  # a spelling neither the regex nor a replace can see
    assert API_KEY[1:] not in out and PASSWORD not in out and "# (redacted)" in out
    assert redact_spec_text(STUDY.format(key="\\u0041" + API_KEY[1:], pw="p")).count("***") == 3  # the note, the key, the URL
