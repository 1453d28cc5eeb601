"""Generated datasets: arithmetic with a difficulty knob, so any model can be studied where it
is neither always right nor always wrong.

Contract: ``arithmetic_problems(digits, terms, operations, count, seed)`` returns ``count``
expressions of ``terms`` operands, each a uniformly drawn ``digits``-digit positive integer
(1-9 for one digit), joined by operators drawn uniformly from ``operations`` (``+ - *``). The
answer is the exact integer value under the usual precedence (``*`` before ``+``/``-``, left to
right). Generation uses only ``random.Random(seed)`` (``randint``, ``choice``), so the same
arguments give the same problems on every run and platform. Ids are ``arith-<index>``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

Operation = Literal["+", "-", "*"]
OPERATIONS: tuple[Operation, ...] = ("+", "-", "*")


def evaluate(operands: Sequence[int], operators: Sequence[str]) -> int:
    """The exact value of ``o0 op0 o1 op1 ...``: products first, then sums left to right."""
    if len(operators) != len(operands) - 1:
        raise ValueError("need one operator fewer than operands")
    terms: list[int] = [operands[0]]  # signed summands, each a finished product
    for op, value in zip(operators, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= value
        elif op == "+":
            terms.append(value)
        elif op == "-":
            terms.append(-value)
        else:
            raise ValueError(f"unknown operation {op!r}")
    return sum(terms)


def arithmetic_problems(digits: int, terms: int, operations: Sequence[str], count: int,
                        seed: int) -> list[tuple[str, str, str]]:
    """``count`` (id, expression, exact answer) triples; see the module contract."""
    if digits < 1 or terms < 2 or count < 1 or not operations:
        raise ValueError("need digits >= 1, terms >= 2, count >= 1 and at least one operation")
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10**digits - 1
    ops = list(operations)
    out = []
    for i in range(count):
        operands = [rng.randint(low, high) for _ in range(terms)]
        operators = [rng.choice(ops) for _ in range(terms - 1)]
        text = str(operands[0]) + "".join(f" {op} {v}" for op, v in zip(operators, operands[1:], strict=True))
        out.append((f"arith-{i}", text, str(evaluate(operands, operators))))
    return out
