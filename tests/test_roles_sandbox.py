"""User templates render in Jinja2's immutable sandbox; only the shipped synthesis template,
byte for byte, renders outside it (it is trusted and rendered once per node)."""

from __future__ import annotations

import jinja2.sandbox
import pytest

from pacore_agents import ConfigError, NodeId, Problem, PromptContext, Role
from pacore_agents._roles import compile_template, pacore_synthesis_template


def ctx(refs: list[str]) -> PromptContext:
    return PromptContext(Problem.coerce("Q?"), NodeId.of(2, 0), 3, refs)


@pytest.mark.parametrize("template", [
    "{{ ref_responses.__class__.__mro__ }}",
    "{{ original_prompt.__class__.__init__.__globals__ }}",
    "{% set x = ref_responses.append('pwned') %}{{ ref_responses }}",
])
def test_user_templates_cannot_reach_python(template: str) -> None:
    role = Role("evil", template=template)
    with pytest.raises(ConfigError, match="role 'evil': template failed"):
        role.build_prompt(ctx(["a"]))


def test_only_the_shipped_template_skips_the_sandbox() -> None:
    shipped = pacore_synthesis_template()
    assert not isinstance(compile_template(shipped).environment, jinja2.sandbox.SandboxedEnvironment)
    assert isinstance(compile_template(shipped + " ").environment, jinja2.sandbox.SandboxedEnvironment)
    sandboxed = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined,
                                                            autoescape=False).from_string(shipped)
    variables = {"original_prompt": "Q?", "ref_responses": ["a", "", "b {{ x }}"], "round": 2, "agent": 0,
                 "num_rounds": 3}
    assert compile_template(shipped).render(**variables) == sandboxed.render(**variables)
