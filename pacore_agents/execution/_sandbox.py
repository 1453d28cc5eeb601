"""Running one sample's tests in a bubblewrap sandbox (blocking: call from a worker thread).

Contract (``SandboxLimits`` holds the numbers):
- ``bwrap --unshare-all --die-with-parent --new-session --clearenv --cap-drop ALL``: no network
  (only a loopback of its own), its own pid, ipc, uts and user namespaces, an empty environment
  (``PATH`` only), no ``$HOME``. The file system is read-only and holds only the interpreter:
  its binary, its standard library (no site-packages) and the shared libraries; ``/tmp`` is a
  fresh tmpfs of ``tmpfs_mb`` that is also the working directory; ``/proc`` and a minimal
  ``/dev`` are the sandbox's own.
- The sandbox runs as an unprivileged uid (when the caller is root: a uid of its own per run,
  from ``uid_base``, so ``RLIMIT_NPROC`` counts only that run's processes; the kernel ignores
  that limit for root). As another user it runs as that user and ``RLIMIT_NPROC`` counts that
  user's processes, so the limit is raised by the processes the user already has.
- rlimits: CPU seconds, address space, processes, file size, open files, no core files.
- The whole sample has a wall budget; past it the sandbox is killed (its pid namespace dies
  with its init, so nothing it started survives). Output read back is capped.
- ``isolation = "none"`` runs the same harness in a plain subprocess with the same rlimits
  and nothing else: no isolation at all (the caller must say so loudly).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pacore_agents._errors import ConfigError

Isolation = Literal["bwrap", "none"]
HARNESS = Path(__file__).with_name("_harness.py")
BWRAP_MISSING = ("code grading runs model code in bubblewrap, which is not installed: install the "
                 "Debian package `bubblewrap` (apt-get install bubblewrap), or set [grading.code] "
                 "sandbox = \"none\" to run it unisolated")
_MB = 1024 * 1024
_uids = itertools.count()
_uid_lock = threading.Lock()


class SandboxLimits(BaseModel):
    """The limits of one sample's sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(default=2048, ge=64, description="address space per process (MiB)")
    processes: int = Field(default=64, ge=4, description="processes and threads of the sandbox's uid")
    file_mb: int = Field(default=64, ge=1, description="largest file a program may write (MiB)")
    open_files: int = Field(default=256, ge=16, description="open file descriptors per process")
    tmpfs_mb: int = Field(default=256, ge=8, description="size of the working directory (MiB)")
    output_mb: int = Field(default=16, ge=1, description="stdout kept per test (MiB); more is a wrong answer")
    uid_base: int = Field(default=2_000_000, ge=1000, description="first uid of sandboxes run as root")


_UIDS_PER_PROCESS = 4096


def sandbox_uids(limits: SandboxLimits) -> range:
    """The uids this process's sandboxes run as when it is root: a block of its own (by pid),
    each run the next one, so no two runs at once share a ``RLIMIT_NPROC`` count."""
    start = limits.uid_base + (os.getpid() % 4096) * _UIDS_PER_PROCESS
    return range(start, start + _UIDS_PER_PROCESS)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def require_bwrap() -> str:
    """bwrap's path, or ``ConfigError`` naming the Debian package."""
    path = bwrap_path()
    if path is None:
        raise ConfigError(BWRAP_MISSING)
    return path


def sandbox_python() -> str:
    """The interpreter programs run with: Debian's ``/usr/bin/python3`` when present (outside
    any virtual environment or home directory), else this interpreter."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if Path(candidate).exists():
            return os.path.realpath(candidate)
    raise ConfigError("no python3 interpreter found for the code sandbox")


def _stdlib_of(python: str) -> list[str]:
    if os.path.realpath(sys.executable) == python:
        paths = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
        return sorted(p for p in paths if p)
    out = subprocess.run([python, "-I", "-S", "-c", "import sysconfig,json;p=sysconfig.get_paths();"
                          "print(json.dumps([p['stdlib'], p['platstdlib']]))"],
                         capture_output=True, text=True, timeout=30, check=True)
    return sorted(set(json.loads(out.stdout)))


_BINDS: dict[str, list[str]] = {}


def bwrap_command(bwrap: str, python: str, limits: SandboxLimits) -> list[str]:
    """The bubblewrap command line that runs the harness (see the module contract)."""
    if python not in _BINDS:
        _BINDS[python] = _stdlib_of(python)
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
           "--setenv", "PATH", "/usr/bin", "--ro-bind", python, python]
    for lib in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu"):
        if Path(lib).is_dir():
            cmd += ["--ro-bind", lib, lib]
    for link, target in (("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        if Path(link).is_symlink():
            cmd += ["--symlink", target, link]
        elif Path(link).is_dir():
            cmd += ["--ro-bind", link, link]
    for stdlib in _BINDS[python]:
        cmd += ["--ro-bind", stdlib, stdlib]
        for sub in ("site-packages", "dist-packages"):
            if Path(stdlib, sub).is_dir():
                cmd += ["--tmpfs", str(Path(stdlib, sub)), "--remount-ro", str(Path(stdlib, sub))]
    if python != "/usr/bin/python3":
        cmd += ["--symlink", python, "/usr/bin/python3"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmpfs_mb * _MB), "--tmpfs", "/tmp",
            "--ro-bind", str(HARNESS), "/harness/run.py", "--remount-ro", "/", "--chdir", "/tmp",
            "--", python, "-I", "-S", "/harness/run.py"]
    return cmd


def _own_processes(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


def _limiter(limits: SandboxLimits, cpu_seconds: int, as_uid: int | None) -> Any:
    nproc = limits.processes
    if as_uid is None and os.getuid() != 0:
        nproc += _own_processes(os.getuid())

    def apply() -> None:  # in the child between fork and exec: only setrlimit calls
        for res, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, limits.memory_mb * _MB),
                           (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_FSIZE, limits.file_mb * _MB),
                           (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (value, value))

    return apply


class RawRun(BaseModel):
    """What came back from one sandbox run: the harness's results (None if it sent none)."""

    results: list[dict[str, Any]] | None
    timed_out: bool
    returncode: int | None
    stderr: str
    seconds: float


def run_job(job: dict[str, Any], *, isolation: Isolation, limits: SandboxLimits, wall: float,
            python: str | None = None) -> RawRun:
    """Run the harness on ``job`` (its ``nonce`` and ``python`` are filled in here) within
    ``wall`` seconds; blocking. Never raises for what the program does."""
    python = python or sandbox_python()
    nonce = secrets.token_hex(16)
    payload = json.dumps({**job, "nonce": nonce, "python": python}).encode("utf-8")
    as_uid: int | None = None
    if isolation == "bwrap":
        cmd = bwrap_command(require_bwrap(), python, limits)
        if os.getuid() == 0:
            with _uid_lock:
                as_uid = sandbox_uids(limits).start + next(_uids) % _UIDS_PER_PROCESS
    else:
        cmd = [python, "-I", "-S", str(HARNESS)]
    cpu = max(1, int(wall) + 1)
    started = time.monotonic()
    kw: dict[str, Any] = {"user": as_uid, "group": as_uid, "extra_groups": []} if as_uid is not None else {}
    env = {"PATH": "/usr/bin"}
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_limiter(limits, cpu, as_uid), env=env, close_fds=True,
                                start_new_session=isolation == "none",
                                cwd="/tmp" if isolation == "none" else None, **kw)
    except OSError as exc:
        return RawRun(results=None, timed_out=False, returncode=None, stderr=f"cannot start the sandbox: {exc}",
                      seconds=0.0)
    cap = limits.output_mb * _MB
    out, err, timed_out = _communicate(proc, payload, wall, cap)
    if isolation == "none":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - started
    results = None
    text = out.decode("utf-8", "replace")
    at = text.rfind(nonce)
    if at >= 0:
        try:
            results = json.loads(text[at + len(nonce):].splitlines()[0])["results"]
        except (ValueError, KeyError, IndexError, TypeError):
            results = None
    return RawRun(results=results, timed_out=timed_out, returncode=proc.returncode,
                  stderr=err.decode("utf-8", "replace")[-2000:], seconds=seconds)


def _communicate(proc: subprocess.Popen[bytes], payload: bytes, wall: float, cap: int) -> tuple[bytes, bytes, bool]:
    """Feed ``payload``, read stdout/stderr (each capped at ``cap``: the rest is drained and
    dropped), kill the process at the deadline; always reaps it."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    sizes = dict.fromkeys(chunks, 0)

    def writer() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    feeding = threading.Thread(target=writer, name="pacore-sandbox-stdin", daemon=True)
    feeding.start()
    deadline = time.monotonic() + wall
    timed_out = False
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            if proc.poll() is not None:  # what it left running holds the pipes: a short grace
                deadline = min(deadline, time.monotonic() + 0.5)
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = proc.poll() is None
                break
            for key, _ in sel.select(min(left, 1.0)):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                if sizes[key.fd] < cap:
                    chunks[key.fd].append(data[: cap - sizes[key.fd]])
                sizes[key.fd] += len(data)
    if timed_out or proc.poll() is None:
        proc.kill()
    proc.wait()
    feeding.join(5)
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), timed_out
