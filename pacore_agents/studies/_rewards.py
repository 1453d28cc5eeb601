"""Rewards for trainers, graded exactly as studies grade: ``compute_score`` (verl's custom reward
function), ``trl_reward`` (TRL's reward function signature) and ``reward_func`` (OpenRLHF's
``--remote_rm_url`` file).

Contract:
- The answer is the text after the last ``</think>`` (PaCoRe's compaction; the whole text if
  there is none). Math: graded by the study ``Grader`` (math-verify in worker processes, a
  SIGALRM budget per check): 1.0 if correct, 0.0 if wrong, timed out or in error. Code: the
  program is taken from that text as the study's code grader takes it (``extract_code``: the
  last fenced block) and run on the row's tests (its ground truth, a ``CodeTests`` JSON) in the
  sandbox, with the comparison mode, timeouts and limits of the study that graded it (the row's
  ``grading``, written by the export; the process's defaults without it); the reward is the
  test pass rate (1.0 exactly when the study graded it correct), 0.0 if the sandbox itself
  failed (logged). The isolation is this process's (``configure_rewards(sandbox=)``, bubblewrap
  by default), never a row's.
- The grader is chosen at ONE point, ``grader_for(data_source)``: an exported ``data_source``
  is ``pacore/<domain>/<dataset>`` (a bare ``math``/``code`` works too).
- One math grader per process, started on first use (``configure_rewards`` sets its workers
  and timeout first), closed at exit; its workers die with the process. Code runs at most
  ``workers`` sandboxes at once per process; the first code reward of a setting runs the
  canaries (``PacoreError`` if the sandbox does not execute right). Batches are graded by up to
  ``2 * workers`` threads at once. Verdicts are not cached (a trainer grades millions).
- The reward functions are synchronous and block their calling thread (verl and OpenRLHF call
  them from plain worker threads/processes with no event loop); ``acompute_score`` is the
  coroutine form: it runs the same check in a worker thread and never blocks the loop.
- Imports are absolute, so verl and OpenRLHF can load this file by its path.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from pydantic import ValidationError

from pacore_agents._errors import ConfigError
from pacore_agents._logging import get_logger
from pacore_agents._roles import pacore_compact
from pacore_agents.execution import CodeTests, ExecutionSettings, check_canaries
from pacore_agents.studies._code_grading import grade_code_blocking, parse_tests
from pacore_agents.studies._grading import Grade, Grader
from pacore_agents.studies._spec import GradingSpec

DATA_SOURCE_PREFIX = "pacore"
DOMAINS = ("math", "code")
#: the study grader's defaults (``GradingSpec``): one worker, 5 s per check; code in bubblewrap
_settings: dict[str, Any] = {"workers": 1, "timeout": 5.0, "sandbox": "bwrap"}
_grader: Grader | None = None
_lock = threading.Lock()
_sandboxes = threading.BoundedSemaphore(1)
_canaried: set[ExecutionSettings] = set()
_canary_lock = threading.Lock()
log = get_logger("pacore_agents.studies")


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


def configure_rewards(*, workers: int = 1, timeout: float = 5.0, sandbox: str = "bwrap") -> None:
    """Set the process's reward graders: ``workers`` math-verify processes (and sandboxes at
    once), ``timeout`` seconds per math check, the code sandbox (``bwrap``, or ``none``: NO
    isolation). Call before the first reward; a grader already started is replaced."""
    global _grader, _sandboxes
    if workers < 1 or timeout <= 0:
        raise ConfigError("configure_rewards: workers must be >= 1 and timeout > 0")
    if sandbox not in ("bwrap", "none"):
        raise ConfigError(f"configure_rewards: sandbox {sandbox!r}: use 'bwrap' or 'none'")
    if sandbox == "none":
        log.warning("code rewards WITHOUT A SANDBOX (configure_rewards(sandbox='none')): model-written "
                    "programs run as this user, with this user's files, network and processes")
    with _lock:
        _settings.update(workers=workers, timeout=timeout, sandbox=sandbox)
        _sandboxes = threading.BoundedSemaphore(workers)
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


def reward_grading(grading: GradingSpec) -> str:
    """What a reward needs to grade as the study did, as the JSON an exported row carries
    (``grading``): the grader and, for code, its comparison mode, timeouts and limits (not
    its isolation: that is the trainer process's)."""
    if grading.grader == "code":
        return json.dumps({"grader": "code", "code": grading.code.model_dump(mode="json", exclude={"sandbox"})},
                          sort_keys=True)
    return json.dumps({"grader": "math", "timeout": grading.timeout}, sort_keys=True)


@functools.lru_cache(maxsize=64)
def _code_settings(grading: str | None, sandbox: str) -> ExecutionSettings:
    if not grading:
        return ExecutionSettings(sandbox=sandbox)  # type: ignore[arg-type]
    try:
        data = json.loads(grading)
        if not isinstance(data, dict) or data.get("grader") != "code":
            raise ValueError("it is not a code grader's")
        code = {k: v for k, v in (data.get("code") or {}).items() if k != "sandbox"}
        return ExecutionSettings.model_validate({**code, "sandbox": sandbox})
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"a code row's grading settings are not valid ({exc}): give the row's `grading` "
                          "as `pacore study export` wrote it, or none for the defaults") from exc


@functools.lru_cache(maxsize=8)  # a LiveCodeBench problem's tests can be tens of megabytes
def _tests(ground_truth: str) -> CodeTests:
    return parse_tests(ground_truth)


def _checked(settings: ExecutionSettings) -> None:
    """Run the canaries once per process and setting (``PacoreError`` if they fail)."""
    with _canary_lock:
        if settings not in _canaried:
            check_canaries(settings)
            _canaried.add(settings)


def _grade_math(solution: str, ground_truth: str, grading: str | None) -> Grade:
    return _shared_grader().grade_blocking(ground_truth, pacore_compact(solution))


def _grade_code(solution: str, ground_truth: str, grading: str | None) -> Grade:
    settings = _code_settings(grading, str(_settings["sandbox"]))
    tests = _tests(ground_truth)
    _checked(settings)
    with _sandboxes:
        grade = grade_code_blocking(tests, solution, settings)
    if grade.status == "error":
        log.warning("code reward: the sandbox failed, scored 0.0", detail=grade.detail)
    return grade


_GRADERS: dict[str, Callable[[str, str, str | None], Grade]] = {"math": _grade_math, "code": _grade_code}


def grader_for(data_source: str) -> Callable[[str, str, str | None], Grade]:
    """The one dispatch point: ``(solution_str, ground_truth, grading) -> Grade`` for ``data_source``."""
    return _GRADERS[domain_of(data_source)]


def grade_solution(data_source: str, solution_str: str, ground_truth: str, grading: str | None = None) -> Grade:
    """The study's verdict on ``solution_str`` (blocking; thread-safe); ``grading`` is the
    row's grading settings (``reward_grading``), None for the defaults."""
    return grader_for(data_source)(solution_str or "", str(ground_truth), grading or None)


def reward_of(grade: Grade) -> float:
    """The reward of a verdict: the pass rate for code (0.0 if the sandbox failed), else 1.0
    if correct and 0.0 otherwise."""
    if grade.pass_rate is not None:
        return 0.0 if grade.status == "error" else float(grade.pass_rate)
    return 1.0 if grade.correct else 0.0


def _grading_of(extra_info: dict[str, Any] | None) -> str | None:
    value = extra_info.get("grading") if isinstance(extra_info, dict) else None
    return str(value) if value else None


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict[str, Any] | None = None) -> float:
    """verl's custom reward function: the reward of ``solution_str`` (see the module contract);
    ``extra_info["grading"]`` as exported. (``custom_reward_function.path`` = this file,
    ``.name`` = ``compute_score``.)"""
    return reward_of(grade_solution(data_source, solution_str, ground_truth, _grading_of(extra_info)))


async def acompute_score(data_source: str, solution_str: str, ground_truth: str,
                         extra_info: dict[str, Any] | None = None) -> float:
    """``compute_score`` as a coroutine: the check runs in a worker thread, the loop never blocks."""
    return await anyio.to_thread.run_sync(compute_score, data_source, solution_str, ground_truth, extra_info,
                                          abandon_on_cancel=True)


def score_batch(data_sources: Sequence[str], solutions: Sequence[str], ground_truths: Sequence[str],
                gradings: Sequence[str | None] | None = None) -> list[float]:
    """``compute_score`` over aligned lists, up to ``2 * workers`` checks at once, in order."""
    gradings = list(gradings) if gradings is not None else [None] * len(solutions)
    if not len(data_sources) == len(solutions) == len(ground_truths) == len(gradings):
        raise ConfigError(f"rewards: {len(solutions)} completions but {len(ground_truths)} ground "
                          f"truths, {len(data_sources)} data sources and {len(gradings)} grading settings")
    for source in set(data_sources):
        grader_for(source)  # an unknown domain fails before any check
    infos = [{"grading": g} for g in gradings]
    if len(solutions) <= 1:
        return [compute_score(*args) for args in zip(data_sources, solutions, ground_truths, infos, strict=True)]
    threads = min(len(solutions), 2 * int(_settings["workers"]))
    with ThreadPoolExecutor(threads, thread_name_prefix="pacore-reward") as pool:
        return list(pool.map(compute_score, data_sources, solutions, ground_truths, infos))


def _completion_text(completion: Any) -> str:
    """A TRL completion: text (standard) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    raise ConfigError(f"trl_reward: a completion is {type(completion).__name__}, not text or messages")


def trl_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL's reward function signature (``GRPOTrainer(reward_funcs=[trl_reward])``): the
    dataset's ``ground_truth``, ``data_source`` and ``grading`` columns arrive as keyword lists."""
    if "ground_truth" not in kwargs:
        raise ConfigError("trl_reward needs the dataset's ground_truth column (export with --format trl)")
    sources = kwargs.get("data_source") or [f"{DATA_SOURCE_PREFIX}/math/unknown"] * len(completions)
    return score_batch(list(sources), [_completion_text(c) for c in completions],
                       [str(g) for g in kwargs["ground_truth"]], kwargs.get("grading"))


def openrlhf_label(data_source: str, ground_truth: str, grading: str) -> str:
    """The label an OpenRLHF row carries (it passes nothing else to ``reward_func``): a math
    row's ground truth as it is; for code, one JSON object with the data source, the tests and
    the grading settings."""
    if domain_of(data_source) == "math":
        return ground_truth
    return json.dumps({"data_source": data_source, "ground_truth": ground_truth, "grading": grading})


def _label_inputs(label: str) -> tuple[str, str, str | None]:
    """(data source, ground truth, grading) of an OpenRLHF label (``openrlhf_label``)."""
    if label.startswith("{"):
        try:
            data = json.loads(label)
        except ValueError:
            data = None
        if isinstance(data, dict) and {"data_source", "ground_truth"} <= data.keys():
            return str(data["data_source"]), str(data["ground_truth"]), data.get("grading")
    return f"{DATA_SOURCE_PREFIX}/math/openrlhf", label, None


def _response_of(query: str, prompt: str) -> str:
    """The response in an OpenRLHF query (prompt + response, decoded)."""
    if query.startswith(prompt):
        return query[len(prompt):]
    at = query.rfind(prompt) if prompt else -1
    return query[at + len(prompt):] if at >= 0 else query


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``reward_func`` (``--remote_rm_url`` = this file, ``--label_key label``):
    rewards and scores (torch tensors when torch is installed, else lists); a plain label is a
    math row's answer, a code row's label carries its tests (``openrlhf_label``)."""
    responses = [_response_of(q, p) for q, p in zip(queries, prompts, strict=True)]
    inputs = [_label_inputs(str(label)) for label in labels]
    scores = score_batch([i[0] for i in inputs], responses, [i[1] for i in inputs], [i[2] for i in inputs])
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return {"rewards": scores, "scores": scores, "extra_logs": {}}
    tensor = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": tensor, "scores": tensor.clone(), "extra_logs": {}}
