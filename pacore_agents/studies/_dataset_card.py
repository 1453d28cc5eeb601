"""The export's dataset card: ``README.md`` with the YAML front matter the Hugging Face hub and
``datasets.load_dataset(OUT, CONFIG)`` read (licence, size category, one config per format with
its data files per split), and a body saying what the rows are and how each trainer reads them.

Contract: the YAML is written by hand with every string JSON-quoted (JSON strings are YAML
double-quoted scalars), so no YAML library is needed and no text can break the front matter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from ._curation import CurationCounts

_USAGE = {
    "verl": "`data.train_files=data/verl/train.parquet data.prompt_key=prompt "
            "custom_reward_function.path=<site-packages>/pacore_agents/studies/_rewards.py "
            "custom_reward_function.name=compute_score`",
    "trl": "`GRPOTrainer(reward_funcs=[pacore_agents.studies.trl_reward], train_dataset=ds)`: the "
           "`ground_truth`, `data_source` and `grading` columns reach the reward as keyword lists",
    "sft": "`SFTTrainer(train_dataset=ds)`: conversational `messages`",
    "dpo": "`DPOTrainer(train_dataset=ds)`: conversational `prompt`/`chosen`/`rejected`",
    "openrlhf": "`--prompt_data data/openrlhf/train.parquet --input_key prompt --label_key label "
                "--apply_chat_template --remote_rm_url <site-packages>/pacore_agents/studies/_rewards.py` "
                "(its `reward_func`)",
    "pacore": "the released `{conversation, responses, ground_truth}` form plus `response_grades`: "
              "redraw M per episode",
}


class ConfigFiles(BaseModel):
    """One config (format) of the export: its files and rows per split."""

    name: str
    files: dict[str, str]
    rows: dict[str, int]


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def size_category(rows: int) -> str:
    """The hub's ``size_categories`` bucket for ``rows`` rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if rows < bound:
            return label
    return "n>1M"


def render_card(*, title: str, license_id: str, configs: Sequence[ConfigFiles], counts: CurationCounts,
                sources: Mapping[str, str], options: Mapping[str, object]) -> str:
    """The README.md text (front matter, then the body)."""
    biggest = max((sum(c.rows.values()) for c in configs), default=0)
    lines = ["---", f"license: {_q(license_id)}", f"pretty_name: {_q(title)}",
             "task_categories:", "- text-generation", "tags:", "- pacore", "- synthesis", "- math",
             "size_categories:", f"- {_q(size_category(biggest))}", "configs:"]
    for config in configs:
        lines += [f"- config_name: {_q(config.name)}", "  data_files:"]
        for split, path in config.files.items():
            lines += [f"  - split: {_q(split)}", f"    path: {_q(path)}"]
    lines += ["---", "", f"# {title}", "",
              "Synthesis episodes of PaCoRe studies (pacore-agents `pacore study export`): each prompt is "
              "the problem plus reference messages, rendered exactly as the model saw it (or drawn anew "
              "from the problem's pool and rendered as a run renders it); the reward is the final "
              "answer's correctness, graded as the studies grade (math-verify on the text after the "
              "last `</think>`).", "", "## Configs", "", "| config | split | rows | file | how to train |",
              "|---|---|---|---|---|"]
    for config in configs:
        for split, path in config.files.items():
            lines.append(f"| {config.name} | {split} | {config.rows[split]} | `{path}` | "
                         f"{_USAGE.get(config.name, '')} |")
    lines += ["", "## Source data", "", "| study folder | dataset (licence) |", "|---|---|"]
    lines += [f"| {folder} | {source} |" for folder, source in sources.items()]
    lines += ["", "## Curation", "", "| step | count |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in counts.model_dump().items()]
    lines += ["", "Options: `" + json.dumps(options, ensure_ascii=False, sort_keys=True) + "`", ""]
    return "\n".join(lines)
