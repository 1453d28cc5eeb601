"""Which references a node sees, in which order, and how long they may be.

Order policies (``RunConfig.order``):
- ``pacore`` (default, the published order): sort the inputs by the length of their RAW content
  (stable; ties keep graph order, i.e. sorted ``NodeId``), shuffle with a fresh
  ``random.Random(42)``, then drop inputs whose raw content is empty. A failed input counts as
  an empty response here, exactly as in the published pipeline, so the permutation of the
  others is unchanged; unlike it, the failure is recorded in the trace.
- ``graph``: sorted ``NodeId`` order.
- ``seeded``: graph order shuffled by a generator seeded from (run seed, node).
In every policy, empty raw contents and failed inputs are dropped after ordering.

Budget: each message is cut to ``max_message_tokens`` (keeping its end, where the conclusion
is); then, if the engine reports a context window, the longest messages are cut to equal
shares until the prompt plus the generation reserve fits. Every cut is recorded.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from ._ids import NodeId
from ._trace import Truncation

OrderPolicy = Literal["pacore", "graph", "seeded"]
PACORE_SHUFFLE_SEED = 42


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (independent of PYTHONHASHSEED and of order of
    completion)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass(slots=True)
class Reference:
    """One input of a node: the in-neighbour, its raw content (None if it failed), its message."""

    source: NodeId
    raw: str | None
    message: str | None

    @property
    def empty(self) -> bool:
        return not self.raw


def order_references(
    inputs: Sequence[Reference], policy: OrderPolicy, *, seed: int | None, node: NodeId
) -> list[Reference]:
    """The references in prompt order (see the module docstring). ``inputs`` in graph order."""
    items = sorted(inputs, key=lambda ref: ref.source)
    if policy == "pacore":
        items.sort(key=lambda ref: len(ref.raw or ""))
        items = [items[i] for i in _pacore_permutation(len(items))]
    elif policy == "seeded":
        random.Random(derive_seed(seed, "order", node)).shuffle(items)
    elif policy != "graph":
        raise ValueError(f"unknown order policy {policy!r}")
    return [ref for ref in items if not ref.empty and ref.message is not None]


@cache
def _pacore_permutation(n: int) -> tuple[int, ...]:
    """Where a fresh ``random.Random(42).shuffle`` sends n items: it depends on n only."""
    order = list(range(n))
    random.Random(PACORE_SHUFFLE_SEED).shuffle(order)
    return tuple(order)


def _water_fill(lengths: Sequence[int], available: int) -> int:
    """The largest cap c with sum(min(l, c)) <= available."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= available:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_references(
    refs: Sequence[Reference],
    *,
    count: Callable[[str], int],
    truncate: Callable[[str, int], str],
    max_message_tokens: int | None,
    available_tokens: int | None,
) -> tuple[list[str], list[Truncation]]:
    """Messages cut to budget, and the record of each cut.

    ``available_tokens`` is what the references may take together (None = no context limit).
    """
    messages = [ref.message or "" for ref in refs]
    lengths = [count(m) for m in messages]
    originals = list(lengths)
    caps = [max_message_tokens if max_message_tokens is not None else n for n in lengths]
    if available_tokens is not None:
        capped = [min(n, c) for n, c in zip(lengths, caps, strict=True)]
        if sum(capped) > available_tokens:
            cap = _water_fill(capped, max(available_tokens, 0))
            caps = [min(c, cap) for c in caps]
    cuts: list[Truncation] = []
    for i, (ref, n, c) in enumerate(zip(refs, originals, caps, strict=True)):
        if n > c:
            messages[i] = truncate(messages[i], c)
            cuts.append(Truncation(source=str(ref.source), original_tokens=n, kept_tokens=count(messages[i])))
    return messages, cuts
