"""The rows of each export format, as each trainer reads them, with their Arrow schemas.

- ``verl``: ``{data_source, prompt, ability, reward_model {style: "rule", ground_truth},
  extra_info {split, index, provenance...}}`` (verl's preprocess scripts; verl itself adds
  ``num_turns`` and ``rollout_reward_scores``, so ``extra_info`` never holds them);
- ``trl``: a conversational ``prompt`` plus ``ground_truth``/``data_source``/``grading`` (the
  reward's inputs, passed to reward functions as keyword lists) and the provenance columns;
- ``sft``: ``messages`` (prompt + the stored correct response);
- ``dpo``: ``prompt``/``chosen``/``rejected``: a correct and a wrong stored synthesis of the
  byte-identical prompt (paired in store order, each response used once);
- ``openrlhf``: input key ``prompt`` (chat messages: ``--apply_chat_template``), label key
  ``label`` (the ground truth; for code, ``openrlhf_label``: the tests and grading settings);
- ``pacore``: one row per problem: ``conversation`` (the problem's messages), ``responses``
  (the pool's raw contents), ``response_grades``/``response_ids``, ``ground_truth``.
``grading`` (verl: in ``extra_info``) is the study's grading settings as the rewards read them
(``reward_grading``). Rows are plain Python values; ``SCHEMAS`` gives each format's Arrow
schema (no nulls inferred).
Every format is written as Parquet: ``datasets`` reads one file type per dataset folder, and
verl, TRL and OpenRLHF all read Parquet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pacore_agents._messages import ChatMessage

from ._curation import CuratedProblem
from ._episodes import Episode
from ._rewards import data_source_for, openrlhf_label

Row = dict[str, Any]

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_CHAT = pa.list_(_MESSAGE)
_TEXTS = pa.list_(pa.string())
_PROVENANCE = [("study", pa.string()), ("study_folder", pa.string()), ("arm", pa.string()),
               ("problem_id", pa.string()), ("sample", pa.int64()), ("node", pa.string()),
               ("round", pa.int64()), ("references", _TEXTS), ("reference_grades", _TEXTS),
               ("missing_references", _TEXTS), ("stored_grade", pa.string()), ("draw", pa.int64())]
_REWARD_INPUTS = [("ground_truth", pa.string()), ("data_source", pa.string()), ("grading", pa.string())]

SCHEMAS: dict[str, pa.Schema] = {
    "verl": pa.schema([("data_source", pa.string()), ("prompt", _CHAT), ("ability", pa.string()),
                       ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
                       ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()),
                                                  ("grading", pa.string()), *_PROVENANCE]))]),
    "trl": pa.schema([("prompt", _CHAT), *_REWARD_INPUTS, *_PROVENANCE]),
    "sft": pa.schema([("messages", _CHAT), *_REWARD_INPUTS, *_PROVENANCE]),
    "dpo": pa.schema([("prompt", _CHAT), ("chosen", _CHAT), ("rejected", _CHAT), *_REWARD_INPUTS,
                      ("study", pa.string()), ("study_folder", pa.string()), ("problem_id", pa.string()),
                      ("chosen_id", pa.string()), ("rejected_id", pa.string()),
                      ("references", _TEXTS), ("reference_grades", _TEXTS)]),
    "openrlhf": pa.schema([("prompt", _CHAT), ("label", pa.string()), ("data_source", pa.string()),
                           ("grading", pa.string()), *_PROVENANCE]),
    "pacore": pa.schema([("conversation", _CHAT), ("responses", _TEXTS), ("response_grades", _TEXTS),
                         ("response_ids", _TEXTS), ("ground_truth", pa.string()), ("data_source", pa.string()),
                         ("grading", pa.string()), ("study", pa.string()), ("study_folder", pa.string()),
                         ("problem_id", pa.string())]),
}


def _chat(messages: tuple[ChatMessage, ...] | list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _source(item: CuratedProblem) -> str:
    return data_source_for(item.study.domain, item.study.dataset)


def _gold(item: CuratedProblem) -> str:
    return str(item.material.problem.answer or "")


def _reward_inputs(item: CuratedProblem) -> Row:
    return {"ground_truth": _gold(item), "data_source": _source(item), "grading": item.study.grading}


def provenance(item: CuratedProblem, ep: Episode) -> Row:
    return {"study": item.study.name, "study_folder": item.study.folder, "arm": ep.arm,
            "problem_id": ep.problem_id, "sample": ep.sample, "node": ep.node, "round": ep.round,
            "references": list(ep.references), "reference_grades": list(ep.reference_grades),
            "missing_references": list(ep.missing_references), "stored_grade": ep.status, "draw": ep.draw}


def _prompts(item: CuratedProblem) -> list[Episode]:
    """The RL prompts of a problem: the stored episodes, then the fresh draws."""
    return [*item.episodes, *item.drawn]


def verl_rows(item: CuratedProblem, split: str) -> list[Row]:
    return [{"data_source": _source(item), "prompt": _chat(ep.prompt), "ability": item.study.domain,
             "reward_model": {"style": "rule", "ground_truth": _gold(item)},
             "extra_info": {"split": split, "index": 0, "grading": item.study.grading, **provenance(item, ep)}}
            for ep in _prompts(item)]


def trl_rows(item: CuratedProblem, split: str) -> list[Row]:
    return [{"prompt": _chat(ep.prompt), **_reward_inputs(item), **provenance(item, ep)} for ep in _prompts(item)]


def openrlhf_rows(item: CuratedProblem, split: str) -> list[Row]:
    label = openrlhf_label(_source(item), _gold(item), item.study.grading)
    return [{"prompt": _chat(ep.prompt), "label": label, "data_source": _source(item),
             "grading": item.study.grading, **provenance(item, ep)} for ep in _prompts(item)]


def sft_rows(item: CuratedProblem, split: str) -> list[Row]:
    return [{"messages": [*_chat(ep.prompt), *_answer(ep.response or "")], **_reward_inputs(item),
             **provenance(item, ep)}
            for ep in item.episodes if ep.status == "correct"]


def dpo_rows(item: CuratedProblem, split: str) -> list[Row]:
    groups: dict[tuple[ChatMessage, ...], tuple[list[Episode], list[Episode]]] = {}
    for ep in item.episodes:
        right, wrong = groups.setdefault(ep.prompt, ([], []))
        if ep.status == "correct":
            right.append(ep)
        elif ep.status == "wrong":
            wrong.append(ep)
    rows = []
    for prompt, (right, wrong) in groups.items():
        for good, bad in zip(right, wrong, strict=False):
            rows.append({"prompt": _chat(prompt), "chosen": _answer(good.response or ""),
                         "rejected": _answer(bad.response or ""), **_reward_inputs(item), "study": item.study.name,
                         "study_folder": item.study.folder, "problem_id": good.problem_id,
                         "chosen_id": f"{good.arm}/s{good.sample}/{good.node}",
                         "rejected_id": f"{bad.arm}/s{bad.sample}/{bad.node}",
                         "references": list(good.references), "reference_grades": list(good.reference_grades)})
    return rows


def pacore_rows(item: CuratedProblem, split: str) -> list[Row]:
    pool = item.material.pool
    return [{"conversation": _chat(item.material.problem.messages), "responses": [r.content for r in pool],
             "response_grades": [r.status for r in pool], "response_ids": [r.id for r in pool],
             "ground_truth": _gold(item), "data_source": _source(item), "grading": item.study.grading,
             "study": item.study.name, "study_folder": item.study.folder, "problem_id": str(item.material.problem.id)}] if pool else []


#: one builder per format of ``_export.KNOWN_FORMATS`` (a test checks they match)
BUILDERS: dict[str, Callable[[CuratedProblem, str], list[Row]]] = {
    "verl": verl_rows, "trl": trl_rows, "sft": sft_rows, "dpo": dpo_rows, "openrlhf": openrlhf_rows,
    "pacore": pacore_rows}
