"""The columns of a study report's CSV files, with their meaning: the one source for the CSV
writers (``_report``) and the reference (``docs/studies.md``)."""

from __future__ import annotations

METRICS_COLUMNS: dict[str, str] = {
    "label": "the row: the arm's name, or `<sc arm>@<matched arm>` / `<sc arm>@<N>` for self-consistency",
    "arm": "the arm's name",
    "kind": "`topology`, `single` or `self-consistency`",
    "vote_size": "self-consistency: N, the trajectories voted over (empty otherwise)",
    "matched_arm": "self-consistency: the topology arm whose budget N matches (see match_on)",
    "match_on": "self-consistency rows with a matched arm: `ttc` (N x one trajectory's tokens ~ its mean "
                "effective TTC) or `cost` (N x one trajectory's declared cost ~ its mean declared cost)",
    "samples": "stored samples (problems x samples per problem)",
    "problems": "distinct problems among them",
    "graded": "samples whose answer math-verify judged (correct or wrong)",
    "correct": "graded samples judged correct",
    "timeouts": "samples whose grading timed out (not counted as wrong)",
    "errors": "samples whose grading failed or whose final node failed",
    "accuracy": "correct / graded",
    "ci_low": "lower end of accuracy's 95% interval (see ci_method)",
    "ci_high": "upper end of accuracy's 95% interval",
    "ci_method": "`wilson` (one graded sample per problem) or `cluster-wilson` (Wilson at the "
                 "effective sample size of samples clustered by problem)",
    "mean_ttc": "mean effective test-time compute per sample: completion tokens summed over every node",
    "emergent": "emergent correctness: emergent_n / emergent_base",
    "emergent_n": "samples whose sink is correct although every input message was wrong",
    "emergent_base": "samples whose sink has >= 1 input and every input was graded wrong",
    "flips": "right-to-wrong flips: flips_n / flips_base",
    "flips_n": "samples whose sink is wrong although most inputs were right",
    "flips_base": "samples where more than half of the sink's inputs were graded correct",
    "cross_check": "share of messages (of nodes with inputs) whose trajectory mentions a reference by number",
    "pass_rate": "code: mean share of tests the final program passed, over graded samples (empty for math)",
    "pass_at": "code: unbiased pass@k over each problem's samples, averaged over problems (JSON)",
}

ROUND_COLUMNS: dict[str, str] = {
    "label": "the metrics row (as in metrics.csv)",
    "round": "round number (1 = independent trajectories; the last is the sink's)",
    "nodes": "nodes of this round over all samples",
    "failed": "of them, nodes that sent no message (left out of the denominators below)",
    "skipped": "nodes a policy never launched (not in nodes, nor in any denominator)",
    "cancelled": "of the failed, stragglers a quorum cancelled (their tokens so far count in tokens)",
    "tokens": "mean completion tokens of the round per sample",
    "accuracy": "correct / graded messages of the round",
    "consensus": "mean over samples of the share of the round's messages that give its majority answer",
    "cross_check": "share of the round's messages (of nodes with inputs) that mention a reference",
}

SAMPLE_COLUMNS: dict[str, str] = {
    "arm": "the arm",
    "problem_id": "the problem",
    "sample": "sample index (0 .. samples-1)",
    "kind": "`topology`, `single` or `self-consistency`",
    "status": "`correct`, `wrong`, `timeout`, `error` or `failed` (the final answer's grade)",
    "answer": "the extracted final answer",
    "effective_ttc": "completion tokens summed over the sample's nodes (self-consistency: all N_max)",
    "nodes": "nodes (trajectories) in the sample",
    "degraded": "a node failed and the run went on without its message",
}

PAIR_COLUMNS: dict[str, str] = {
    "a": "first metrics row (label)",
    "b": "second metrics row (label)",
    "problems": "problems both rows graded (the pairs compared)",
    "samples_per_problem": "graded samples per problem in both rows (empty when it varies)",
    "acc_a": "a's accuracy over those problems (mean of per-problem accuracies)",
    "acc_b": "b's accuracy over those problems",
    "diff": "acc_a - acc_b",
    "diff_low": "lower end of the paired 95% bootstrap interval of diff (resampling problems)",
    "diff_high": "upper end of that interval",
    "a_only": "one sample per problem: problems a got right and b wrong",
    "b_only": "one sample per problem: problems b got right and a wrong",
    "p_value": "one sample per problem: exact McNemar p-value (two-sided binomial on a_only vs b_only)",
}

ROLE_COLUMNS: dict[str, str] = {
    "arm": "a topology arm",
    "role": "a role its nodes use",
    "template": "`problem` (the problem unchanged), `pacore` (the synthesis template) or `sha:` + "
                "8 hex digits of the template's SHA-256",
    "system": "empty, or `sha:` + 8 hex digits of the system prompt's SHA-256",
    "compaction": "`pacore`, `full` or `boxed`",
    "sampling": "the sampling fields the role sets over the arm's (e.g. `temperature=0.3`)",
    "engine": "the named engine its nodes run on (empty: the study's [engine], `default`)",
}

ENGINE_COLUMNS: dict[str, str] = {
    "started_at": "when this `pacore study run` started its units (Unix seconds)",
    "samples_run": "samples it ran and stored",
    "model": "the engine's model (its name, or the embedded default's)",
    "dtype": "the dtype the engine computes in (in-process vLLM; empty where the engine does not say)",
    "window": "the executor's window: sequences it lets into the engine at once",
    "mean_sequences_in_flight": "sequences in flight, time-weighted mean over the time the engine was busy",
    "peak_sequences_in_flight": "the most sequences in flight at once",
    "engine_busy_seconds": "seconds with at least one sequence in flight",
    "orchestration_seconds": "the library's own planning and applying (its overhead), summed over units",
    "requests": "engine requests sent (one per sample on engines that split n)",
    "sequences": "sequences sent",
    "retries": "requests retried after a transient error",
    "prefill_computed_tokens": "prompt tokens the engine computed (its own counter; empty if it reports none)",
    "prefill_cached_tokens": "prompt tokens the engine served from its prefix cache",
}

ENGINE_TOKEN_COLUMNS: dict[str, str] = {
    "arm": "an arm",
    "engine": "an engine of the study (`default` is the [engine] table; baselines run on it)",
    "role": "a role whose nodes ran on that engine",
    "samples": "stored samples of the arm",
    "nodes": "nodes of the role on the engine, over those samples",
    "completion_tokens": "mean completion tokens per sample (their sum over engines and roles is the arm's mean TTC)",
    "prompt_tokens": "mean prompt tokens per sample (each node's prompt, siblings counted each)",
    "cost": "mean declared cost per sample: (prompt + completion tokens) x the engine's cost "
            "(cost_per_1k_tokens / 1000, or 2 x active_params FLOPs); empty without declared costs",
}

COST_COLUMNS: dict[str, str] = {
    "label": "the metrics row (metrics.csv's label; self-consistency: one row per vote size N)",
    "arm": "its arm",
    "kind": "topology, single or self-consistency",
    "vote_size": "self-consistency: N, the trajectories the vote is over (their cost is counted)",
    "matched_arm": "self-consistency: the arm whose budget N matches",
    "match_on": "self-consistency: what N was matched on: `ttc` (effective TTC) or `cost` (declared cost)",
    "accuracy": "the row's accuracy (as in metrics.csv)",
    "ci_low": "lower end of its 95% interval",
    "ci_high": "upper end",
    "mean_ttc": "mean effective TTC per sample (completion tokens)",
    "mean_cost": "mean declared cost per sample: (prompt + completion tokens) x the engine's cost, summed over "
                 "the nodes (SC@N: its first N trajectories)",
    "cost_unit": "`price` (cost_per_1k_tokens) or `flops` (2 x active_params per token)",
}

#: file name -> (what one row is, its columns)
POLICY_COLUMNS: dict[str, str] = {
    "arm": "a topology arm with policies (or a twin)",
    "policies": "its policies, in short (`(topology's)`: those of its topology spec)",
    "samples": "stored samples of the arm",
    "fired": "share of samples where each policy fired (JSON: consensus, width, quorum)",
    "skipped": "nodes never launched, per sample",
    "cancelled": "stragglers cancelled in flight, per sample",
    "cancelled_tokens": "tokens those stragglers had generated, per sample (in mean_ttc)",
    "mean_ttc": "mean effective TTC per sample",
    "twin": "the fixed-width arm it is compared with (`twin` in the spec)",
    "pairs": "(problem, sample) pairs both arms hold",
    "twin_ttc": "the twin's mean effective TTC",
    "saved": "1 - sum(TTC) / sum(twin TTC) over the pairs",
    "saved_low": "lower end of saved's 95% bootstrap interval over problems",
    "saved_high": "upper end of that interval",
    "acc_diff": "accuracy difference, arm - twin, over shared graded problems",
    "acc_low": "lower end of its 95% paired bootstrap interval",
    "acc_high": "upper end of that interval",
}

CSV_FILES: dict[str, tuple[str, dict[str, str]]] = {
    "metrics.csv": ("one row per arm (self-consistency: per vote size)", METRICS_COLUMNS),
    "rounds.csv": ("one row per metrics row and round", ROUND_COLUMNS),
    "samples.csv": ("one row per stored (arm, problem, sample)", SAMPLE_COLUMNS),
    "pairs.csv": ("one row per pair of metrics rows sharing graded problems", PAIR_COLUMNS),
    "roles.csv": ("one row per topology arm and role used", ROLE_COLUMNS),
    "engine.csv": ("one row per `pacore study run` of the out dir: the engine side", ENGINE_COLUMNS),
    "engine_tokens.csv": ("one row per arm, engine and role: tokens (and declared cost) per engine",
                          ENGINE_TOKEN_COLUMNS),
    "cost.csv": ("one row per metrics row, when the engines declare costs: accuracy against declared cost "
                 "(the data of accuracy_vs_cost.png)", COST_COLUMNS),
    "policies.csv": ("one row per arm with policies or a twin: what fired, what it saved", POLICY_COLUMNS),
}
