"""Rewards for trainers, graded exactly as studies grade: ``compute_score`` (verl's custom reward
function), ``trl_reward`` (TRL's reward function signature) and ``reward_func`` (OpenRLHF's
``--remote_rm_url`` file).

Contract:
- The answer is the text after the last ``</think>`` (PaCoRe's compaction; the whole text if
  there is none), graded by the study ``Grader`` (math-verify in worker processes, a SIGALRM
  budget per check): 1.0 if correct, 0.0 if wrong, timed out or in error.
- The grader is chosen at ONE point, ``grader_for(data_source)``: an exported ``data_source``
  is ``pacore/<domain>/<dataset>`` (a bare ``math``/``code`` works too). ``math`` is
  implemented; ``code`` (test pass rate in the sandbox) raises ``ConfigError`` naming what is
  missing until the code-execution package is part of the build.
- One grader per process, started on first use (``configure_rewards`` sets its workers and
  timeout first), closed at exit; its workers die with the process. Batches are graded by up
  to ``2 * workers`` threads at once. Verdicts are not cached (a trainer grades millions).
- Imports are absolute, so verl and OpenRLHF can load this file by its path.
"""

from __future__ import annotations

import atexit
import importlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from pacore_agents._errors import ConfigError
from pacore_agents._roles import pacore_compact
from pacore_agents.studies._grading import Grade, Grader

DATA_SOURCE_PREFIX = "pacore"
DOMAINS = ("math", "code")
#: the study grader's defaults (``GradingSpec``): one worker, 5 s per check
_settings: dict[str, float] = {"workers": 1, "timeout": 5.0}
_grader: Grader | None = None
_lock = threading.Lock()


def data_source_for(domain: str, dataset: str) -> str:
    """The ``data_source`` an exported row carries: ``pacore/<domain>/<dataset>``."""
    return f"{DATA_SOURCE_PREFIX}/{domain}/{dataset}"


def domain_of(data_source: str) -> str:
    """The grading domain a ``data_source`` names (see the module contract)."""
    parts = data_source.split("/")
    domain = parts[1] if len(parts) >= 3 and parts[0] == DATA_SOURCE_PREFIX else data_source
    if domain not in DOMAINS:
        raise ConfigError(f"data_source {data_source!r} names no pacore_agents grader: expected "
                          f"'{DATA_SOURCE_PREFIX}/<{'|'.join(DOMAINS)}>/<dataset>' (as exported)")
    return domain


def configure_rewards(*, workers: int = 1, timeout: float = 5.0) -> None:
    """Set the process's reward grader: ``workers`` math-verify processes, ``timeout`` seconds
    per check. Call before the first reward; a grader already started is replaced."""
    global _grader
    if workers < 1 or timeout <= 0:
        raise ConfigError("configure_rewards: workers must be >= 1 and timeout > 0")
    with _lock:
        _settings.update(workers=workers, timeout=timeout)
        old, _grader = _grader, None
    if old is not None:
        _close(old)


def _close(grader: Grader) -> None:
    anyio.run(grader.aclose)


def _shared_grader() -> Grader:
    global _grader
    with _lock:
        if _grader is None:
            _grader = Grader(workers=int(_settings["workers"]), timeout=_settings["timeout"], cache=False)
        return _grader


@atexit.register
def close_rewards() -> None:
    """Stop the process's reward grader (its workers); the next reward starts a new one."""
    global _grader
    with _lock:
        grader, _grader = _grader, None
    if grader is not None:
        _close(grader)


def _grade_math(solution: str, ground_truth: str) -> Grade:
    return _shared_grader().grade_blocking(ground_truth, pacore_compact(solution))


def _grade_code(solution: str, ground_truth: str) -> Grade:
    raise ConfigError("code rewards (test pass rate in the sandbox) need pacore_agents.execution "
                      "(grader = 'code'), which this build does not have yet: only math rows can be scored")


_GRADERS: dict[str, Callable[[str, str], Grade]] = {"math": _grade_math, "code": _grade_code}


def grader_for(data_source: str) -> Callable[[str, str], Grade]:
    """The one dispatch point: ``(solution_str, ground_truth) -> Grade`` for ``data_source``."""
    return _GRADERS[domain_of(data_source)]


def grade_solution(data_source: str, solution_str: str, ground_truth: str) -> Grade:
    """The study's verdict on ``solution_str`` (blocking; thread-safe)."""
    return grader_for(data_source)(solution_str or "", str(ground_truth))


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict[str, Any] | None = None) -> float:
    """verl's custom reward function: 1.0 if ``solution_str`` is correct, else 0.0.
    (``custom_reward_function.path`` = this file, ``.name`` = ``compute_score``.)"""
    return 1.0 if grade_solution(data_source, solution_str, ground_truth).correct else 0.0


def score_batch(data_sources: Sequence[str], solutions: Sequence[str], ground_truths: Sequence[str]) -> list[float]:
    """``compute_score`` over aligned lists, up to ``2 * workers`` checks at once, in order."""
    if not len(data_sources) == len(solutions) == len(ground_truths):
        raise ConfigError(f"rewards: {len(solutions)} completions but {len(ground_truths)} ground "
                          f"truths and {len(data_sources)} data sources")
    for source in set(data_sources):
        grader_for(source)  # an unknown or unimplemented domain fails before any check
    if len(solutions) <= 1:
        return [compute_score(d, s, g) for d, s, g in zip(data_sources, solutions, ground_truths, strict=True)]
    threads = min(len(solutions), 2 * int(_settings["workers"]))
    with ThreadPoolExecutor(threads, thread_name_prefix="pacore-reward") as pool:
        return list(pool.map(compute_score, data_sources, solutions, ground_truths))


def _completion_text(completion: Any) -> str:
    """A TRL completion: text (standard) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    raise ConfigError(f"trl_reward: a completion is {type(completion).__name__}, not text or messages")


def trl_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL's reward function signature (``GRPOTrainer(reward_funcs=[trl_reward])``): the
    dataset's ``ground_truth`` and ``data_source`` columns arrive as keyword lists."""
    if "ground_truth" not in kwargs:
        raise ConfigError("trl_reward needs the dataset's ground_truth column (export with --format trl)")
    sources = kwargs.get("data_source") or [f"{DATA_SOURCE_PREFIX}/math/unknown"] * len(completions)
    return score_batch(list(sources), [_completion_text(c) for c in completions],
                       [str(g) for g in kwargs["ground_truth"]])


def _response_of(query: str, prompt: str) -> str:
    """The response in an OpenRLHF query (prompt + response, decoded)."""
    if query.startswith(prompt):
        return query[len(prompt):]
    at = query.rfind(prompt) if prompt else -1
    return query[at + len(prompt):] if at >= 0 else query


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``reward_func`` (``--remote_rm_url`` = this file, ``--label_key label``):
    rewards and scores (torch tensors when torch is installed, else lists); math rows."""
    responses = [_response_of(q, p) for q, p in zip(queries, prompts, strict=True)]
    scores = score_batch([f"{DATA_SOURCE_PREFIX}/math/openrlhf"] * len(responses), responses,
                         [str(label) for label in labels])
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return {"rewards": scores, "scores": scores, "extra_logs": {}}
    tensor = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": tensor, "scores": tensor.clone(), "extra_logs": {}}
