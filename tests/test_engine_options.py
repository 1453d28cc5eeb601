"""Engine options per kind, their one-line errors, study fingerprints of existing out dirs, and
``unwrap_exception_group``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pacore_agents import ConfigError, EngineError, FunctionEngine
from pacore_agents._errors import unwrap_exception_group
from pacore_agents.engines import (
    FunctionOptions,
    OpenAIOptions,
    VLLMOptions,
    create_engine,
    parse_engine_options,
    results_fingerprint,
)
from pacore_agents.engines._openai import OpenAIEngine
from pacore_agents.engines._vllm import VLLMEngine
from pacore_agents.studies._spec import _v0_compatible
from pacore_agents.studies._store import ResultStore
from pacore_agents.studies._study_file import load_study, parse_study

FIXTURES = Path(__file__).parent / "fixtures"
HANDLER = "tests.fixtures.handlers:answer"


def test_kind_selects_the_model_and_no_kind_is_the_embedded_vllm_engine() -> None:
    assert parse_engine_options({}) == VLLMOptions()
    assert isinstance(parse_engine_options({"kind": "vllm", "block_size": 32}), VLLMOptions)
    openai = parse_engine_options({"kind": "openai", "base_urls": ["http://127.0.0.1:8000/v1"]})
    assert isinstance(openai, OpenAIOptions) and openai.seed_requests is False
    assert openai.max_sequences_per_endpoint == 256
    assert isinstance(parse_engine_options({"kind": "function", "function": HANDLER}), FunctionOptions)
    built = VLLMOptions(model="x")
    assert parse_engine_options(built) is built


@pytest.mark.parametrize(("data", "message"), [
    ({"kind": "nope"}, "unknown engine kind 'nope': use vllm, openai or function"),
    ({"kind": "openai", "max_model_len": 5}, "the openai engine takes no option 'max_model_len' (it takes: model, "
                                             "base_urls, api_key"),
    ({"model_name": "x"}, "the vllm engine takes no option 'model_name'"),
    ({"kind": "function"}, "engine option function: required"),
    ({"kind": "function", "function": "no_colon"}, "write it as MODULE:CALLABLE"),
    ({"kind": "vllm", "tensor_parallel_size": 0}, "engine option tensor_parallel_size: Input should be greater"),
    ({"kind": "openai", "base_urls": ["http://127.0.0.1:port/v1"]}, "the port must be a number"),
    ({"kind": "openai", "base_urls": ["http://u:hunter2@127.0.0.1:99999/v1"]}, "between 1 and 65535"),
    ({"kind": "openai", "base_urls": ["localhost:8000"]}, "write it as http://HOST:PORT/v1"),
])
def test_bad_options_are_one_line_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_engine_options(data)
    text = str(excinfo.value)
    assert message in text and "\n" not in text and "hunter2" not in text


def test_not_a_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        parse_engine_options("vllm")  # type: ignore[arg-type]


def test_create_engine_dispatches_on_the_kind_and_reports_the_window() -> None:
    function = create_engine({"kind": "function", "function": HANDLER, "max_sequences": 7})
    assert isinstance(function, FunctionEngine) and function.info.max_sequences == 7
    assert create_engine(FunctionOptions(kind="function", function=HANDLER)).info.max_sequences is None
    openai = create_engine(OpenAIOptions(kind="openai", base_urls=["http://h:1/v1", "http://h:2/v1"]))
    assert isinstance(openai, OpenAIEngine) and openai.info.max_sequences == 512
    vllm = create_engine({"block_size": 32, "max_sequences": 24})
    assert isinstance(vllm, VLLMEngine) and not vllm.started
    assert vllm.info.max_sequences == 24 and vllm._block_size == 32
    with pytest.raises(ConfigError, match="cannot be imported"):
        create_engine({"kind": "function", "function": "no_such_module_here:f"})
    with pytest.raises(ConfigError, match="at least one base URL"):
        create_engine({"kind": "openai"})


# -- study fingerprints of existing out dirs ------------------------------------------------------

def test_the_fingerprint_of_an_existing_study_is_unchanged() -> None:
    """tests/fixtures/study_gsm8k_v0.fingerprint was printed by the code before per-kind options
    (and before fields added since) for study_gsm8k_v0.toml: existing out dirs hold it."""
    spec = load_study(FIXTURES / "study_gsm8k_v0.toml")
    assert spec.fingerprint() == (FIXTURES / "study_gsm8k_v0.fingerprint").read_text().strip()


def test_engine_fingerprints_keep_the_old_flat_form() -> None:
    cases = json.loads((FIXTURES / "engine_fingerprints_v0.json").read_text())["cases"]
    assert {c["engine"]["kind"] for c in cases} == {"vllm", "openai", "function"}
    for case in cases:
        assert results_fingerprint(parse_engine_options(case["engine"])) == case["fingerprint"], case["engine"]


def test_knobs_that_do_not_change_results_leave_the_fingerprint_alone() -> None:
    base = results_fingerprint(parse_engine_options({"kind": "openai", "base_urls": ["http://h:1/v1"]}))
    tuned = parse_engine_options({"kind": "openai", "base_urls": ["http://h:2/v1"], "api_key": "k",
                                  "request_timeout": 5, "seed_requests": True, "max_sequences_per_endpoint": 8})
    assert results_fingerprint(tuned) == base
    assert results_fingerprint(VLLMOptions(block_size=16, max_sequences=8)) == results_fingerprint(VLLMOptions())
    assert results_fingerprint(VLLMOptions(model="/m")) != results_fingerprint(VLLMOptions())


def test_fields_added_since_v0_enter_the_fingerprint_only_when_set() -> None:
    full = {"dataset": {"name": "gsm8k", "new_knob": 3}, "arms": [{"name": "a", "new_knob": 1}]}
    assert _v0_compatible(full, {"dataset": {"name": "gsm8k"}, "arms": [{"name": "a"}]}, "") == {
        "dataset": {"name": "gsm8k"}, "arms": [{"name": "a"}]}
    sparse = {"dataset": {"name": "gsm8k", "new_knob": 3}, "arms": [{"name": "a", "new_knob": 1}]}
    assert _v0_compatible(full, sparse, "") == full


def test_an_out_dir_written_before_per_kind_options_opens(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    conn = sqlite3.connect(out / ResultStore.DB_NAME)  # what the old code left: its fingerprint
    conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    conn.execute("INSERT INTO meta VALUES ('fingerprint', ?)",
                 ((FIXTURES / "study_gsm8k_v0.fingerprint").read_text().strip(),))
    conn.commit()
    conn.close()
    spec = load_study(FIXTURES / "study_gsm8k_v0.toml")
    ResultStore.open(out, spec).close()  # no "different spec" error
    text = (FIXTURES / "study_gsm8k_v0.toml").read_text()
    other = parse_study(text.replace('kind = "vllm"', 'kind = "vllm"\nmodel = "/other/model"'))
    with pytest.raises(ConfigError, match=r"differs in: engine\.model"):
        ResultStore.open(out, other)


def test_study_engine_errors_are_one_line() -> None:
    text = (FIXTURES / "study_gsm8k_v0.toml").read_text()
    bad = text.replace('kind = "vllm"', 'kind = "openai"\nmax_model_len = 4096')
    with pytest.raises(ConfigError) as excinfo:
        parse_study(bad, source="s.toml")
    assert str(excinfo.value).startswith("study spec s.toml: engine: the openai engine takes no option "
                                         "'max_model_len'")


# -- unwrap_exception_group -----------------------------------------------------------------------

def test_unwrap_exception_group() -> None:
    leaf = ConfigError("bad model")
    assert unwrap_exception_group(leaf) is leaf
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [leaf])])
    assert unwrap_exception_group(nested) is leaf
    engine_error = EngineError("down")
    mixed = ExceptionGroup("g", [RuntimeError("noise"), ExceptionGroup("i", [engine_error])])
    assert unwrap_exception_group(mixed) is engine_error  # a PacoreError is preferred
    first = KeyError("a")
    assert unwrap_exception_group(BaseExceptionGroup("g", [first, KeyboardInterrupt()])) is first


def test_server_priority_reaches_the_openai_engine() -> None:
    from pacore_agents.engines import create_engine

    on = create_engine({"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "server_priority": True})
    off = create_engine({"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"]})
    assert on.server_priority is True and off.server_priority is False  # type: ignore[attr-defined]


def test_the_cpu_dtype_choice() -> None:
    """The embedded model computes in float32 whatever the CPU (issue 23: in bf16 on a CPU with
    native bf16 its answers changed and two real-engine tests failed); other models keep bf16
    where the CPU computes it natively; an explicit dtype is never changed."""
    from pacore_agents.engines._vllm_host import cpu_dtype

    for native in (False, True):
        assert cpu_dtype("auto", embedded=True, native_bf16=native) == "float32"
        assert cpu_dtype("bfloat16", embedded=True, native_bf16=native) == "bfloat16"
        assert cpu_dtype("float16", embedded=False, native_bf16=native) == "float16"
    assert cpu_dtype("auto", embedded=False, native_bf16=True) == "auto"
    assert cpu_dtype("auto", embedded=False, native_bf16=False) == "float32"


def test_the_embedded_model_is_known_by_its_manifest(tmp_path: Path) -> None:
    import json

    from pacore_agents.engines._embedded import (
        EMBEDDED_GGUF_SHA256,
        MANIFEST_NAME,
        is_embedded_model_dir,
    )

    assert not is_embedded_model_dir(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"source_sha256": "0" * 64}))
    assert not is_embedded_model_dir(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"source_sha256": EMBEDDED_GGUF_SHA256}))
    assert is_embedded_model_dir(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[not json")
    assert not is_embedded_model_dir(tmp_path)
