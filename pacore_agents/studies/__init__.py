"""Studies: datasets, grading, sweeps over arms, the paper's metrics, reports, resumable results.

``pacore study run study.toml --out runs/x`` runs (or resumes) a study; ``pacore study search``
searches arms for the accuracy / cost Pareto set and confirms it on held-out problems
(``run_search``, docs/search.md); ``pacore study report
runs/x`` prints the metrics table and writes CSV files and PNG plots; ``pacore study export OUT
runs/x --format verl`` turns its synthesis episodes into training data (``export_study``), with
rewards graded as the study grades (``compute_score``, ``trl_reward``, ``reward_func``).

Public names are imported on first use (``pacore_agents._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacore_agents._lazy import attach

if TYPE_CHECKING:
    from ._baselines import budget_matched_sizes, majority_vote
    from ._curation import CurationCounts
    from ._datasets import DatasetSpec, gsm8k_gold, load_problems
    from ._export import ExportOptions, ExportSummary, export_study
    from ._grading import Grade, Grader, extract_answer, gold_latex, normalize_answer
    from ._grading_worker import math_verify_check
    from ._metrics import ArmMetrics, RoundMetrics, compute_metrics
    from ._plan import ArmPlan, plan_study, plan_table
    from ._prune import EdgeUsage, edge_usage
    from ._report import Report, build_report
    from ._rewards import (
        close_rewards,
        compute_score,
        configure_rewards,
        reward_func,
        score_batch,
        trl_reward,
    )
    from ._runner import CROSS_REF_RE, StudyRunSummary, run_study
    from ._search import SearchSummary, run_search
    from ._search_report import SearchReport, build_search_report
    from ._search_space import SearchSpec, load_search, parse_search
    from ._spec import ArmSpec, GradingSpec, RoleOverride, StudySpec
    from ._stats import (
        PairedComparison,
        clustered_interval,
        mcnemar_exact,
        paired_comparison,
        wilson_interval,
    )
    from ._store import NodeOutcome, ResultStore, SampleOutcome
    from ._study_file import load_study, parse_study
    from ._sweeps import SweepSpec, expand_sweep

if not TYPE_CHECKING:  # type checkers see the imports above, not a catch-all __getattr__
    __getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "CROSS_REF_RE",
    "ArmMetrics",
    "ArmPlan",
    "ArmSpec",
    "CurationCounts",
    "DatasetSpec",
    "EdgeUsage",
    "ExportOptions",
    "ExportSummary",
    "Grade",
    "Grader",
    "GradingSpec",
    "NodeOutcome",
    "PairedComparison",
    "Report",
    "ResultStore",
    "RoleOverride",
    "RoundMetrics",
    "SampleOutcome",
    "SearchReport",
    "SearchSpec",
    "SearchSummary",
    "StudyRunSummary",
    "StudySpec",
    "SweepSpec",
    "budget_matched_sizes",
    "build_report",
    "build_search_report",
    "close_rewards",
    "clustered_interval",
    "compute_metrics",
    "compute_score",
    "configure_rewards",
    "edge_usage",
    "expand_sweep",
    "export_study",
    "extract_answer",
    "gold_latex",
    "gsm8k_gold",
    "load_problems",
    "load_search",
    "load_study",
    "majority_vote",
    "math_verify_check",
    "mcnemar_exact",
    "normalize_answer",
    "paired_comparison",
    "parse_search",
    "parse_study",
    "plan_study",
    "plan_table",
    "reward_func",
    "run_search",
    "run_study",
    "score_batch",
    "trl_reward",
    "wilson_interval",
]
