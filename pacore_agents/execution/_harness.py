"""The test runner that executes inside the sandbox: one process per sample, every test of it.

Contract: this file imports only the standard library and is run as a script
(``python3 -I -S harness.py``); the sandbox binds it read-only. It reads one JSON job from
stdin::

    {"mode": "lcb" | "judge", "kind": "stdin" | "functional" | "check", "code": str,
     "fn_name": str | null, "tests": [{"input": str, "output": str}], "timeout": float,
     "output_cap": int, "nonce": str, "python": str}

(``canary``: an optional object overriding ``code``, ``kind``, ``fn_name``, ``tests`` and ``timeout``, run
after the job the same way, its results appended) and writes ONE line ``<nonce><json>`` to the stdout it started with (the program under test
never sees that descriptor as its stdout). The JSON is ``{"results": [...]}``, one entry per
test in order: ``{"status", "digest", "detail"}`` with status ``passed`` | ``wrong`` |
``runtime`` | ``timeout`` | ``memory``, ``digest`` a short hash of what the program produced
(its stdout, or its return value as JSON; votes group programs by it) and ``detail`` at most
200 characters.

``mode = "lcb"`` is LiveCodeBench's ``testing_util`` (commit of 2024-2025): the program is run
in this process. stdin programs: an ``if __name__ == '__main__':`` last block is unwrapped, the
non-import statements are wrapped in a function, LiveCodeBench's import prelude heads it,
stdin/``open``/``readline`` are patched with the test's input, stdout captured in a StringIO;
the output matches if, after ``strip()`` and splitting on newlines, the line counts are equal
and each stripped line is equal or equal as a list of ``Decimal`` (whitespace-split).
Functional programs: the prelude + the code is executed as a module, ``Solution()`` built if
the text contains ``class Solution``, ``fn_name`` called with the JSON values of the input's
lines; a tuple result becomes a list; it matches if ``==`` the JSON output. Unlike
LiveCodeBench (which stops at the first failing test), every test is run, so the pass rate
is defined; pass/fail is the same. ``mode = "judge"``: the program runs as a judge runs it,
a fresh ``python3`` per test (stdin: reading stdin; functional: a driver calls the function
and returns its value over a pipe), compared the same way. ``kind = "check"`` (HumanEval):
the program is ``code + test + check(entry_point)``; it passes if it exits without an
exception (an ``AssertionError`` is a wrong answer).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from types import ModuleType
from typing import Any

LCB_IMPORTS = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
    "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
    "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
    "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
    "import json\nsys.setrecursionlimit(50000)\n"
)


class TimeoutException(Exception):
    pass


class OutputLimit(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutException


# --- LiveCodeBench's program rewriting and comparison ---------------------------------------

def clean_if_name(code: str) -> str:
    """Unwrap a last top-level ``if __name__ == '__main__':`` block (LiveCodeBench)."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)  # type: ignore[arg-type]
    except Exception:
        pass
    return code


def make_function(code: str) -> str:
    """The prelude, the program's imports, and the rest wrapped in ``wrapped_function``."""
    try:
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
        others = [s for s in tree.body if not isinstance(s, ast.Import | ast.ImportFrom)]
        fn = ast.FunctionDef(name="wrapped_function", args=ast.arguments(
            posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=others, decorator_list=[], lineno=-1)
        return LCB_IMPORTS + "\n" + ast.unparse(imports) + "\n" + ast.unparse(fn)  # type: ignore[arg-type]
    except Exception:
        return code


def stripped_lines(value: str) -> list[str]:
    return [line.strip() for line in value.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(x) for x in line.split()]
    except (InvalidOperation, ValueError):
        return None


def lines_match(prediction: str, expected: str) -> tuple[bool, str]:
    """LiveCodeBench's stdout comparison: (match, reason if not)."""
    got, want = stripped_lines(prediction), stripped_lines(expected)
    if len(got) != len(want):
        return False, f"mismatched output length: {len(got)} lines, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g == w:
            continue
        dg, dw = _decimals(g), _decimals(w)
        if dg is None or dw is None or dg != dw:
            return False, f"line {i + 1} differs"
    return True, ""


def values_match(prediction: Any, expected: Any) -> bool:
    """LiveCodeBench's functional comparison: a tuple counts as a list, then ``==``."""
    if isinstance(prediction, tuple):
        prediction = list(prediction)
    return bool(prediction == expected)


def digest(value: Any) -> str:
    if not isinstance(value, str):
        try:
            value = json.dumps(value, sort_keys=True, default=repr)
        except (TypeError, ValueError, RecursionError):
            value = repr(value)
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def functional_args(text: str) -> list[Any]:
    return [json.loads(line) for line in text.split("\n")]


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TimeoutException) or "timeoutexception" in repr(exc).lower():
        return {"status": "timeout", "digest": "timeout", "detail": "time limit exceeded"}
    if isinstance(exc, MemoryError):
        return {"status": "memory", "digest": "memory", "detail": "memory limit exceeded"}
    if isinstance(exc, OutputLimit):
        return {"status": "wrong", "digest": "output-limit", "detail": "output limit exceeded"}
    return {"status": "runtime", "digest": "error:" + type(exc).__name__, "detail": _short(exc)}


# --- lcb: in this process ---------------------------------------------------------------------

class _CappedIO(io.StringIO):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap, self.size = cap, 0

    def write(self, s: str) -> int:
        self.size += len(s)
        if self.size > self.cap:
            raise OutputLimit
        return super().write(s)

    def close(self) -> None:  # LiveCodeBench makes closing its capture a no-op
        pass


def _exec_module(code: str, timeout: float) -> ModuleType:
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        module = ModuleType("tmp_sol", "")
        exec(compile(code, "<solution>", "exec"), module.__dict__)
        return module
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _LcbStdin(io.StringIO):
    """``sys.stdin`` as LiveCodeBench patches it: ``readline`` yields the input's lines without
    their newline (``StopIteration`` at the end), ``readlines`` the split lines, ``read`` it all."""

    def __init__(self, inputs: str) -> None:
        super().__init__(inputs)
        self._inputs, self._lines = inputs, iter(inputs.split("\n"))

    def readline(self, *args: Any) -> str:  # type: ignore[override]
        return next(self._lines)

    def readlines(self, *args: Any) -> list[str]:  # type: ignore[override]
        return self._inputs.split("\n")

    def read(self, *args: Any) -> str:
        return self._inputs


def _call_stdin(method: Any, inputs: str) -> None:
    """LiveCodeBench's ``call_method``: stdin and ``open`` (any path) give the input."""
    import builtins

    saved = builtins.open, sys.stdin
    builtins.open = lambda *args, **kwargs: io.StringIO(inputs)  # type: ignore[assignment]
    sys.stdin = _LcbStdin(inputs)
    try:
        method()
    except SystemExit:
        pass
    finally:
        builtins.open, sys.stdin = saved


def run_lcb(job: dict[str, Any], workdir: str = "") -> list[dict[str, Any]]:
    kind, tests, timeout = job["kind"], job["tests"], float(job["timeout"])
    out: list[dict[str, Any]] = []
    exec(LCB_IMPORTS, {})  # the prelude's modules load untimed: a loaded machine must not time it out
    try:
        if kind == "stdin":
            module = _exec_module(make_function(clean_if_name(job["code"])), timeout)
            target: Any = module.__dict__.get("wrapped_function")
        elif kind == "functional":
            code = LCB_IMPORTS + "\n\n" + job["code"]
            module = _exec_module(code, timeout)
            target = module.Solution() if "class Solution" in job["code"] else module
            target = getattr(target, job["fn_name"])
        else:
            target = None
    except BaseException as exc:  # the program failed to load: every test is an error
        if isinstance(exc, KeyboardInterrupt):
            raise
        failure = _failure(exc)
        if failure["status"] == "runtime":
            failure["detail"] = "load: " + failure["detail"]
        return [dict(failure) for _ in tests]
    if target is None and kind != "check":
        return [{"status": "runtime", "digest": "error:load", "detail": "no entry point"} for _ in tests]
    for test in tests:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            if kind == "stdin":
                capture = _CappedIO(int(job["output_cap"]))
                saved, sys.stdout = sys.stdout, capture
                try:
                    _call_stdin(target, test["input"])
                finally:
                    sys.stdout = saved
                signal.setitimer(signal.ITIMER_REAL, 0)
                printed = capture.getvalue()
                ok, why = lines_match(printed, test["output"])
                out.append({"status": "passed" if ok else "wrong", "digest": digest(stripped_lines(printed)),
                            "detail": why})
            elif kind == "functional":
                value = target(*functional_args(test["input"]))
                signal.setitimer(signal.ITIMER_REAL, 0)
                ok = values_match(value, json.loads(test["output"]))
                out.append({"status": "passed" if ok else "wrong", "digest": digest(
                    list(value) if isinstance(value, tuple) else value), "detail": ""})
            else:
                program = job["code"] + "\n\n" + test["input"] + f"\n\ncheck({test['output']})\n"
                exec(compile(program, "<check>", "exec"), {"__name__": "__check__"})
                signal.setitimer(signal.ITIMER_REAL, 0)
                out.append({"status": "passed", "digest": "passed", "detail": ""})
        except BaseException as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(exc, AssertionError):
                out.append({"status": "wrong", "digest": "assert", "detail": _short(exc)})
            else:
                out.append(_failure(exc))
    return out


# --- judge: a fresh interpreter per test --------------------------------------------------------

_DRIVER = """
import json, os, sys
sys.setrecursionlimit(50000)
fd = int(sys.argv[2])
ns = {"__name__": "solution"}
exec(compile(open(sys.argv[1]).read(), "solution.py", "exec"), ns)
target = ns["Solution"]() if "Solution" in ns else None
fn = getattr(target, sys.argv[3]) if target is not None and hasattr(target, sys.argv[3]) else ns[sys.argv[3]]
args = [json.loads(line) for line in sys.stdin.read().split("\\n")]
value = fn(*args)
if isinstance(value, tuple):
    value = list(value)
try:
    text = json.dumps({"value": value})
except (TypeError, ValueError):
    text = json.dumps({"repr": repr(value)})
os.write(fd, text.encode())
os.close(fd)
"""


def _run_child(argv: list[str], stdin: str, timeout: float, cap: int,
               pass_fds: tuple[int, ...] = ()) -> tuple[str, int | None, str, bool]:
    """(stdout capped at ``cap``, returncode or None on timeout, stderr tail, over the cap)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=pass_fds,
                                start_new_session=True, env={"PATH": "/usr/bin"})
        try:
            proc.communicate(stdin.encode(), timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        except BrokenPipeError:
            code = proc.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        size = out.tell()
        out.seek(0)
        printed = out.read(cap).decode("utf-8", "replace")
        err.seek(max(0, err.tell() - 2000))
        return printed, code, err.read().decode("utf-8", "replace"), size > cap


def _judge_failure(code: int | None, stderr: str) -> dict[str, Any] | None:
    if code is None:
        return {"status": "timeout", "digest": "timeout", "detail": "time limit exceeded"}
    if code == 0:
        return None
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
    if "MemoryError" in stderr:
        return {"status": "memory", "digest": "memory", "detail": "memory limit exceeded"}
    if last.startswith("AssertionError"):
        return {"status": "wrong", "digest": "assert", "detail": last[:200]}
    name = last.split(":", 1)[0] if ":" in last else str(code)
    return {"status": "runtime", "digest": "error:" + name[:40], "detail": last[:200]}


def run_judge(job: dict[str, Any], workdir: str) -> list[dict[str, Any]]:
    kind, timeout, cap, python = job["kind"], float(job["timeout"]), int(job["output_cap"]), job["python"]
    path = os.path.join(workdir, "solution.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(LCB_IMPORTS + "\n" + job["code"] if kind == "functional" else job["code"])
    out: list[dict[str, Any]] = []
    for i, test in enumerate(job["tests"]):
        if kind == "stdin":
            printed, code, stderr, over = _run_child([python, path], test["input"], timeout, cap)
            failure = _judge_failure(code, stderr)
            if over:
                failure = {"status": "wrong", "digest": "output-limit", "detail": "output limit exceeded"}
            if failure is None:
                ok, why = lines_match(printed, test["output"])
                failure = {"status": "passed" if ok else "wrong", "digest": digest(stripped_lines(printed)),
                           "detail": why}
            out.append(failure)
        elif kind == "functional":
            read, write = os.pipe()
            try:
                _, code, stderr, _ = _run_child([python, "-c", _DRIVER, path, str(write), job["fn_name"]],
                                                test["input"], timeout, cap, pass_fds=(write,))
                os.close(write)
                write = -1
                with os.fdopen(read, "rb") as r:
                    read = -1
                    payload = r.read(cap + 1).decode("utf-8", "replace")
            finally:
                for fd in (read, write):
                    if fd >= 0:
                        os.close(fd)
            failure = _judge_failure(code, stderr)
            if failure is None:
                try:
                    got = json.loads(payload)
                except ValueError:
                    got = {}
                if "value" in got:
                    ok = values_match(got["value"], json.loads(test["output"]))
                    failure = {"status": "passed" if ok else "wrong", "digest": digest(got["value"]), "detail": ""}
                else:
                    failure = {"status": "wrong", "digest": digest(got.get("repr", "")),
                               "detail": "the result is not JSON"}
            out.append(failure)
        else:
            check = os.path.join(workdir, f"check_{i}.py")
            with open(check, "w", encoding="utf-8") as f:
                f.write(job["code"] + "\n\n" + test["input"] + f"\n\ncheck({test['output']})\n")
            _, code, stderr, _ = _run_child([python, check], "", timeout, cap)
            out.append(_judge_failure(code, stderr) or {"status": "passed", "digest": "passed", "detail": ""})
    return out


def main() -> None:
    job = json.loads(sys.stdin.read())
    result_fd = os.dup(1)  # the result channel; the program's stdout goes nowhere
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.set_inheritable(result_fd, False)
    signal.signal(signal.SIGALRM, _on_alarm)
    run = run_judge if job["mode"] == "judge" else run_lcb
    results = run(job, os.getcwd())
    canary = job.get("canary")
    if canary is not None:  # a known-wrong program through the same path: proves execution
        os.makedirs("canary", exist_ok=True)
        results += run({**job, **canary}, os.path.abspath("canary"))
    os.write(result_fd, (job["nonce"] + json.dumps({"results": results}) + "\n").encode())
    os._exit(0)  # no atexit handler or thread of the program runs after the verdict


if __name__ == "__main__":
    main()
