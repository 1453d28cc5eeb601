"""Do references keep their code blocks? Reads a finished study's traces (any engine) and, for
every node with inputs, checks that each input's message reaches the node's prompt with every
fenced block byte for byte (and that the program the grader takes from it is in the prompt).

    PYTHONPATH=$PWD python benchmarks/code_references.py runs/code
"""

from __future__ import annotations

import argparse
import re

from pacore_agents.execution import extract_code
from pacore_agents.studies import ResultStore

FENCE_RE = re.compile(r"```[^\n]*\n.*?\n[^\n]*```", re.DOTALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    args = parser.parse_args()
    store = ResultStore.open(args.out_dir)
    refs = blocks = kept_blocks = programs = kept_programs = 0
    try:
        for o in store.outcomes():
            if o.kind != "topology":
                continue
            trace = store.trace_json(o.arm, o.problem_id, o.sample) or {}
            nodes = {n["id"]: n for n in trace.get("nodes", [])}
            for node in nodes.values():
                prompt = "\n".join(m["content"] for m in node.get("prompt", []))
                for ref in node.get("inputs", []):
                    message = (nodes.get(ref) or {}).get("message")
                    if not message:
                        continue
                    refs += 1
                    found = FENCE_RE.findall(message)
                    blocks += len(found)
                    kept_blocks += sum(b in prompt for b in found)
                    code = extract_code(message)
                    if code is not None:
                        programs += 1
                        kept_programs += code in prompt
    finally:
        store.close()
    print(f"{refs} references: {kept_blocks}/{blocks} fenced blocks and {kept_programs}/{programs} "
          "extracted programs appear byte for byte in the prompt that cites them")


if __name__ == "__main__":
    main()
