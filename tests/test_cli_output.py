"""User text is never rich markup (issue 23, item 2), and the unguarded-script case of ``spawn``
is one line (item 3). Every case here failed before: brackets vanished, ``[/b]`` crashed the
CLI with a ``MarkupError`` traceback, and a copied script printed ~240 lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from pacore_agents.studies._metrics import ArmMetrics
from pacore_agents.studies._report import metrics_table, roles_table

REPO = Path(__file__).resolve().parent.parent
ENGINE = "function:tests.fixtures.handlers:answer"
HOSTILE = "my[/b][red]x[/red][engine][serve]"


def pacore(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pacore_agents", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_a_bracketed_topology_path_is_one_line_as_written(tmp_path: Path) -> None:
    proc = pacore("run", "What is 1 + 1?", "--topology", f"{tmp_path}/{HOSTILE}.toml", "--engine", ENGINE)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    assert f"{HOSTILE}.toml" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_study_error_keeps_its_bracketed_table_name(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nconcurrency = 4\n[dataset]\nkind = "arithmetic"\ncount = 2\n'
                    '[engine]\nkind = "function"\nfunction = "tests.fixtures.handlers:answer"\n'
                    '[[arms]]\nname = "a"\nkind = "single"\n', encoding="utf-8")
    proc = pacore("study", "run", str(spec), "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "set [engine] max_sequences" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fail_prints_brackets_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from pacore_agents.cli._output import fail

    with pytest.raises(typer.Exit):
        fail("pacore serve needs FastAPI and uvicorn: pip install 'pacore-agents[serve]' [/x]")
    assert "pip install 'pacore-agents[serve]' [/x]" in capsys.readouterr().err


def test_run_progress_and_summary_survive_a_bracketed_problem() -> None:
    proc = pacore("run", f"{HOSTILE} What is 1 + 1?", "--engine", ENGINE, "--topology", "pacore-low")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _render(table: object) -> str:
    console = Console(width=400, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text()


def test_report_tables_show_user_names_as_written() -> None:
    metrics = ArmMetrics(arm=HOSTILE, label=HOSTILE, kind="single", samples=1, problems=1, graded=1, correct=1, timeouts=0, errors=0,
                         accuracy=1.0, ci_low=0.2, ci_high=1.0, mean_ttc=3.0, rounds=[])
    assert HOSTILE in _render(metrics_table([metrics], title=f"study {HOSTILE}"))
    out = _render(roles_table({HOSTILE: {"sink": {"template": "{{ x }} [bold]y[/]", "system": "",
                                                  "compaction": "[engine]", "sampling": ""}}}))
    assert "[bold]y[/]" in out and "[engine]" in out


GUARD_SCRIPT = """
import anyio
from pacore_agents._main_guard import check_main_guard

async def main() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 10)
        check_main_guard("the vLLM engine")
        tg.cancel_scope.cancel()
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_an_unguarded_script_gets_one_line(tmp_path: Path, guarded: bool) -> None:
    body = "anyio.run(main)\n"
    if guarded:
        body = 'if __name__ == "__main__":\n    anyio.run(main)\n'
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(GUARD_SCRIPT) + body, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if guarded:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        return
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the vLLM engine starts a process that re-imports")
    assert 'if __name__ == "__main__":' in lines[0] and "line 10 " in lines[0]


def test_the_guard_passes_other_errors_to_the_previous_hook(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    script.write_text("from pacore_agents._main_guard import _install_hook\n_install_hook()\n"
                      "raise ValueError('mine')\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ValueError: mine" in proc.stderr
