"""pacore-agents: parallel coordinated reasoning where every trajectory is an agent."""

from ._engine import (
    Completion,
    Engine,
    EngineInfo,
    GenerationRequest,
    RequestMetadata,
    SamplingParams,
    Usage,
)
from ._errors import ConfigError, EngineError, PacoreError, RunFailedError, TopologyError
from ._function_engine import FunctionEngine
from ._ids import AgentIndex, NodeId, ProblemId, RoleName, Round
from ._messages import ChatMessage, Problem
from ._trace import NodeRecord, RoundSummary, RunTrace, Truncation
from ._wrappers import ConcurrencyLimitedEngine, RetryingEngine, RetryPolicy

__all__ = [
    "AgentIndex",
    "ChatMessage",
    "Completion",
    "ConcurrencyLimitedEngine",
    "ConfigError",
    "Engine",
    "EngineError",
    "EngineInfo",
    "FunctionEngine",
    "GenerationRequest",
    "NodeId",
    "NodeRecord",
    "PacoreError",
    "Problem",
    "ProblemId",
    "RequestMetadata",
    "RetryPolicy",
    "RetryingEngine",
    "RoleName",
    "Round",
    "RoundSummary",
    "RunFailedError",
    "RunTrace",
    "SamplingParams",
    "TopologyError",
    "Truncation",
    "Usage",
]
