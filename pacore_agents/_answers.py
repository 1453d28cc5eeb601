"""Answers in messages, and the ONE interface by which policies compare them.

Contract:
- ``extract_answer(text)``: the answer a message states, normalised for votes (the last
  ``\\boxed{...}``; else the text after the last ``####``; else the last number; else None).
  Messages are already compacted (PaCoRe: the text after the last ``</think>``). Studies'
  majority votes and the policies use this one function.
- ``AnswerEquivalence``: ``answer(text)`` gives a message's canonical answer (None: it states
  none, and it counts for no answer); ``equivalent(a, b)`` says whether two canonical answers
  are the same. Both are async: an implementation may check in a process pool (math-verify)
  or run tests (code), never on the event loop. ``StringEquivalence`` (here): equal normalised
  strings. The task's own ones (math-verify, the code test-outcome signature) live with the
  graders in ``pacore_agents.studies`` (``task_equivalence``).
- ``answer_counts``: the classes of equivalent answers among messages, largest first; ties
  keep the class seen first (messages are given in node order, so the result is deterministic).
  An exception raised by an implementation becomes ``PolicyError`` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._errors import PolicyError
from ._roles import last_boxed

_HASHES_RE = re.compile(r"####\s*([^\n]+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(answer: str) -> str:
    """A canonical spelling for votes: no spaces, ``$``, ``\\left``/``\\right``, thin spaces,
    trailing period, thousands separators or ``.0``; ``\\dfrac``/``\\tfrac`` -> ``\\frac``."""
    s = answer.strip().strip("$").strip()
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""),
                     ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\$", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def extract_answer(text: str | None) -> str | None:
    """The predicted answer in ``text``, normalized: the last ``\\boxed{...}``; else the text
    after the last ``####``; else the last number in the text; else None."""
    if not text:
        return None
    found = last_boxed(text)
    if found is None:
        hashes = _HASHES_RE.findall(text)
        found = hashes[-1] if hashes else None
    if found is None:
        numbers = _NUMBER_RE.findall(text)
        found = numbers[-1] if numbers else None
    if found is None:
        return None
    return normalize_answer(found) or None


@runtime_checkable
class AnswerEquivalence(Protocol):
    """How a task compares answers (see the module contract)."""

    name: str

    async def answer(self, text: str | None) -> str | None:
        """The canonical answer ``text`` states, or None."""
        ...

    async def equivalent(self, a: str, b: str) -> bool:
        """Whether two canonical answers are the same."""
        ...


class StringEquivalence:
    """Equal normalised strings (``extract_answer``): the default, exact and cheap."""

    name = "string"

    async def answer(self, text: str | None) -> str | None:
        return extract_answer(text)

    async def equivalent(self, a: str, b: str) -> bool:
        return a == b


@dataclass(frozen=True, slots=True)
class AnswerClass:
    """Equivalent answers: the first one seen, how many, and the index of its first message."""

    answer: str
    count: int
    first: int


async def answer_counts(equivalence: AnswerEquivalence, texts: Sequence[str | None]) -> list[AnswerClass]:
    """The classes of equivalent answers among ``texts`` (node order), largest first; ties: the
    class seen first. Each new answer is compared with the classes' first answers in order
    (equal strings match without a call). Raises ``PolicyError`` if the equivalence fails."""
    reps: list[str] = []
    counts: list[int] = []
    firsts: list[int] = []
    try:
        for i, text in enumerate(texts):
            answer = await equivalence.answer(text)
            if answer is None:
                continue
            for k, rep in enumerate(reps):
                if answer == rep or await equivalence.equivalent(rep, answer):
                    counts[k] += 1
                    break
            else:
                reps.append(answer)
                counts.append(1)
                firsts.append(i)
    except PolicyError:
        raise
    except Exception as exc:
        raise PolicyError(f"the answer equivalence {equivalence.name!r} failed: {type(exc).__name__}: {exc}") from exc
    order = sorted(range(len(reps)), key=lambda k: (-counts[k], k))
    return [AnswerClass(reps[k], counts[k], firsts[k]) for k in order]
