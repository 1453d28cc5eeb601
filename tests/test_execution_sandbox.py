"""Programs run in the real bubblewrap sandbox: constructed cases of every test kind in both
comparison modes, the canaries, and the adversarial suite (each hostile program graded failed
or timed out within its limits, nothing of it left running, nothing written outside, no
secret in the results; the fork bomb contained although the tests run as root)."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacore_agents._errors import PacoreError
from pacore_agents.execution import (
    CodeTests,
    ExecutionSettings,
    SandboxLimits,
    TestCase,
    _sandbox,
    bwrap_path,
    check_canaries,
    execute,
    sandbox_uids,
)

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed (apt-get install bubblewrap)")
MODES = ["lcb", "judge"]
FAST = ExecutionSettings(test_timeout=2.0, sample_timeout=12.0)  # a loaded machine: margin


def stdin_tests(*pairs: tuple[str, str]) -> CodeTests:
    return CodeTests(kind="stdin", tests=[TestCase(input=i, output=o) for i, o in pairs])


def functional_tests(fn: str, *pairs: tuple[str, str]) -> CodeTests:
    return CodeTests(kind="functional", fn_name=fn, tests=[TestCase(input=i, output=o) for i, o in pairs])


ADD = stdin_tests(("1 2\n", "3\n"), ("10 -4\n", "6\n"))
STDIN_CASES = {
    "right": ("a, b = map(int, input().split())\nprint(a + b)\n", ["passed", "passed"]),
    "right_main": ("import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n"
                   "if __name__ == '__main__':\n    main()\n", ["passed", "passed"]),
    "wrong": ("a, b = map(int, input().split())\nprint(a - b)\n", ["wrong_answer", "wrong_answer"]),
    "half": ("a, b = map(int, input().split())\nprint(3 if a == 1 else 0)\n", ["passed", "wrong_answer"]),
    "crash": ("a, b = map(int, input().split())\nprint(a // 0)\n", ["runtime_error", "runtime_error"]),
    "syntax": ("def f(:\n", ["runtime_error", "runtime_error"]),
    "slow": ("a, b = map(int, input().split())\nwhile a: pass\nprint(a + b)\n", ["timeout", "timeout"]),
    "whitespace": ("a, b = map(int, input().split())\nprint('   ', a + b, '   ')\nprint()\nprint()\n",
                   ["passed", "passed"]),
    "floats": ("a, b = map(int, input().split())\nprint(f'{float(a + b):.3f}')\n", ["passed", "passed"]),
}


@pytest.mark.parametrize("mode", MODES)
def test_stdin_programs(mode: str) -> None:
    settings = FAST.model_copy(update={"mode": mode})
    for name, (code, expected) in STDIN_CASES.items():
        verdict = execute(code, ADD, settings)
        assert verdict.statuses == expected, (name, verdict.details)
    assert execute("print('x')", ADD, settings).pass_rate == 0.0
    assert execute(None, ADD, settings).statuses == ["no_code", "no_code"]
    signatures = {execute(STDIN_CASES[n][0], ADD, settings).signature for n in ("right", "whitespace", "floats")}
    assert len(signatures) == 2  # "3" and "3" agree; "3.000" is another output (the same verdict)


def test_the_two_modes_differ_where_livecodebench_wraps_the_program() -> None:
    """A top-level name used through ``global`` and ``open(0).read()``: a judge runs both;
    LiveCodeBench's wrapping into a function (and its ``from io import *``) fails them."""
    uses_global = ("n = int(input())\ndef twice():\n    global n\n    return 2 * n\nprint(twice())\n")
    reads_fd0 = "print(sum(map(int, open(0).read().split())))\n"
    tests = stdin_tests(("4\n", "8\n"))
    assert execute(uses_global, tests, FAST.model_copy(update={"mode": "judge"})).passed
    assert execute(uses_global, tests, FAST).statuses == ["runtime_error"]
    assert execute(reads_fd0, tests, FAST.model_copy(update={"mode": "judge"})).statuses == ["wrong_answer"]
    sums = stdin_tests(("4 4\n", "8\n"))
    assert execute(reads_fd0, sums, FAST.model_copy(update={"mode": "judge"})).passed
    assert not execute(reads_fd0, sums, FAST).passed


FUNCTIONAL = functional_tests("pair_sum", ("[1, 2]\n3", "[4, 4]"), ("[0.5]\n0.25", "[0.75, 0.75]"))
FUNCTIONAL_CASES = {
    "right": ("def pair_sum(xs, y):\n    return [xs[0] + y, xs[0] + y]\n", ["passed", "passed"]),
    "tuple": ("def pair_sum(xs, y):\n    return (xs[0] + y, xs[0] + y)\n", ["passed", "passed"]),
    "solution_class": ("class Solution:\n    def pair_sum(self, xs, y):\n        return [xs[0] + y] * 2\n",
                       ["passed", "passed"]),
    "wrong": ("def pair_sum(xs, y):\n    return [y, y]\n", ["wrong_answer", "wrong_answer"]),
    "float_off": ("def pair_sum(xs, y):\n    return [xs[0] + y + 1e-9] * 2\n", ["wrong_answer", "wrong_answer"]),
    "crash": ("def pair_sum(xs, y):\n    return xs[5]\n", ["runtime_error", "runtime_error"]),
    "missing": ("def other(xs, y):\n    return 0\n", ["runtime_error", "runtime_error"]),
    "slow": ("def pair_sum(xs, y):\n    while True:\n        pass\n", ["timeout", "timeout"]),
    "prints": ("def pair_sum(xs, y):\n    print('  noise  ')\n    return [xs[0] + y] * 2\n", ["passed", "passed"]),
}


@pytest.mark.parametrize("mode", MODES)
def test_functional_programs(mode: str) -> None:
    settings = FAST.model_copy(update={"mode": mode})
    for name, (code, expected) in FUNCTIONAL_CASES.items():
        verdict = execute(code, FUNCTIONAL, settings)
        assert verdict.statuses == expected, (name, verdict.details)


@pytest.mark.parametrize("mode", MODES)
def test_humaneval_style_check_tests(mode: str) -> None:
    tests = CodeTests(kind="check", prefix="import math\n\n", tests=[TestCase(
        input="def check(candidate):\n    assert candidate(4) == 2.0\n    assert candidate(2.25) == 1.5\n",
        output="root")])
    settings = FAST.model_copy(update={"mode": mode})
    assert execute("def root(x):\n    return math.sqrt(x)\n", tests, settings).passed
    assert execute("def root(x):\n    return x / 2\n", tests, settings).statuses == ["wrong_answer"]
    assert execute("def root(x):\n    return math.sqrt(-x)\n", tests, settings).statuses == ["runtime_error"]
    assert execute("def root(x):\n    while True: pass\n", tests, settings).statuses == ["timeout"]


@pytest.mark.parametrize("mode", MODES)
def test_the_canaries_pass_on_a_working_sandbox(mode: str) -> None:
    check_canaries(FAST.model_copy(update={"mode": mode}))


FAKE_HARNESS = """import json, sys
job = json.loads(sys.stdin.read())
n = len(job["tests"]) + (1 if job.get("canary") else 0)
print(job["nonce"] + json.dumps({"results": [{"status": "passed", "digest": "x", "detail": ""}] * n}))
"""


@pytest.fixture
def harness_that_never_executes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A harness that reports every test passed without running anything (human-eval's
    checkouts with ``exec`` commented out): readable by the sandbox's unprivileged uid."""
    folder = Path(tempfile.mkdtemp(prefix="pacore-fake-harness-"))
    folder.chmod(0o755)
    fake = folder / "harness.py"
    fake.write_text(FAKE_HARNESS, encoding="utf-8")
    fake.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    monkeypatch.setattr(_sandbox, "HARNESS", fake)
    yield fake
    fake.unlink()
    folder.rmdir()


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_grader_that_stops_executing_fails(harness_that_never_executes: Path, sandbox: str) -> None:
    settings = FAST.model_copy(update={"sandbox": sandbox})
    verdict = execute("print('anything')", ADD, settings)
    assert verdict.statuses == ["sandbox_error", "sandbox_error"] and "canary" in verdict.details[0]
    assert not verdict.passed
    with pytest.raises(PacoreError, match="canaries"):
        check_canaries(settings)


# --- the adversarial suite -----------------------------------------------------------------------

SECRET = "pacore-test-secret-4242-zz"
OUTSIDE = Path("/tmp/pacore-sandbox-outside.txt")
ESCAPE_MARKS = [Path("/tmp/pacore-escaped"), Path("/work/pacore-escaped"), Path("/root/pacore-escaped")]


def _processes_of(uids: range) -> list[int]:
    """Live processes (zombies have exited: the sandbox's init, orphaned when bwrap returns,
    waits for this machine's init to reap it) of ``uids``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in uids and Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


def _wait_none_left(uids: range, within: float = 20.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := _processes_of(uids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _adversaries(port: int) -> dict[str, str]:
    marks = repr([str(m) for m in ESCAPE_MARKS])
    return {
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n",
        "infinite_loop": "while True:\n    pass\n",
        "socket": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'hi')\n"
                  "print('connected')\n",
        "read_outside": f"print(open({str(OUTSIDE)!r}).read())\n",
        "read_secret_env": "import os\nprint(os.environ.get('PACORE_SANDBOX_SECRET'), dict(os.environ))\n",
        "read_proc_env": "import os\nfor p in os.listdir('/proc'):\n    try:\n"
                         "        print(open(f'/proc/{p}/environ').read())\n    except Exception:\n        pass\n",
        "write_outside": f"for m in {marks}:\n    try:\n        open(m, 'w').write('x')\n    except OSError:\n"
                         "        pass\nprint('wrote')\n",
        "kill_parent": "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n"
                       "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n",
        "background": "import subprocess\nsubprocess.Popen(['python3', '-c', 'import time\\nwhile True: time.sleep(1)'],"
                      " start_new_session=True)\nprint('started')\n",
        "gigabyte_of_output": "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n",
        "gigabyte_to_fd1": "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, chunk)\n",
        "setsid_double_fork": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                              "        time.sleep(120)\n    os._exit(0)\nprint('escaped')\n",
    }


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    got: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            got.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    stop.set()
    thread.join(2)
    server.close()


@pytest.mark.parametrize("mode", MODES)
def test_hostile_programs_are_contained(mode: str, listener: tuple[int, list[bytes]],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    port, received = listener
    monkeypatch.setenv("PACORE_SANDBOX_SECRET", SECRET)
    OUTSIDE.write_text(SECRET, encoding="utf-8")
    OUTSIDE.chmod(0o644)  # readable by anyone: only the sandbox's view keeps it out
    limits = SandboxLimits(memory_mb=512, processes=32)
    settings = ExecutionSettings(mode=mode, test_timeout=1.0, sample_timeout=5.0, limits=limits)
    uids = sandbox_uids(limits) if os.getuid() == 0 else range(os.getuid(), os.getuid() + 1)
    tests = stdin_tests(("", "unreachable expected output"))
    try:
        for name, code in _adversaries(port).items():
            peak = [0]
            done = threading.Event()

            def watch(done: threading.Event = done, peak: list[int] = peak) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], len(_processes_of(uids)))
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.monotonic()
            verdict = execute(code, tests, settings)
            elapsed = time.monotonic() - started
            done.set()
            watcher.join()
            assert verdict.statuses[0] in ("wrong_answer", "runtime_error", "timeout", "memory_limit"), (
                name, verdict)
            assert elapsed < 5.0 + 10.0, (name, elapsed)  # the wall budget, the kill, a loaded machine
            if os.getuid() == 0:
                assert _wait_none_left(uids) == [], name
                assert peak[0] <= limits.processes, (name, peak[0])  # RLIMIT_NPROC held, as root
            assert SECRET not in verdict.model_dump_json(), name
            assert not any(m.exists() for m in ESCAPE_MARKS), name
        assert received == []  # nothing reached the server on 127.0.0.1
    finally:
        OUTSIDE.unlink(missing_ok=True)


PROBE = """
import os, sys, importlib.util
def view(x):
    problems = []
    allowed = {'usr', 'lib', 'lib64', 'proc', 'dev', 'tmp', 'harness', 'bin'}
    if not set(os.listdir('/')) <= allowed:
        problems.append('root: ' + ' '.join(sorted(os.listdir('/'))))
    for d in ('/etc', '/root', '/home', '/work', '/usr/local', '/var'):
        if os.path.exists(d):
            problems.append(d)
    if set(os.environ) - {'PATH', 'PWD'}:
        problems.append('env: ' + ' '.join(sorted(os.environ)))
    for mod in ('pydantic', 'pacore_agents', 'numpy', 'pytest'):
        if importlib.util.find_spec(mod) is not None:
            problems.append('importable: ' + mod)
    if os.getuid() == 0:
        problems.append('uid 0')
    if os.getpid() > 50:
        problems.append('pid %d: not a fresh pid namespace' % os.getpid())
    if os.getcwd() != '/tmp' or os.listdir('.') not in ([], ['solution.py']):
        problems.append('cwd: %s %s' % (os.getcwd(), os.listdir('.')))
    try:
        open('/usr/pacore-escape', 'w')
        problems.append('/usr is writable')
    except OSError:
        pass
    return problems
"""


@pytest.mark.parametrize("mode", MODES)
def test_the_sandbox_sees_only_the_interpreter(mode: str) -> None:
    """Nothing but the interpreter and a fresh tmpfs: no /etc, /root, /work, no packages, no
    environment, not root, a fresh pid namespace, a read-only system."""
    verdict = execute(PROBE, functional_tests("view", ("0", "[]")), FAST.model_copy(update={"mode": mode}))
    assert verdict.passed, verdict.details


def test_the_canary_has_its_own_time_limit() -> None:
    """A test limit too short for any program (a loaded machine) times the program out, but not
    the trivial canary: the verdict is the program's ``timeout``, never ``sandbox_error``."""
    settings = FAST.model_copy(update={"mode": "judge", "test_timeout": 0.001})
    verdict = execute("import time\ntime.sleep(1)\nprint(input())\n", stdin_tests(("1\n", "1\n")), settings)
    assert verdict.statuses == ["timeout"], verdict.details
