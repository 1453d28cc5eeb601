"""The shared state of a search: the dataset's splits, the store and journal fingerprints,
the Optuna journal (``JournalFileBackend`` with its file lock) and the trials' asking,
enqueueing and attributes, the workers' lock files, and the Pareto front (see ``_search``
for the contract they serve).

A worker's lock file (``OUT/workers/<token>.lock``) is held (``fcntl.flock``) while it lives:
the kernel releases it when the process dies, even by ``kill -9``, so a free lock means a dead
worker. Adopting a dead worker's token takes its lock, so two live workers never adopt one.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from pacore_agents._errors import ConfigError
from pacore_agents._messages import Problem

from ._search_space import PRUNE, SearchSettings, SearchSpec, label_of
from ._spec import StudySpec


def split_problems(problems: Sequence[Problem], search: int, heldout: int, seed: int
                   ) -> tuple[list[Problem], list[Problem]]:
    """(search split, held-out split) of the module contract."""
    if search + heldout > len(problems):
        raise ConfigError(f"the splits need {search} + {heldout} problems and the dataset has "
                          f"{len(problems)}: lower search_problems / heldout_problems or use more data")
    order = list(problems)
    random.Random(seed).shuffle(order)
    return order[:search], order[search:search + heldout]


def store_fingerprint(study: StudySpec, split: str, problems: Sequence[Problem]) -> str:
    """The study's fingerprint without its arms (they are added as the search goes), with the
    split's problem ids."""
    data = json.loads(study.fingerprint())
    data.pop("arms", None)
    data["split"] = {"name": split, "ids": [p.id for p in problems]}
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def space_fingerprint(spec: SearchSpec) -> str:
    keep = spec.settings.model_dump(mode="json", include={"dimension", "arm", "prune", "sampler", "seed", "cost"})
    return json.dumps(keep, sort_keys=True, ensure_ascii=False)


def open_journal(out: Path, spec: SearchSpec | None = None, *, seed_offset: int = 0) -> optuna.Study:
    """The search's Optuna study in ``out`` (created with ``spec``; without, it must exist).
    The sampler is seeded ``[search] seed + seed_offset`` (a worker joining k live ones: k, so
    that workers do not propose the same sequence)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = out / "journal.log"
    if spec is None and not path.exists():
        raise ConfigError(f"{out} holds no search (journal.log is missing): run `pacore study search` first")
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path) + ".lock")))
    if spec is None:
        return optuna.load_study(study_name="search", storage=storage)
    s = spec.settings
    seed = s.seed + seed_offset
    sampler: optuna.samplers.BaseSampler
    if s.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    elif s.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(study_name="search", storage=storage, sampler=sampler, load_if_exists=True,
                                directions=["maximize", "minimize"])
    fingerprint = space_fingerprint(spec)
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", fingerprint)
    elif saved != fingerprint:
        raise ConfigError(f"{out} holds a search over a different space ([search] dimension, arm, prune, "
                          "sampler, seed or cost differ): use a new --out dir")
    return study


class WorkerLocks:
    """This worker's lock file, and the test of another worker's (see the module contract)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        #: live workers when this one started (before its own lock existed)
        self.others = sum(1 for f in folder.glob("*.lock") if self._held(f))
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.mine = self._open(self.token)
        fcntl.flock(self.mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.adopted: dict[str, IO[str]] = {}

    @staticmethod
    def _held(path: Path) -> bool:
        with path.open("a", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
        return False

    def _open(self, token: str) -> IO[str]:
        return (self.folder / f"{token}.lock").open("a", encoding="utf-8")

    def adopt(self, token: str) -> bool:
        """Take a dead worker's lock (True), or False if its worker (or an adopter) lives."""
        handle = self._open(token)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.adopted[token] = handle
        return True

    def alive(self, token: str) -> bool:
        if token == self.token or token in self.adopted:
            return True
        path = self.folder / f"{token}.lock"
        return path.exists() and self._held(path)  # closing the handle releases a lock it took

    def release(self, token: str) -> None:
        """Done with an adopted worker's trial: its file goes, then its lock."""
        handle = self.adopted.pop(token, None)
        if handle is not None:
            (self.folder / f"{token}.lock").unlink(missing_ok=True)
            handle.close()

    def close(self) -> None:
        """Release every lock; this worker's file goes (a missing file is a dead worker)."""
        for token in list(self.adopted):
            self.release(token)
        (self.folder / f"{self.token}.lock").unlink(missing_ok=True)
        self.mine.close()


def file_lock(path: Path) -> IO[str]:
    handle = path.open("a", encoding="utf-8")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def pareto_front(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The results no other result dominates (accuracy >=, cost <=, one strictly), by cost."""
    front = [r for r in results if not any(
        o["accuracy"] >= r["accuracy"] and o["cost"] <= r["cost"]
        and (o["accuracy"] > r["accuracy"] or o["cost"] < r["cost"]) for o in results)]
    return sorted(front, key=lambda r: (r["cost"], -r["accuracy"], r["arm"]))


def best_builtin(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    builtins = [r for r in results if r.get("builtin")]
    return min(builtins, key=lambda r: (-r["accuracy"], r["cost"], r["arm"])) if builtins else None


def ask_point(study: optuna.Study, settings: SearchSettings, token: str) -> tuple[optuna.trial.Trial, dict[str, Any]]:
    """Ask for a trial (marked as ``token``'s) and its parameters: every dimension's label or
    number, and ``prune`` with ``[search.prune]``."""
    trial = study.ask()
    trial.set_user_attr("worker", token)
    params: dict[str, Any] = {}
    for d in settings.dimension:
        if d.choices is not None:
            params[d.key] = trial.suggest_categorical(d.key, d.labels())
        elif d.integer:
            params[d.key] = trial.suggest_int(d.key, int(d.low or 0), int(d.high or 0), step=int(d.step or 1))
        else:
            params[d.key] = trial.suggest_float(d.key, float(d.low or 0), float(d.high or 0), step=d.step, log=d.log)
    if settings.prune is not None:
        params[PRUNE] = trial.suggest_categorical(PRUNE, settings.prune.choices())
    return trial, params


def enqueue_points(study: optuna.Study, settings: SearchSettings) -> None:
    """Enqueue the built-in and enqueued points (unpruned), each once (``skip_if_exists``)."""
    for point in settings.builtin_points():
        params: dict[str, Any] = {d.key: label_of(point[d.key]) if d.choices is not None else point[d.key]
                                  for d in settings.dimension}
        if settings.prune is not None:
            params[PRUNE] = 0.0
        study.enqueue_trial(params, user_attrs={"builtin": True}, skip_if_exists=True)


def set_trial_attr(study: optuna.Study, number: int, key: str, value: Any) -> None:
    """Set a user attribute of trial ``number`` (any state but finished). ``Study`` has no
    setter by number (a ``FrozenTrial`` cannot set one): the storage's, by the trial's id."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    storage.set_trial_user_attr(trial_id, key, value)
