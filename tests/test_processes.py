"""No orphaned processes: grading workers die with the process that started them (kill -9,
Ctrl-C), by Linux's parent-death signal and by the portable parent-pid watcher alike."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent

GRADE_THEN_WAIT = textwrap.dedent("""
    import json, sys, anyio, psutil
    from pacore_agents.studies import Grader

    async def main() -> None:
        async with Grader(workers=2, timeout=10) as grader:
            grades = [await grader.grade("7", "\\\\boxed{7}"), await grader.grade("8", "\\\\boxed{8}")]
            assert all(g.correct for g in grades), grades
            me = psutil.Process()
            workers = [p.pid for p in me.children()
                       if "resource_tracker" not in " ".join(p.cmdline())]
            print(json.dumps(workers), flush=True)
            await anyio.sleep(600)

    if __name__ == "__main__":
        anyio.run(main)
""")

FOLLOW_PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    if sys.argv[1] == "parent":
        child = subprocess.Popen([sys.executable, __file__, "child", sys.argv[2], sys.argv[3]])
        print(child.pid, flush=True)
        time.sleep(600)
    else:
        from pacore_agents.studies._grading_worker import exit_with_parent
        exit_with_parent(os.getppid(), pdeathsig=sys.argv[2] == "1", watch=sys.argv[3] == "1",
                          poll=0.1)
        print("ready", flush=True)  # our stdout is the parent's
        time.sleep(600)
""")


def _as_in_a_terminal() -> None:
    """In the child before exec: SIGINT as an interactive shell leaves it (default), whatever
    this test run inherited (a shell's background job starts with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(script: Path, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    """Run ``script``; its stderr goes to ``<script>.err`` (a pipe would be held open by any
    surviving worker). ``new_session``: its own process group, started as from a terminal."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with script.with_suffix(".err").open("w", encoding="utf-8") as err:
        return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env, cwd=REPO,
                                start_new_session=new_session,
                                preexec_fn=_as_in_a_terminal if new_session else None)


def _end(proc: subprocess.Popen[str], script: Path) -> str:
    """Kill ``proc`` if it still runs (kill -9), reap it, and return its stderr."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()
    return script.with_suffix(".err").read_text(encoding="utf-8")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still running (zombies count as gone) after waiting up to ``seconds``."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=seconds)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
                proc.kill()  # do not leak them into the rest of the suite
        except psutil.NoSuchProcess:
            continue
    return left


def _sigint_blocked(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    blocked = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
    return bool(blocked & (1 << (signal.SIGINT - 1)))


def _worker_pids(proc: subprocess.Popen[str], script: Path) -> list[int]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"the grading script died: {_end(proc, script)[-2000:]}")
    pids: list[int] = json.loads(line)
    assert pids and all(psutil.pid_exists(p) for p in pids)
    return pids


def test_grading_workers_die_when_the_study_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "grade.py"
    script.write_text(GRADE_THEN_WAIT, encoding="utf-8")
    proc = _spawn(script)
    try:
        pids = _worker_pids(proc, script)
    finally:
        _end(proc, script)  # kill -9
    assert _gone_within(pids, 5.0) == []


def test_ctrl_c_leaves_no_grading_worker(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C does: the parent closes the
    pool and exits; the workers ignore the signal (no traceback of theirs) and are gone."""
    script = tmp_path / "grade.py"
    script.write_text(GRADE_THEN_WAIT, encoding="utf-8")
    proc = _spawn(script, new_session=True)
    try:
        pids = _worker_pids(proc, script)
        if sys.platform == "linux":  # blocked from exec on: a Ctrl-C during start-up cannot hit
            assert all(_sigint_blocked(pid) for pid in pids)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        err = _end(proc, script)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "_process_worker" not in err and "spawn_main" not in err  # no worker's traceback
    assert _gone_within(pids, 5.0) == []


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize(("pdeathsig", "watch"), [("1", "0"), ("0", "1")], ids=["pdeathsig", "watcher"])
def test_each_mechanism_alone_ends_an_orphan(tmp_path: Path, pdeathsig: str, watch: str) -> None:
    script = tmp_path / "follow.py"
    script.write_text(FOLLOW_PARENT, encoding="utf-8")
    parent = _spawn(script, "parent", pdeathsig, watch)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"  # following its parent from now on
    finally:
        _end(parent, script)  # kill -9
    assert _gone_within([child], 5.0) == []


STUDY_ENGINE = """
import anyio

async def handler(request):
    # problem q0 ends at once (its grading starts the workers); the others are still running
    # when the Ctrl-C comes, however fast the library gets
    await anyio.sleep(0.2 if "(0)" in request.messages[-1].content else 60)
    return ["so \\\\boxed{4}"] * request.n
"""

STUDY = """
samples = 2
[engine]
kind = "function"
function = "sigint_engine:handler"
[dataset]
path = "d.jsonl"
id_field = "id"
[[arms]]
name = "low2"
widths = [2]
"""


@pytest.mark.timeout(180)
def test_ctrl_c_of_a_study_run_leaves_no_worker(tmp_path: Path) -> None:
    (tmp_path / "sigint_engine.py").write_text(STUDY_ENGINE, encoding="utf-8")
    (tmp_path / "d.jsonl").write_text("".join(f'{{"problem": "2+2 ({i})?", "answer": "4", "id": "q{i}"}}\n'
                                              for i in range(20)), encoding="utf-8")
    (tmp_path / "study.toml").write_text(STUDY, encoding="utf-8")
    err_path = tmp_path / "study.err"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pacore_agents", "study", "run", "study.toml",
                                 "--out", "out", "--no-progress", "--no-report"], cwd=tmp_path, env=env,
                                stdout=err, stderr=err, start_new_session=True, preexec_fn=_as_in_a_terminal)
    try:
        study = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        while not workers or _stored(tmp_path) < 2:  # grading has started; q0 is stored
            assert proc.poll() is None, err_path.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the study stored no result (with a grading worker) in 120 s"
            workers = [p for p in study.children() if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = err_path.read_text(encoding="utf-8")
    assert proc.returncode == 130 and "interrupted" in text, text
    assert "Traceback" not in text, text
    assert _gone_within([p.pid for p in workers], 5.0) == []
    with closing(sqlite3.connect(tmp_path / "out" / "results.sqlite")) as con:  # what finished is kept
        stored = {row[0] for row in con.execute("select problem_id from results")}
    assert stored == {"q0"}


def _stored(tmp_path: Path) -> int:
    """Results the study has stored so far (0 before its store exists)."""
    path = tmp_path / "out" / "results.sqlite"
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(path, timeout=1)) as con:
            return int(con.execute("select count(*) from results").fetchone()[0])
    except sqlite3.Error:  # its table is not created yet
        return 0
