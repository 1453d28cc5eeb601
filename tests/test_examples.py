"""The examples run (with the fake engine here; real engines are covered by the engine tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_custom_role_and_topology_example() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "custom_role_and_topology.py"), "--fake"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "r2.a6   skeptic     hears" in "\n".join(lines)
    assert any(line.startswith("r1.a6   explorer") for line in lines)
    assert lines[-1] == "answer: I get \\boxed{12}"


def _readme_python_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\nimport networkx as nx") + len("```python\n")
    return text[start:text.index("```", start)]


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_the_readme_python_example_runs_as_a_script(tmp_path: Path) -> None:
    """Copied into a file and run with ``python example.py``, as a user would (issue 23)."""
    script = tmp_path / "example.py"
    script.write_text(_readme_python_example(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=540,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().split()[-1].isdigit()  # the effective TTC ends the printed line


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_the_readme_example_without_its_guard_is_one_line(tmp_path: Path) -> None:
    code = _readme_python_example()
    guard = code.index("if __name__")
    body = code[code.index("\n", guard) + 1:]
    unguarded = code[:guard] + textwrap.dedent(body)
    script = tmp_path / "example.py"
    script.write_text(unguarded, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=540,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "bootstrapping" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and 'if __name__ == "__main__":' in errors[0], proc.stderr[-3000:]
