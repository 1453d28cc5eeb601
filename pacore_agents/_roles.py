"""Roles: how an agent builds its prompt from (problem, ordered references), how its
trajectory is compacted into a message, and its sampling overrides.

Built-ins reproduce PaCoRe byte for byte: ``explorer`` sends the problem's messages unchanged;
``synthesizer`` and ``sink`` replace the last user message's content with the PaCoRe synthesis
template rendered with ``original_prompt`` and ``ref_responses``. Templates are Jinja2 in an
immutable sandbox with default settings (a template's final newline is dropped), so a template
can read its variables but never touch Python objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._engine import Completion, SamplingParams
from ._errors import ConfigError
from ._ids import NodeId
from ._messages import ChatMessage, Problem

THINK_END = "</think>"
CompactionKind = Literal["pacore", "full", "boxed"]


def pacore_compact(content: str) -> str:
    """PaCoRe's compaction: the content after the last ``</think>``, else the whole content."""
    idx = content.rfind(THINK_END)
    return content if idx < 0 else content[idx + len(THINK_END) :]


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``), or None."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1]
    return None


def boxed_compact(content: str) -> str:
    """Only the final answer: ``\\boxed{...}`` of the PaCoRe message's last balanced box, or
    the PaCoRe message if there is none."""
    text = pacore_compact(content)
    found = last_boxed(text)
    return text if found is None else f"\\boxed{{{found}}}"


def full_compact(content: str) -> str:
    """No compaction: the whole content, reasoning included."""
    return content


COMPACTORS: dict[str, Callable[[str], str]] = {"pacore": pacore_compact, "full": full_compact, "boxed": boxed_compact}

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
#: the same settings without the sandbox, only for the template the package ships (trusted, and
#: rendered once per node: the sandbox's attribute checks are a third of its cost)
_TRUSTED_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


@cache
def pacore_synthesis_template() -> str:
    """The PaCoRe synthesis template, as pinned by the reference (shipped in the package)."""
    path = resources.files("pacore_agents") / "templates" / "pacore_synthesis.jinja"
    text: str = path.read_text(encoding="utf-8")
    return text


@cache
def _compile_shipped(source: str) -> jinja2.Template:
    return _TRUSTED_ENV.from_string(source)


def compile_template(source: str, *, what: str = "template") -> jinja2.Template:
    """Compile a template in the sandbox (the package's own synthesis template, byte for byte,
    outside it); a syntax error becomes a ``ConfigError`` naming it."""
    if source == pacore_synthesis_template():
        return _compile_shipped(source)
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{what}: bad Jinja2 syntax at line {exc.lineno}: {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class PromptContext:
    """What a role sees when it builds a prompt. ``references`` are compacted messages in the
    order they appear in the prompt."""

    problem: Problem
    node: NodeId
    num_rounds: int
    references: Sequence[str]


@dataclass
class Role:
    """A role. Subclass and override ``build_prompt`` / ``compact`` for full control, or set
    ``template`` (Jinja2; variables ``original_prompt``, ``ref_responses``, ``round``, ``agent``,
    ``num_rounds``) to replace the last user message, and ``system`` to prepend a system prompt.

    ``template=None`` sends the problem's messages unchanged (PaCoRe's round 1). ``engine``
    names the engine of the run its nodes go to (``_binding``; None: the run's default).
    """

    name: str
    template: str | None = None
    system: str | None = None
    compaction: CompactionKind = "pacore"
    sampling: SamplingParams | None = None
    description: str = ""
    engine: str | None = None
    _compiled: jinja2.Template | None = field(default=None, init=False, repr=False, compare=False)
    _globals: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.compaction not in COMPACTORS:
            raise ConfigError(f"role {self.name!r}: unknown compaction {self.compaction!r}: use {sorted(COMPACTORS)}")
        if self.template is not None:
            self._compiled = compile_template(self.template, what=f"role {self.name!r} template")
            self._globals = dict(self._compiled.globals)

    def render(self, ctx: PromptContext) -> str:
        """``Template.render`` with the template's globals flattened once (Jinja re-flattens
        its chain of globals on every render: more than the rendering itself here)."""
        template = self._compiled
        assert template is not None
        context = template.new_context({
            **self._globals,
            "original_prompt": ctx.problem.statement,
            "ref_responses": list(ctx.references),
            "round": ctx.node.round,
            "agent": ctx.node.agent,
            "num_rounds": ctx.num_rounds,
        }, shared=True)
        try:
            try:
                return template.environment.concat(template.root_render_func(context))
            except Exception:
                template.environment.handle_exception()
        except jinja2.TemplateError as exc:
            raise ConfigError(f"role {self.name!r}: template failed on node {ctx.node}: {exc}") from exc

    def build_prompt(self, ctx: PromptContext) -> tuple[ChatMessage, ...]:
        """The chat messages this node sends. Must be a pure function of ``ctx`` (it decides the
        n-merge: nodes with equal prompts share one request)."""
        messages = ctx.problem.messages if self._compiled is None else ctx.problem.with_statement(self.render(ctx))
        if self.system is not None:
            messages = (ChatMessage(role="system", content=self.system), *messages)
        return tuple(messages)

    def compact(self, completion: Completion) -> str:
        """The message this node passes on. A separate reasoning field is never passed on."""
        return COMPACTORS[self.compaction](completion.content)


def builtin_roles() -> dict[str, Role]:
    """Fresh instances of the built-in roles."""
    synthesis = pacore_synthesis_template()
    return {
        "explorer": Role("explorer", description="round 1: the problem, unchanged"),
        "synthesizer": Role("synthesizer", template=synthesis,
                            description="PaCoRe synthesis of the previous round's messages"),
        "sink": Role("sink", template=synthesis, description="the final synthesis (the answer)"),
    }


def default_role(node: NodeId, sink: NodeId) -> str:
    """The role of a node with none assigned: explorer in round 1, sink, else synthesizer."""
    if node == sink:
        return "sink"
    return "explorer" if node.round == 1 else "synthesizer"


class RoleBook:
    """Resolves role names to roles: built-ins overlaid with user roles."""

    def __init__(self, roles: Mapping[str, Role] | Sequence[Role] | None = None) -> None:
        self.roles = builtin_roles()
        items = roles.values() if isinstance(roles, Mapping) else (roles or [])
        for role in items:
            if not isinstance(role, Role):
                raise ConfigError(f"{role!r} is not a pacore_agents.Role")
            self.roles[role.name] = role

    def get(self, name: str, node: NodeId) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            raise ConfigError(
                f"unknown role {name!r} on node {node}: known roles are {', '.join(sorted(self.roles))}"
            ) from None
