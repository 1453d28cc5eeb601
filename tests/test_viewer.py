"""The viewer's data side without a browser: what PATH holds, read-only access (a study being
written is never blocked nor changed), the same figures as the report, safe embedding of hostile
text in the exported file, the API's key and headers, and the CLI's errors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pacore_agents import ConfigError
from pacore_agents.studies import ResultStore, build_report
from pacore_agents.viewer import ViewSource, check_exposure, create_app, embed_json, export_html
from tests._viewer_fixtures import HOSTILE, make_study, make_trace


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("viewer-data")
    make_trace(tmp / "trace.json")
    make_study(tmp / "study")
    return tmp


def test_kinds_and_bad_paths(data: Path, tmp_path: Path) -> None:
    assert ViewSource(data / "trace.json").kind == "trace"
    assert ViewSource(data / "study").kind == "study"
    assert ViewSource(tmp_path).kind == "trace-dir"
    with pytest.raises(ConfigError, match="does not exist"):
        ViewSource(tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        ViewSource(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="is not a pacore trace"):
        ViewSource(tmp_path / "other.json")
    # in a trace dir a bad file is listed with its reason, never fatal; temp files are skipped
    (tmp_path / ".x.json.1.tmp").write_text("{")
    listed = ViewSource(tmp_path).traces()
    assert [(t["name"], "error" in t and bool(t["error"])) for t in listed] == [("bad.json", True), ("other.json", True)]
    with pytest.raises(ConfigError, match="no trace"):
        ViewSource(tmp_path).trace("../trace.json")


def test_trace_view(data: Path) -> None:
    view = ViewSource(data / "trace.json").trace("trace.json")
    trace = view["trace"]
    assert [n["id"] for n in trace["nodes"]][-1] == trace["sink"] == "r3.a0"
    assert {n["status"] for n in trace["nodes"]} == {"ok"} and view["graded"] is False
    assert [r["round"] for r in view["rounds"]] == [1, 2, 3]
    r1 = view["rounds"][0]
    assert r1["accuracy"] is None and r1["consensus"] == pytest.approx(0.5)  # answers 7, 8, 7, 8
    assert r1["tokens"] == sum(n["usage"]["completion_tokens"] for n in trace["nodes"] if n["round"] == 1)


def test_study_view_is_the_report(data: Path) -> None:
    view = ViewSource(data / "study").study()
    report = build_report(data / "study", csv_files=False, plots=False)
    assert view["arms"] == [m.model_dump(mode="json") for m in report.metrics]
    assert view["pairs"] == [p.model_dump(mode="json") for p in report.pairs]
    assert view["scaling"]["swept"] and [ln["label"] for ln in view["scaling"]["lines"]] == [
        "w", "sc: self-consistency at the matched budgets"]
    assert [p["label"] for p in view["scaling"]["lines"][0]["points"]] == ["w4", "w2"] or \
        [p["label"] for p in view["scaling"]["lines"][0]["points"]] == ["w2", "w4"]
    assert len(view["problems"]) == 6 and set(view["problems"][0]["cells"]) == {"single", "sc", "w2", "w4"}
    failed = sum(c["failed"] for row in view["problems"] for c in row["cells"].values())
    assert failed == sum(r["failed"] for m in view["arms"] if m["kind"] == "topology" for r in m["rounds"])
    run = ViewSource(data / "study").run("w4", "arith-0", 0)
    assert run["graded"] and {n["grade"] for n in run["trace"]["nodes"]} <= {"correct", "wrong", "failed"}
    sc = ViewSource(data / "study").run("sc", "arith-0", 0)  # a baseline: trajectories, no sink
    assert sc["trace"]["sink"] is None and len(sc["trace"]["nodes"]) == 5


def test_study_is_read_only_and_never_blocked(data: Path, tmp_path: Path) -> None:
    """A writer holding the store's write lock does not block the viewer, and viewing writes nothing."""
    db = data / "study" / "results.sqlite"
    before = db.read_bytes()
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM results WHERE arm = 'single'")  # uncommitted: never seen
        source = ViewSource(data / "study")
        assert source.study()["samples"] == 24 and source.version().startswith("24:")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert db.read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no study"):
        ResultStore.open_readonly(tmp_path / "empty")
    assert not (tmp_path / "empty" / "results.sqlite").exists()  # opening read-only created nothing


@pytest.mark.parametrize("text", [HOSTILE, "</script><script>alert(1)</script>", "<!-- x", "a\u2028b\u2029c", "&amp;"])
def test_embed_json_cannot_close_its_script(text: str) -> None:
    out = embed_json({"t": text, "k": [text]})
    assert "<" not in out and ">" not in out and "&" not in out and "\u2028" not in out
    assert json.loads(out) == {"t": text, "k": [text]}


def test_export_is_self_contained_with_a_strict_csp(data: Path, tmp_path: Path) -> None:
    html = export_html(ViewSource(data / "study"), tmp_path / "s.html").read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None and "default-src 'none'" in csp.group(1) and "unsafe" not in csp.group(1)
    assert "connect-src" not in csp.group(1) and "http" not in csp.group(1)
    scripts = re.findall(r"<script>(.*?)</script>\n", html, flags=re.S)
    assert len(scripts) == 2  # the graph library and the viewer, each allowed by its hash
    for s in scripts:
        digest = base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp.group(1)
    block = re.search(r'<script type="application/json" id="pacore-data">(.*?)</script>', html, flags=re.S)
    assert block is not None and "<" not in block.group(1)
    bundle = json.loads(block.group(1))
    assert len(bundle["runs"]) == 24 and bundle["study"]["name"] == "viewer-fixture </script>"
    assert HOSTILE not in html  # every copy of the hostile text is escaped
    assert not re.search(r"src=[\"']?https?:|href=[\"']?https?:", html)
    with pytest.raises(ConfigError, match=r"must end in \.html"):
        export_html(ViewSource(data / "study"), tmp_path / "s.txt")


def test_api_key_headers_and_errors(data: Path) -> None:
    client = TestClient(create_app(ViewSource(data / "trace.json"), SecretStr("view-key-123")))
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/vendor/cytoscape.min.js").status_code == 200
    assert client.get("/api/source").status_code == 401
    assert client.get("/api/source", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer view-key-123"}
    assert client.get("/api/source", headers=auth).json()["kind"] == "trace"
    assert client.get("/api/trace", params={"name": "trace.json"}, headers=auth).json()["trace"]["sink"] == "r3.a0"
    missing = client.get("/api/trace", params={"name": "../../etc/passwd"}, headers=auth)
    assert missing.status_code == 404 and "no trace" in missing.json()["error"]["message"]
    assert client.get("/api/study", headers=auth).status_code == 404
    assert client.get("/static/../_app.py").status_code == 404


def test_exposure_needs_a_key() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("localhost", None)
    with pytest.raises(ConfigError, match="--api-key"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", SecretStr("k"))


def test_cli_errors_and_export(data: Path, tmp_path: Path) -> None:
    def pacore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pacore_agents", "view", *args], capture_output=True,
                              text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(Path.cwd())})

    bad = pacore(str(tmp_path / "nope[red]"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope[red] does not exist" in bad.stderr
    exposed = pacore(str(data / "trace.json"), "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "--api-key" in exposed.stderr
    done = pacore(str(data / "trace.json"), "--export", str(tmp_path / "t.html"))
    assert done.returncode == 0 and (tmp_path / "t.html").stat().st_size > 400_000
