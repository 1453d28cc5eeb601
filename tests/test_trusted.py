"""``Trusted``: models built from trusted values equal validated ones, and refuse what they
cannot build right."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from pacore_agents import ChatMessage, GenerationRequest, NodeId, SamplingParams
from pacore_agents._engine import TRUSTED_REQUEST, TRUSTED_SAMPLING, Completion, Usage
from pacore_agents._trace import NodeRecord, new_record
from pacore_agents._trusted import Trusted


def test_built_models_equal_validated_ones() -> None:
    message = ChatMessage(role="user", content="hi")
    built = TRUSTED_REQUEST.build({"messages": (message,), "n": 3})
    validated = GenerationRequest(messages=(message,), n=3)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert hash(built.sampling) == hash(validated.sampling)
    copied = TRUSTED_SAMPLING.copy(SamplingParams(temperature=0.5), seed=7)
    assert copied == SamplingParams(temperature=0.5, seed=7)


def test_defaults_are_fresh_per_instance() -> None:
    a = Trusted(Completion).build({"content": "x"})
    b = Trusted(Completion).build({"content": "y"})
    assert a.usage == Usage() and a.usage is not b.usage  # a mutable default is copied
    a.notes["k"] = 1
    assert b.notes == {}


def test_records_compare_and_assign_like_validated_ones() -> None:
    record = new_record(NodeId.of(2, 1), "synthesizer", inputs=["r1.a0"], content="c")
    validated = NodeRecord(id="r2.a1", round=2, agent=1, role="synthesizer", inputs=["r1.a0"], content="c")
    assert record == validated
    assert record.model_dump() == validated.model_dump()
    other = new_record(NodeId.of(2, 2), "synthesizer")
    record.status = "failed"  # assignment leaves the shared fields-set unchanged
    assert record.model_fields_set == other.model_fields_set == set(NodeRecord.model_fields)
    assert other.inputs == [] and other.inputs is not new_record(NodeId.of(2, 3), "x").inputs


class _Aliased(BaseModel):
    value: int = Field(alias="v")


class _Private(BaseModel):
    _hidden: int = 0
    value: int = 0


class _PostInit(BaseModel):
    value: int = 0

    def model_post_init(self, context: Any) -> None:
        pass


@pytest.mark.parametrize("cls", [_Aliased, _Private, _PostInit])
def test_models_it_would_build_wrong_are_refused(cls: type[BaseModel]) -> None:
    with pytest.raises(TypeError, match="model_construct"):
        Trusted(cls)
