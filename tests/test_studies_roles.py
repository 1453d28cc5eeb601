"""Arm role overrides merge onto the role they name (built-in or topology spec role); the
effective roles of each arm are described (template name or hash, compaction, sampling)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from pacore_agents import ConfigError, FunctionEngine, GenerationRequest
from pacore_agents._roles import pacore_synthesis_template
from pacore_agents.studies import parse_study, run_study
from pacore_agents.studies._spec import describe_role, template_label

BASE = """
[dataset]
name = "gsm8k"
limit = 1
[[arms]]
name = "a"
"""


def _arm(body: str):  # type: ignore[no-untyped-def]
    spec = parse_study(BASE + body)
    arm = spec.arms[0]
    topo = arm.build_topology()
    return arm, topo, arm.build_roles(topo)


def test_sampling_only_override_keeps_the_synthesis_template() -> None:
    arm, topo, roles = _arm('widths = [2]\nroles = { sink = { sampling = { temperature = 0.3 } } }\n')
    sink = roles["sink"]
    assert sink.template == pacore_synthesis_template()
    assert sink.sampling is not None and sink.sampling.temperature == 0.3
    assert sink.compaction == "pacore" and sink.description == "the final synthesis (the answer)"
    used = {n: describe_role(r) for n, r in arm.used_roles(topo).items()}
    assert used == {"explorer": "template=problem compaction=pacore",
                    "sink": "template=pacore compaction=pacore sampling=temperature=0.3"}


def test_override_merges_sampling_field_by_field_and_keeps_spec_roles() -> None:
    _, _, roles = _arm('topology = "critic-ring"\ncompaction = "boxed"\n'
                       'roles = { critic = { sampling = { max_tokens = 7 } }, '
                       'sink = { template = "problem", system = "Be brief." } }\n')
    critic = roles["critic"]
    assert critic.template is not None and critic.template.startswith("{{ original_prompt }}\n\nBelow are answers")
    assert critic.sampling is not None and critic.sampling.max_tokens == 7
    assert critic.compaction == "boxed"  # the arm's compaction applies to every role
    sink = roles["sink"]
    assert sink.template is None and sink.system == "Be brief."
    assert describe_role(sink).startswith("template=problem system=sha:")


def test_named_pacore_template_for_a_new_role() -> None:
    _, _, roles = _arm('widths = [2]\nroles = { judge = { template = "pacore", compaction = "full" } }\n')
    assert roles["judge"].template == pacore_synthesis_template() and roles["judge"].compaction == "full"
    assert template_label("{{ original_prompt }}").startswith("sha:")
    with pytest.raises(ConfigError, match=r"unknown key 'arms\.0\.roles\.sink\.temprature'"):
        parse_study(BASE + 'widths = [2]\nroles = { sink = { temprature = 0.3 } }\n')


def test_run_sends_the_synthesis_prompt_at_the_override_temperature(tmp_path: Path) -> None:
    """End to end: the sink's request carries the references and the overridden temperature."""
    requests: list[GenerationRequest] = []

    def engine(request: GenerationRequest) -> list[str]:
        requests.append(request)
        return ["w \\boxed{4}"] * request.n

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "What is 2+2?", "answer": "4"}) + "\n")
    text = f"""
seeded = false
[engine]
kind = "function"
function = "x:y"
[dataset]
path = "{data}"
[sampling]
temperature = 1.0
[[arms]]
name = "a"
widths = [2]
roles = {{ sink = {{ sampling = {{ temperature = 0.3 }} }} }}
"""
    summary = anyio.run(lambda: run_study(parse_study(text), tmp_path / "out", engine=FunctionEngine(engine)))
    assert summary.failed == []
    (sink,) = [r for r in requests if r.metadata.round == 2]
    assert sink.sampling.temperature == 0.3
    assert "What is 2+2?" in sink.messages[-1].content and sink.messages[-1].content.count("\\boxed{4}") == 2
