"""kill -9 in the middle of a study, then the same command again: every sample is stored exactly
once, and no stored sample is run again (the function engine logs every request per unit)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ENGINE = '''
import os
import anyio

async def handler(request):
    await anyio.sleep(float(os.environ["STUDY_SLEEP"]))
    with open(os.environ["STUDY_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {request.metadata.unit} {request.n}\\n")
    return ["step " + str(i) + " \\\\boxed{4}" for i in range(request.n)]
'''

PROBLEMS, SAMPLES, ARMS = 8, 2, ("low2", "single")


def _stored(db: Path) -> list[tuple[str, str, int]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [(str(a), str(p), int(s)) for a, p, s in
                conn.execute("SELECT arm, problem_id, sample FROM results").fetchall()]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def _log_keys(log: Path, pid: int) -> Counter[tuple[str, str, int]]:
    keys: Counter[tuple[str, str, int]] = Counter()
    for line in log.read_text().splitlines():
        proc, tag, _ = line.split()
        if int(proc) == pid:
            problem, arm, sample = tag.split("|")
            keys[(arm, problem, int(sample[1:]))] += 1
    return keys


@pytest.mark.timeout(300)
def test_kill9_then_resume(tmp_path: Path) -> None:
    (tmp_path / "studyfe.py").write_text(ENGINE)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"problem": "What is 2+2 ({i})?", "answer": "4", "id": "q{i}"}}\n'
                            for i in range(PROBLEMS)))
    spec = tmp_path / "study.toml"
    spec.write_text(f"""
samples = {SAMPLES}
[engine]
kind = "function"
function = "studyfe:handler"
max_sequences = 2    # units finish one after another, so the kill lands mid-study
[dataset]
path = "d.jsonl"
id_field = "id"
[[arms]]
name = "low2"
widths = [2]
[[arms]]
name = "single"
baseline = "single"
""")
    out, log = tmp_path / "out", tmp_path / "requests.log"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "STUDY_LOG": str(log), "STUDY_SLEEP": "0.3"}
    cmd = [sys.executable, "-m", "pacore_agents", "study", "run", str(spec), "--out", str(out),
           "--no-progress", "--no-report"]
    total = PROBLEMS * SAMPLES * len(ARMS)

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(_stored(out / "results.sqlite")) < 6:
        assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
        assert time.monotonic() < deadline, "the study stored nothing in 120 s"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    before = _stored(out / "results.sqlite")
    assert 6 <= len(before) < total, "kill the study while samples are still running"

    second = subprocess.run(cmd, env={**env, "STUDY_SLEEP": "0.01"}, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    after = _stored(out / "results.sqlite")
    assert len(after) == len(set(after)) == total  # every sample exactly once
    expected = {(a, f"q{i}", s) for a in ARMS for i in range(PROBLEMS) for s in range(SAMPLES)}
    assert set(after) == expected
    assert f"{total - len(before)} samples run now, {len(before)} were already stored" in second.stdout

    first_run, second_run = _log_keys(log, first.pid), _log_keys(log, _second_pid(log, first.pid))
    assert not set(before) & set(second_run), "a stored sample was run again"
    assert set(before) <= set(first_run)
    assert set(second_run) == expected - set(before)
    for key, count in second_run.items():  # low2 = round 1 (n=2 merged) + sink; single = 1
        assert count == (2 if key[0] == "low2" else 1), key


def _second_pid(log: Path, first_pid: int) -> int:
    pids = {int(line.split()[0]) for line in log.read_text().splitlines()} - {first_pid}
    assert len(pids) == 1, pids
    return pids.pop()


def test_a_store_held_locked_by_another_process_is_waited_for_not_a_traceback(tmp_path: Path) -> None:
    """Two search workers open one store at once: the WAL switch meets the other's lock. Held
    6 s (past sqlite's 5 s busy wait), the open waits and succeeds (it raised
    ``OperationalError: database is locked`` before)."""
    import threading

    from pacore_agents.studies._store import ResultStore

    out = tmp_path / "out"
    out.mkdir()
    db = out / ResultStore.DB_NAME
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.0, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        ResultStore.open(out, fingerprint="f" * 16).close()
        assert time.monotonic() - started >= 5.5
    finally:
        release.join()
        holder.close()


def test_a_store_locked_past_the_busy_wait_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A lock held past the 10 s busy wait: a ``ConfigError`` naming the file, not sqlite's
    traceback; the holder's data is untouched."""
    from pacore_agents import ConfigError
    from pacore_agents.studies._store import ResultStore

    out = tmp_path / "out"
    out.mkdir()
    db = out / ResultStore.DB_NAME
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("INSERT INTO other VALUES (1)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match=r"results\.sqlite: cannot open the store .*locked"):
            ResultStore.open(out, fingerprint="f" * 16)
    finally:
        holder.execute("COMMIT")
    assert holder.execute("SELECT x FROM other").fetchall() == [(1,)]
    holder.close()
