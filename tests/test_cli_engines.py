"""``pacore run --engines FILE`` (issue 19): more engines for one run, bound to roles; bad files
are one line that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import ENGINE, pacore

FILE = """[engines.big]
kind = "function"
function = "tests.fixtures.handlers:sampling_echo"

[roles]
sink = "big"
"""


def test_run_binds_the_sink_to_the_engines_file_engine(tmp_path: Path) -> None:
    engines = tmp_path / "engines.toml"
    engines.write_text(FILE, encoding="utf-8")
    trace_path = tmp_path / "trace.json"
    proc = pacore("run", "What is 2 + 2?", "--engine", ENGINE, "--engines", str(engines), "--trace", str(trace_path),
                  "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("system=None temperature=1.0")  # the sink's answer came from big
    trace = json.loads(trace_path.read_text())
    assert {n["id"]: n["engine"] for n in trace["nodes"]} == {
        "r1.a0": "default", "r1.a1": "default", "r1.a2": "default", "r1.a3": "default", "r2.a0": "big"}
    assert set(trace["tokens"]) == {"default", "big"}
    assert "engine big (sampling_echo): completion tokens sink" in proc.stderr


def test_a_bad_engines_file_is_one_line(tmp_path: Path) -> None:
    engines = tmp_path / "engines[x].toml"
    engines.write_text(FILE.replace('sink = "big"', 'sink = "huge"'), encoding="utf-8")
    proc = pacore("run", "Q?", "--engine", ENGINE, "--engines", str(engines), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: engines file {engines}: role 'sink' = 'huge' names no engine of the file (engines: default, big)"]
