"""What ``pacore view PATH`` shows, read only: a trace file, a server's ``--trace-dir``, or a
study's ``--out`` folder.

Contract: nothing here writes to PATH (a study's SQLite store is opened ``mode=ro``; a trace
file is read whole). Each method reads afresh, so a study or server writing meanwhile is seen
at its last committed row / completed file (the server writes each trace atomically); the
study view's data is cached per ``version()`` (rows stored, last write; while rows keep coming,
recomputed at most once per ``RECOMPUTE`` times its computing time), trace files and their
views per (size, mtime) for the last ``CACHED`` files. Methods are blocking:
async callers run them in worker threads. A bad PATH or request raises ``ConfigError`` with a
one-line message; a trace file that does not parse is listed with its error, never fatal.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from pacore_agents._errors import ConfigError
from pacore_agents.studies._store import ResultStore

from ._run import ParsedRun, parse_run, run_view
from ._study import study_view

SourceKind = Literal["trace", "trace-dir", "study"]
#: trace files (and run views) kept parsed while unchanged
CACHED = 8
#: a changing study's view is recomputed at most once per this many times its computing time
RECOMPUTE = 3.0


@dataclass
class _Cached:
    key: str
    view: dict[str, Any]
    fresh_until: float
_TRACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*\.json")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return st.st_size, st.st_mtime_ns


def _runs_of(path: Path) -> list[ParsedRun]:
    """The runs of a trace file (one, or the ``data`` of a list of n, as ``pacore serve`` writes)."""
    data = _load_json(path)
    items = data["data"] if isinstance(data, dict) and data.get("object") == "list" else [data]
    try:
        return [parse_run(item) for item in items]
    except (ValidationError, TypeError, KeyError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"{path} is not a pacore trace ({where or 'top level'}: {first.get('msg')})") from exc


class ViewSource:
    """The data behind the viewer, for one PATH (see the module)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"{self.path} does not exist: give a trace JSON file, a --trace-dir or a study --out folder")
        self.kind: SourceKind
        if self.path.is_file():
            self.kind = "trace"
        elif (self.path / ResultStore.DB_NAME).exists():
            self.kind = "study"
            self._store().close()
        else:
            self.kind = "trace-dir"
        self._lock = threading.Lock()
        self._study_cache: _Cached | None = None
        self._runs_cache: OrderedDict[Path, tuple[tuple[int, int], list[ParsedRun]]] = OrderedDict()
        self._views_cache: OrderedDict[tuple[str, int, tuple[int, int]], dict[str, Any]] = OrderedDict()
        if self.kind == "trace":
            self._runs(self.path)  # fail now, with the reason, on a file that is no trace

    def _runs(self, path: Path) -> list[ParsedRun]:
        """``_runs_of(path)``, kept for the last ``CACHED`` files while unchanged (size, mtime)."""
        stamp = _stamp(path)
        with self._lock:
            hit = self._runs_cache.get(path)
            if hit is not None and hit[0] == stamp:
                self._runs_cache.move_to_end(path)
                return hit[1]
        runs = _runs_of(path)
        with self._lock:
            self._runs_cache[path] = (stamp, runs)
            while len(self._runs_cache) > CACHED:
                self._runs_cache.popitem(last=False)
        return runs

    def _store(self) -> ResultStore:
        return ResultStore.open_readonly(self.path)

    def _trace_files(self) -> list[Path]:
        if self.kind == "trace":
            return [self.path]
        try:
            return sorted((p for p in self.path.iterdir() if _TRACE_NAME.fullmatch(p.name) and p.is_file()),
                          key=lambda p: (p.stat().st_mtime, p.name))
        except OSError as exc:
            raise ConfigError(f"cannot list {self.path}: {exc.strerror or exc}") from exc

    def version(self) -> str:
        """Changes whenever what the view shows changes (a row stored, a trace written)."""
        if self.kind == "study":
            store = self._store()
            try:
                n, last = store.version()
            finally:
                store.close()
            return f"{n}:{last!r}"
        stamps = []
        for p in self._trace_files():
            try:
                st = p.stat()
            except OSError:
                continue
            stamps.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
        return str(hash("|".join(stamps)) & 0xFFFFFFFFFFFF)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "name": self.path.name, "version": self.version()}

    def traces(self) -> list[dict[str, Any]]:
        """One entry per run of each trace file (oldest file first): its name, index and
        summary, or the error that kept it from loading."""
        out: list[dict[str, Any]] = []
        for p in self._trace_files():
            try:
                runs = self._runs(p)
            except ConfigError as exc:
                out.append({"name": p.name, "index": 0, "error": str(exc)})
                continue
            for i, parsed in enumerate(runs):
                run = parsed.data
                out.append({"name": p.name, "index": i, "problem_id": run.get("problem_id"),
                            "answer": run.get("answer"), "error": run.get("error"),
                            "topology": run.get("topology_name"), "nodes": len(parsed.records),
                            "failed": sum(n.outcome != "ok" for n in parsed.records),
                            "effective_ttc": run.get("effective_ttc"), "started_at": run.get("started_at")})
        return out

    def trace(self, name: str, index: int = 0) -> dict[str, Any]:
        """The run view of run ``index`` of the trace file ``name`` (a file in PATH)."""
        files = {p.name: p for p in self._trace_files()}
        if name not in files:
            raise ConfigError(f"no trace {name!r} in {self.path}")
        path = files[name]
        key = (name, index, _stamp(path))
        with self._lock:
            if key in self._views_cache:
                return self._views_cache[key]
        runs = self._runs(path)
        if not 0 <= index < len(runs):
            raise ConfigError(f"{name} holds {len(runs)} run(s): no run {index}")
        view = run_view(runs[index], title=name if len(runs) == 1 else f"{name} [{index}]")
        with self._lock:
            self._views_cache[key] = view
            while len(self._views_cache) > CACHED:
                self._views_cache.popitem(last=False)
        return view

    def study(self) -> dict[str, Any]:
        """The study view, cached until a row is written; while rows keep coming it is recomputed
        at most once per ``RECOMPUTE`` times its last computing time (a 5,000-row study's
        bootstrap takes seconds: the page polls every 2 s)."""
        self._need("study")
        store = self._store()
        try:
            n, last = store.version()
            key = f"{n}:{last!r}"
            with self._lock:
                cached = self._study_cache
                if cached is not None and (cached.key == key or time.monotonic() < cached.fresh_until):
                    return cached.view
            started = time.monotonic()
            view = study_view(store)
        finally:
            store.close()
        took = time.monotonic() - started
        with self._lock:
            self._study_cache = _Cached(key, view, time.monotonic() + RECOMPUTE * took)
        return view

    def run(self, arm: str, problem: str, sample: int) -> dict[str, Any]:
        """The run view of one stored sample of the study, graded."""
        self._need("study")
        store = self._store()
        try:
            found = store.sample(arm, problem, sample)
        finally:
            store.close()
        if found is None:
            raise ConfigError(f"the study holds no sample ({arm!r}, {problem!r}, {sample})")
        outcome, trace = found
        return run_view(parse_run(trace), outcome, title=f"{arm} · {problem} · sample {sample}")

    def bundle(self) -> dict[str, Any]:
        """Everything the view can show, for an export: the source, and every run's view."""
        out: dict[str, Any] = {"source": self.describe(), "runs": {}}
        if self.kind == "study":
            out["study"] = self.study()
            store = self._store()
            try:
                for outcome, trace in store.samples():
                    view = run_view(parse_run(trace), outcome,
                                    title=f"{outcome.arm} · {outcome.problem_id} · sample {outcome.sample}")
                    out["runs"][run_key(outcome.arm, outcome.problem_id, outcome.sample)] = view
            finally:
                store.close()
            return out
        out["traces"] = self.traces()
        for entry in out["traces"]:
            if entry.get("nodes") is not None:
                out["runs"][trace_key(entry["name"], entry["index"])] = self.trace(entry["name"], entry["index"])
        return out

    def _need(self, kind: SourceKind) -> None:
        if self.kind != kind:
            raise ConfigError(f"{self.path} is a {self.kind}, not a {kind}")


def run_key(arm: str, problem: str, sample: int) -> str:
    """The key of a study run in an export's ``runs`` (the browser builds the same)."""
    return json.dumps(["run", arm, problem, sample], separators=(",", ":"), ensure_ascii=False)


def trace_key(name: str, index: int) -> str:
    """The key of a trace file's run in an export's ``runs``."""
    return json.dumps(["trace", name, index], separators=(",", ":"), ensure_ascii=False)
