"""Taking the program out of a model's message, as LiveCodeBench does.

Contract: the text after the last ``</think>`` (the whole text if there is none) is split
into lines; the program is what lies between the last two lines that contain three
backticks (the fence lines: LiveCodeBench tests ``"```" in line``). Fewer than two fence lines: no code
(``None``). LiveCodeBench's ``extract_code`` for its generic/chat models works this way.
"""

from __future__ import annotations


def extract_code(text: str | None) -> str | None:
    """The program in ``text`` (see the module contract), or None."""
    if not text:
        return None
    answer = text.rsplit("</think>", 1)[-1]
    lines = answer.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return None
    code = "\n".join(lines[fences[-2] + 1 : fences[-1]])
    return code if code.strip() else None
