"""The crash-safe, resumable results store of a study: SQLite (stdlib) in WAL mode.

Contract:
- One ``results`` row per (arm, problem, sample), UNIQUE; a row is written in ONE transaction
  when its sample has finished and been graded (graded summary + the full trace JSON), so a
  kill (even ``kill -9``) loses at most the samples in flight, never a stored one.
- ``pool`` holds shared round-1 trajectories, one row per (problem, sample, index).
- The out dir keeps ``study.toml`` (the spec as given, its secrets redacted: see
  ``redact_spec_text``) and the spec's fingerprint (which holds no endpoint or key); opening it
  with a different spec raises ``ConfigError`` naming the differing keys (data is never
  overwritten).
- Every call from async code goes through ``anyio.to_thread`` (one thread at a time).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import anyio
from pydantic import BaseModel, Field

from pacore_agents._engine import Completion
from pacore_agents._errors import ConfigError

from ._spec import StudySpec

T = TypeVar("T")
SampleKind = Literal["topology", "single", "self-consistency"]
#: ``skipped``: a policy never launched the node; ``cancelled``: a quorum cancelled it (its
#: tokens count); both hold no message to grade
NodeStatus = Literal["correct", "wrong", "timeout", "error", "failed", "skipped", "cancelled"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    arm TEXT NOT NULL, problem_id TEXT NOT NULL, sample INTEGER NOT NULL,
    outcome_json TEXT NOT NULL, trace_json TEXT NOT NULL, created_at REAL NOT NULL,
    UNIQUE (arm, problem_id, sample));
CREATE TABLE IF NOT EXISTS pool (
    problem_id TEXT NOT NULL, sample INTEGER NOT NULL, idx INTEGER NOT NULL,
    completion_json TEXT NOT NULL, UNIQUE (problem_id, sample, idx));
"""


class NodeOutcome(BaseModel):
    """One node (trajectory) of a sample, graded: what the metrics need."""

    id: str
    round: int
    agent: int
    inputs: list[str] = Field(default_factory=list)
    tokens: int = 0
    status: NodeStatus
    answer: str | None = None
    cross_refs: bool = False
    #: code grading: each test's outcome (``TestStatus``) in order, and the share passed
    tests: list[str] | None = None
    pass_rate: float | None = None


class SampleOutcome(BaseModel):
    """One finished (arm, problem, sample), graded. For a self-consistency arm ``nodes`` are
    its independent trajectories and ``status``/``answer`` the vote over all of them."""

    arm: str
    problem_id: str
    sample: int
    kind: SampleKind
    status: NodeStatus
    answer: str | None = None
    effective_ttc: int
    sink: str | None = None
    nodes: list[NodeOutcome]
    degraded: bool = False
    elapsed: float = 0.0
    #: the node whose message is the answer when it is not the sink (a consensus stop's plurality)
    answered_by: str | None = None
    #: what the arm's policies did: samples fired per policy, nodes skipped, stragglers
    #: cancelled and their tokens (``policy_counts``); empty without policies
    policy: dict[str, int] = Field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.arm, self.problem_id, self.sample)


SECRETS_NOTE = "# secrets redacted (***): put them back before rerunning with this copy\n"
_SECRET_LINE = re.compile(r"api_key|://[^\s/@'\"]*@")
_API_KEY_VALUE = re.compile(r"""(["']?\bapi_key\b["']?\s*=\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*')""")


def _spec_secrets(data: Any) -> set[str]:
    engine = data.get("engine") if isinstance(data, dict) else None
    if not isinstance(engine, dict):
        return set()
    urls = engine.get("base_urls")
    found = [engine.get("api_key"), *(urlsplit(u).netloc.rpartition("@")[0]
                                      for u in (urls if isinstance(urls, list) else []) if isinstance(u, str))]
    return {s for s in found if isinstance(s, str) and s and s != "***"}


def redact_spec_text(text: str) -> str:
    """``text`` (a study file) with ``engine.api_key`` and the credentials of ``engine.base_urls``
    replaced by ``***``, everything else as written (a note heads a redacted copy). A secret
    spelled so that it survives (TOML escapes) costs its line, commented out; never the secret."""
    try:
        secrets = _spec_secrets(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        secrets = set()
    if not secrets:
        return text
    out = _API_KEY_VALUE.sub(r'\1"***"', text)
    for secret in sorted(secrets, key=len, reverse=True):
        out = out.replace(f"://{secret}@", "://***@")
        if len(secret) >= 8:  # long enough to be nothing else: in comments, other spellings
            for spelling in (secret, json.dumps(secret, ensure_ascii=False)[1:-1]):
                out = out.replace(spelling, "***")
    try:
        left = _spec_secrets(tomllib.loads(out))
    except tomllib.TOMLDecodeError:
        left = secrets
    if left:
        out = "\n".join("# (redacted)" if _SECRET_LINE.search(line) else line for line in out.splitlines())
    return SECRETS_NOTE + out


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [path or "(spec)"]


class ResultStore:
    """The SQLite store of one out dir. Open with ``ResultStore.open``; close when done."""

    DB_NAME = "results.sqlite"

    def __init__(self, out_dir: Path, conn: sqlite3.Connection) -> None:
        self.out_dir = out_dir
        self._conn = conn
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    def open(cls, out_dir: str | Path, spec: StudySpec | None = None, spec_text: str | None = None, *,
             fingerprint: str | None = None) -> ResultStore:
        """Open (or create) the store in ``out_dir``. With ``spec``: check it matches the saved
        one (first open saves it). ``fingerprint`` replaces ``spec.fingerprint()`` (a search
        store, whose arms are added as it goes, fingerprints everything but its arms). Without
        either: the dir must already hold a study (for reports)."""
        out = Path(out_dir)
        db = out / cls.DB_NAME
        if spec is None and fingerprint is None and not db.exists():
            raise ConfigError(f"{out} holds no study results ({cls.DB_NAME} is missing): run `pacore study run` first")
        out.mkdir(parents=True, exist_ok=True)
        # timeout: sqlite's busy wait (10 s) from the first statement on. Another process opening
        # the same store at once (two search workers) holds a lock the WAL switch must wait for;
        # sqlite3's default of 5 s was too short there.
        conn = sqlite3.connect(db, timeout=10.0, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            conn.close()
            raise ConfigError(f"{db}: cannot open the store ({exc}); is another process holding it "
                              "locked?") from exc
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        store = cls(out, conn)
        if fingerprint is None and spec is not None:
            fingerprint = spec.fingerprint()
        if fingerprint is not None:
            store._check_spec(fingerprint, spec_text)
        return store

    @classmethod
    def open_readonly(cls, out_dir: str | Path) -> ResultStore:
        """Open the store of ``out_dir`` for reading only (SQLite ``mode=ro``: nothing is created
        or written, a study writing it meanwhile is never blocked; readers see each committed row).
        Raises ``ConfigError`` if it holds no study."""
        out = Path(out_dir)
        db = out / cls.DB_NAME
        if not db.is_file():
            raise ConfigError(f"{out} holds no study results ({cls.DB_NAME} is missing): run `pacore study run` first")
        try:
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("SELECT count(*) FROM results").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the study results {db}: {exc}") from exc
        return cls(out, conn)

    def version(self) -> tuple[int, float]:
        """(rows stored, time of the last one): changes whenever a row is written."""
        with self._lock:
            n, last = self._conn.execute("SELECT count(*), max(created_at) FROM results").fetchone()
        return int(n), float(last or 0.0)

    def _check_spec(self, fingerprint: str, spec_text: str | None) -> None:
        saved = self.get_meta("fingerprint")
        if saved is None:
            with self._lock, self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))
                self._conn.execute("COMMIT")
            saved = self.get_meta("fingerprint")
            if spec_text is not None and not (self.out_dir / "study.toml").exists():
                (self.out_dir / "study.toml").write_text(redact_spec_text(spec_text), encoding="utf-8")
        if saved != fingerprint:
            keys = _diff(json.loads(saved or "{}"), json.loads(fingerprint))
            self.close()
            raise ConfigError(
                f"{self.out_dir} holds a study with a different spec (differs in: {', '.join(keys[:8])}); "
                f"use a new --out dir, or rerun with the saved spec {self.out_dir / 'study.toml'}")

    # --- sync API (reports, tests) ---
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there; return the stored value."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    def replace_meta(self, key: str, old: str, new: str) -> bool:
        """Set ``key`` to ``new`` if it holds ``old`` (atomically); True if it did."""
        with self._lock:
            cur = self._conn.execute("UPDATE meta SET value = ? WHERE key = ? AND value = ?", (new, key, old))
            return cur.rowcount == 1

    def meta_items(self, prefix: str) -> list[tuple[str, str]]:
        """(key, value) of every meta entry whose key starts with ``prefix``, by key."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                                      (len(prefix), prefix)).fetchall()
        return [(str(k), str(v)) for k, v in rows]

    def done_keys(self) -> set[tuple[str, str, int]]:
        with self._lock:
            rows = self._conn.execute("SELECT arm, problem_id, sample FROM results").fetchall()
        return {(str(a), str(p), int(s)) for a, p, s in rows}

    def outcomes(self) -> list[SampleOutcome]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT outcome_json FROM results ORDER BY arm, problem_id, sample").fetchall()
        return [SampleOutcome.model_validate_json(r[0]) for r in rows]

    def trace_json(self, arm: str, problem_id: str, sample: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT trace_json FROM results WHERE arm = ? AND problem_id = ? AND sample = ?",
                (arm, problem_id, sample)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def sample(self, arm: str, problem_id: str, sample: int) -> tuple[SampleOutcome, dict[str, Any]] | None:
        """The stored outcome and trace of one sample, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT outcome_json, trace_json FROM results WHERE arm = ? AND problem_id = ? AND sample = ?",
                (arm, problem_id, sample)).fetchone()
        return None if row is None else (SampleOutcome.model_validate_json(row[0]), dict(json.loads(row[1])))

    def samples(self) -> list[tuple[SampleOutcome, dict[str, Any]]]:
        """Every stored (outcome, trace), by arm, problem and sample."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT outcome_json, trace_json FROM results ORDER BY arm, problem_id, sample").fetchall()
        return [(SampleOutcome.model_validate_json(o), dict(json.loads(t))) for o, t in rows]

    def put(self, outcome: SampleOutcome, trace_json: str) -> bool:
        """Write one finished sample in one transaction; False if its key was already stored."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                (outcome.arm, outcome.problem_id, outcome.sample, outcome.model_dump_json(),
                 trace_json, time.time()))
            return cur.rowcount == 1

    def pool_usage(self) -> tuple[int, int, int]:
        """(rows, prompt tokens, completion tokens) of the shared trajectories in ``pool``."""
        with self._lock:
            rows = self._conn.execute("SELECT completion_json FROM pool").fetchall()
        usage = [Completion.model_validate_json(r[0]).usage for r in rows]
        return len(usage), sum(u.prompt_tokens for u in usage), sum(u.completion_tokens for u in usage)

    def pool_get(self, problem_id: str, sample: int) -> dict[int, Completion]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT idx, completion_json FROM pool WHERE problem_id = ? AND sample = ?",
                (problem_id, sample)).fetchall()
        return {int(i): Completion.model_validate_json(c) for i, c in rows}

    def pool_put(self, problem_id: str, sample: int, items: dict[int, Completion]) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR IGNORE INTO pool VALUES (?, ?, ?, ?)",
                [(problem_id, sample, i, c.model_dump_json()) for i, c in sorted(items.items())])
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- async API (the runner): never blocks the event loop ---
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a sync method in a worker thread (one at a time)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
