"""The examples run (with the fake engine here; real engines are covered by the engine tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_custom_role_and_topology_example() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "custom_role_and_topology.py"), "--fake"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "r2.a6   skeptic     hears" in "\n".join(lines)
    assert any(line.startswith("r1.a6   explorer") for line in lines)
    assert lines[-1] == "answer: I get \\boxed{12}"
