"""Studies: datasets, grading, sweeps over arms, the paper's metrics, reports, resumable results.

``pacore study run study.toml --out runs/x`` runs (or resumes) a study; ``pacore study report
runs/x`` prints the metrics table and writes CSV files and PNG plots.
"""

from ._baselines import budget_matched_sizes, majority_vote
from ._datasets import DatasetSpec, gsm8k_gold, load_problems
from ._grading import Grade, Grader, extract_answer, gold_latex, math_verify_check, normalize_answer
from ._metrics import ArmMetrics, RoundMetrics, compute_metrics, wilson_interval
from ._report import Report, build_report
from ._runner import CROSS_REF_RE, StudyRunSummary, run_study
from ._spec import ArmSpec, GradingSpec, StudySpec, load_study, parse_study
from ._store import NodeOutcome, ResultStore, SampleOutcome

__all__ = [
    "CROSS_REF_RE",
    "ArmMetrics",
    "ArmSpec",
    "DatasetSpec",
    "Grade",
    "Grader",
    "GradingSpec",
    "NodeOutcome",
    "Report",
    "ResultStore",
    "RoundMetrics",
    "SampleOutcome",
    "StudyRunSummary",
    "StudySpec",
    "budget_matched_sizes",
    "build_report",
    "compute_metrics",
    "extract_answer",
    "gold_latex",
    "gsm8k_gold",
    "load_problems",
    "load_study",
    "majority_vote",
    "math_verify_check",
    "normalize_answer",
    "parse_study",
    "run_study",
    "wilson_interval",
]
