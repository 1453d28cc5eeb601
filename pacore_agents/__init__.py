"""pacore-agents: parallel coordinated reasoning where every trajectory is an agent.

The public names below are imported on first use (``_lazy``): ``import pacore_agents`` is cheap,
and so is a process that needs one small module of it (a grading worker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._answers import AnswerEquivalence, StringEquivalence, extract_answer
    from ._config import PACORE_SAMPLING, FailurePolicy, RunConfig
    from ._engine import (
        Completion,
        Engine,
        EngineInfo,
        EngineStats,
        GenerationRequest,
        RequestMetadata,
        SamplingParams,
        Usage,
    )
    from ._errors import (
        ConfigError,
        EngineError,
        PacoreError,
        PolicyError,
        RunFailedError,
        TopologyError,
    )
    from ._executor import DEFAULT_WINDOW, Executor, executor_for
    from ._function_engine import FunctionEngine
    from ._ids import AgentIndex, NodeId, ProblemId, RoleName, Round
    from ._messages import ChatMessage, Problem
    from ._meter import ExecutorStats
    from ._plan import MergeGroup, NodePlan, Planner
    from ._policies import AdaptiveWidth, ConsensusStop, Policies, Quorum, StopRule
    from ._priority import Priority
    from ._references import OrderPolicy, Reference, derive_seed, order_references
    from ._role_merge import RoleOverride, merge_roles
    from ._roles import PromptContext, Role, RoleBook, builtin_roles, pacore_compact
    from ._run import RunResult, resolve_topology, run, run_sync
    from ._scheduler import RunDriver
    from ._specs import TopologySpec, build, builtin_topologies, load_topology, parse_spec
    from ._topology import (
        Topology,
        all_to_all,
        from_edges,
        from_graph,
        hierarchical,
        ring,
        star,
        validate,
    )
    from ._trace import (
        NodeRecord,
        NodeStatus,
        PolicyEvent,
        RoundSummary,
        RunObserver,
        RunStats,
        RunTrace,
        Truncation,
    )
    from ._wrappers import ConcurrencyLimitedEngine, EngineWrapper, RetryingEngine, RetryPolicy

if not TYPE_CHECKING:  # type checkers see the imports above, not a catch-all __getattr__
    __getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "DEFAULT_WINDOW",
    "PACORE_SAMPLING",
    "AdaptiveWidth",
    "AgentIndex",
    "AnswerEquivalence",
    "ChatMessage",
    "Completion",
    "ConcurrencyLimitedEngine",
    "ConfigError",
    "ConsensusStop",
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineStats",
    "EngineWrapper",
    "Executor",
    "ExecutorStats",
    "FailurePolicy",
    "FunctionEngine",
    "GenerationRequest",
    "MergeGroup",
    "NodeId",
    "NodePlan",
    "NodeRecord",
    "NodeStatus",
    "OrderPolicy",
    "PacoreError",
    "Planner",
    "Policies",
    "PolicyError",
    "PolicyEvent",
    "Priority",
    "Problem",
    "ProblemId",
    "PromptContext",
    "Quorum",
    "Reference",
    "RequestMetadata",
    "RetryPolicy",
    "RetryingEngine",
    "Role",
    "RoleBook",
    "RoleName",
    "RoleOverride",
    "Round",
    "RoundSummary",
    "RunConfig",
    "RunDriver",
    "RunFailedError",
    "RunObserver",
    "RunResult",
    "RunStats",
    "RunTrace",
    "SamplingParams",
    "StopRule",
    "StringEquivalence",
    "Topology",
    "TopologyError",
    "TopologySpec",
    "Truncation",
    "Usage",
    "all_to_all",
    "build",
    "builtin_roles",
    "builtin_topologies",
    "derive_seed",
    "executor_for",
    "extract_answer",
    "from_edges",
    "from_graph",
    "hierarchical",
    "load_topology",
    "merge_roles",
    "order_references",
    "pacore_compact",
    "parse_spec",
    "resolve_topology",
    "ring",
    "run",
    "run_sync",
    "star",
    "validate",
]
