"""Studies on the shared executor: units overlap on one engine, engine figures are recorded,
removed knobs say what to do, and a bad engine leaves the out dir untouched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from pacore_agents import ConfigError, FunctionEngine, GenerationRequest
from pacore_agents.studies import Grade, Grader, parse_study, run_study
from pacore_agents.studies._store import ResultStore


def _data(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"problem": "What is {i}+{i}?", "answer": "{2 * i}", "id": "q{i}"}}\n'
                            for i in range(n)))
    return path


def _spec(tmp_path: Path, extra: str = "", problems: int = 6) -> str:
    return f"""
name = "t"
{extra}
[dataset]
path = "{_data(tmp_path, problems)}"
[engine]
kind = "function"
function = "tests.fixtures.handlers:answer"
[[arms]]
name = "low"
widths = [3]
[[arms]]
name = "single"
baseline = "single"
"""


@pytest.mark.parametrize("key", ["concurrency = 4", "max_in_flight = 64"])
def test_removed_study_keys_say_what_to_do(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=r"(concurrency|max_in_flight) was removed.*max_sequences"):
        parse_study(_spec(tmp_path, key))


def test_units_share_one_window_and_figures_are_saved(tmp_path: Path) -> None:
    live = peak = 0
    units: set[str] = set()

    async def handler(request: GenerationRequest) -> list[str]:
        nonlocal live, peak
        live += request.n
        peak = max(peak, live)
        units.add(request.metadata.unit or "?")
        await anyio.sleep(0.01)
        live -= request.n
        return ["\\boxed{0}"] * request.n

    engine = FunctionEngine(handler, max_sequences=4)
    spec = parse_study(_spec(tmp_path))
    summary = anyio.run(lambda: run_study(spec, tmp_path / "out", engine=engine))
    assert summary.ran == 12 and not summary.failed
    assert peak == 4  # every unit's nodes fill one window, never more
    assert {u.split("|")[1] for u in units} == {"low", "single"}  # every request names its unit
    assert summary.engine["peak_sequences_in_flight"] == 4 and summary.engine["mean_sequences_in_flight"] > 1
    store = ResultStore.open(tmp_path / "out")
    try:
        keys = [k for k in store._conn.execute("SELECT key FROM meta").fetchall() if k[0].startswith("engine_figures")]
        saved = json.loads(store.get_meta(keys[0][0]) or "{}")
    finally:
        store.close()
    assert saved["samples_run"] == 12 and saved["timeline"]


def test_bad_engine_leaves_the_out_dir_untouched(tmp_path: Path) -> None:
    text = _spec(tmp_path).replace("tests.fixtures.handlers:answer", "no_such_module_xyz:answer")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        anyio.run(lambda: run_study(parse_study(text), out))
    assert not out.exists()
    fixed = parse_study(_spec(tmp_path))  # after fixing the typo, the same --out just works
    summary = anyio.run(lambda: run_study(fixed, out))
    assert summary.ran == 12


def test_report_shows_the_engine_side(tmp_path: Path) -> None:
    from rich.console import Console

    from pacore_agents.studies import build_report

    engine = FunctionEngine(lambda r: ["\\boxed{0}"] * r.n, max_sequences=3)
    spec = parse_study(_spec(tmp_path, problems=3))
    anyio.run(lambda: run_study(spec, tmp_path / "out", engine=engine))
    console = Console(record=True, width=160)
    report = build_report(tmp_path / "out", console=console)
    names = {f.name for f in report.files}
    assert {"engine.csv", "sequences_in_flight.png"} <= names
    text = console.export_text()
    assert "engine side" in text and "prefill computed" in text
    rows = (tmp_path / "out" / "report" / "engine.csv").read_text().splitlines()
    assert rows[0].startswith("started_at,samples_run,model,dtype,window") and len(rows) == 2
    cells = rows[1].split(",")
    assert cells[2] == "<lambda>" and cells[4] == "3"  # the engine's model; the window


class _Recording(Grader):
    """Records each text it is asked to grade; ``graded`` is set once round 1's are asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.checked: list[str] = []
        self.batches = 0
        self.graded = anyio.Event()

    def _ask(self, texts: Sequence[str | None]) -> None:
        self.asked.extend(t or "" for t in texts)
        if sum("explorer" in t for t in self.asked) >= 3:
            self.graded.set()

    async def grade(self, gold: str | None, text: str | None) -> Grade:
        self._ask([text])
        return await super().grade(gold, text)

    async def grade_many(self, gold: str | None, texts: Sequence[str | None]) -> list[Grade]:
        self._ask(texts)
        return await super().grade_many(gold, texts)

    def _blocking_check(self, gold: str, prediction: str) -> tuple[str, str | None]:
        self.checked.append(prediction)  # the worker's real check, once per distinct text
        return super()._blocking_check(gold, prediction)

    def _grade_batch_blocking(self, gold: str, texts: list[str]) -> dict[str, Grade]:
        if len(texts) > 1:  # one worker round trip (a single text goes through _blocking_check)
            self.checked.extend(texts)
            self.batches += 1
        return super()._grade_batch_blocking(gold, texts)


def test_nodes_are_graded_as_they_finish_not_after_the_sink(tmp_path: Path) -> None:
    """A unit's explorers are graded while its sink still runs (the sink waits for that here:
    graded only after the run, it would time out), and each text is checked once."""
    grader = _Recording()

    async def handler(request: GenerationRequest) -> list[str]:
        if request.metadata.round == 1:
            return [f"explorer {i}: \\boxed{{0}}" for i in range(request.n)]
        with anyio.fail_after(30):
            await grader.graded.wait()
        return ["sink: \\boxed{0}"] * request.n

    text = _spec(tmp_path, problems=1).replace('[[arms]]\nname = "single"\nbaseline = "single"\n', "")
    summary = anyio.run(lambda: run_study(parse_study(text), tmp_path / "out",
                                          engine=FunctionEngine(handler), grader_factory=lambda: grader))
    assert summary.ran == 1 and not summary.failed
    store = ResultStore.open(tmp_path / "out")
    try:
        outcome = store.outcomes()[0]
    finally:
        store.close()
    assert [nd.status for nd in outcome.nodes] == ["correct"] * 4  # gold 0: every node agrees
    assert sorted(grader.checked) == sorted(set(grader.checked))  # once per text
    assert len(grader.checked) == 4
    assert grader.batches == 1  # round 1's three messages came in one request: one round trip
